"""Fuzzing knobs: crafted control files against the program, crafted knob records against readers.

The program's side: whatever bytes the control file holds, the program
never raises, and every knob's value stays of its type and inside its
declaration (a refused request keeps the value it had). The reader's side:
a mutated knob file gives a FormatError or knob views whose shown values
are inside their declaration, never a crash.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import statmap
from statmap import _layout as L
from statmap import control_file, knobs
from statmap.errors import FormatError
from statmap.knob_state import read_process
from statmap.knob_values import Control, Entry, canonical, encode_control, parse_value

from .conftest import SCALE, VECTORS

EXAMPLES = max(30, int(120 * SCALE))
# Refused control files are reported (also by the watcher thread, in the background): expected here.
pytestmark = pytest.mark.filterwarnings("ignore:statmap. control file:RuntimeWarning")

KNOB_NAMES = ["flag", "level", "ratio", "mode", "note"]
texts = st.one_of(
    st.sampled_from(["true", "false", "0", "1", "-1", "1e308", "nan", "inf", "debug", "info", "9" * 30, ""]),
    st.text(max_size=40),
)
entries = st.builds(
    Entry,
    knob=st.one_of(st.sampled_from(KNOB_NAMES), st.text(max_size=8)),
    target=st.one_of(st.just(""), st.text(max_size=12)),
    action=st.sampled_from(["set", "reset"]),
    value=texts,
    uid=st.integers(0, 2**32),
    pid=st.integers(0, 2**22),
    when_ns=st.integers(0, 2**63),
)


def _mutate(data: bytes, flips: list[tuple[int, int]], cut: int | None) -> bytes:
    buf = bytearray(data)
    for at, byte in flips:
        if buf:
            buf[at % len(buf)] = byte
    return bytes(buf[:cut] if cut is not None else buf)


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[statmap.LiveKnob], statmap.Publisher]:
    d = tmp_path_factory.mktemp("fuzz") / "statmap"
    d.mkdir(mode=0o700)
    pub = statmap.Publisher("fz", str(d))
    made = [
        pub.knob("flag", default=False),
        pub.knob("level", default=5, min=0, max=10),
        pub.knob("ratio", default=0.5, min=0.0, max=1.0),
        pub.knob("mode", default="info", choices=("debug", "info")),
        pub.knob("note", default="", size=8),
    ]
    return str(d), made, pub


@settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(
    seq=st.integers(0, 2**64),
    items=st.lists(entries, max_size=12),
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4),
    cut=st.one_of(st.none(), st.integers(0, 4000)),
    raw=st.one_of(st.none(), st.binary(max_size=300)),
)
def test_crafted_control_files_never_crash_the_program_nor_leave_the_declaration(
    program: tuple[str, list[statmap.LiveKnob], statmap.Publisher],
    seq: int,
    items: list[Entry],
    flips: list[tuple[int, int]],
    cut: int | None,
    raw: bytes | None,
) -> None:
    directory, made, _pub = program
    data = raw if raw is not None else _mutate(encode_control(Control(seq, tuple(items))).encode(), flips, cut)
    path = control_file.control_path(directory, "fz")
    tmp = path + ".new"
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o600)
    os.rename(tmp, path)
    knobs.check_now()
    for knob in made:
        value = knob.value
        assert type(value) is {"bool": bool, "int": int, "float": float, "str": str}[knob.decl.type]
        text = canonical(knob.decl, value)  # raises if outside the declaration
        assert parse_value(knob.decl, text) == knob.state.value
    got = read_process(next(p for p in statmap.discover.statmap_files(directory) if "/fz." in p))
    assert got is not None
    for view in got.knobs.values():
        assert view.problem is None and view.state is not None
        assert view.typed_value() == next(k.value for k in made if k.name == view.name)


GOLDEN = (VECTORS / "knobs.statmap").read_bytes()
END = L.decode_header(GOLDEN).end  # flips land in the records


@settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(flips=st.lists(st.tuples(st.integers(L.HEADER_SIZE, END - 1), st.integers(0, 255)), min_size=1, max_size=6))
def test_mutated_knob_records_never_crash_a_reader(tmp_path: Path, flips: list[tuple[int, int]]) -> None:
    path = tmp_path / "knobs.statmap"
    path.write_bytes(_mutate(GOLDEN, flips, None))
    try:
        got = read_process(str(path))
    except FormatError:
        return
    for view in got.knobs.values() if got else ():
        if view.decl is not None and view.state is not None:
            value = view.typed_value()
            if value is not None:
                parse_value(view.decl, canonical(view.decl, value))
