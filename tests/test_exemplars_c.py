"""The C library writes exemplars (format 1.2, docs/format.md section 15) as the Python writer does: for the
same updates at the same times, the same exemplar records (metadata) in the same order with the same text
latch bytes; Python's collection reads back exactly the values, times and labels written; a bad exemplar is
refused after its update is counted; threads creating the records at first use make one per bucket."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

import statmap
from statmap import _layout as L
from statmap import exemplars
from statmap.collect import collect

from .test_interop import CDIR, built_c  # noqa: F401  (fixture)

pytestmark = pytest.mark.external  # builds the C library with make and cc

EXW = CDIR / "build" / "statmap-exemplar-writer"
T0 = 1_767_225_601_500_000_000

# (command, value, Unix ns, label pairs); the command: c requests{route="/a"}, f bytes (float), h latency
STEPS: list[tuple[str, float, int, tuple[tuple[str, str], ...]]] = [
    ("c", 1, T0, (("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736"),)),
    ("h", 0.25, T0 + 1, (("trace_id", "00f067aa0ba902b7"), ("span_id", "b7ad6b7169203331"))),
    ("h", 7.5, T0 + 2, (("trace_id", "é"),)),
    ("f", 0.1, T0 + 3, ()),  # no labels: an exemplar all the same
    ("c", 5, T0 + 4, (("trace_id", "second"),)),  # replaces the first, in the same record
    ("h", 0.05, T0 + 5, (("_a1", ""), ("b", "x" * 124))),  # 128 characters: the limit
    ("h", 1.0, T0 + 6, (("trace_id", "x\ty"[:1] + "€" * 3),)),
    ("h", float("inf"), T0 + 7, (("t", "inf"),)),
    ("f", 1e-300, T0 + 8, (("trace_id", "tiny"),)),
    ("c", 2**53 + 1, T0 + 9, (("trace_id", "big"),)),  # repr of the float it becomes: 9007199254740992.0
]
BAD: list[tuple[str, float, tuple[tuple[str, str], ...]]] = [
    ("c", 3, (("1bad", "x"),)),
    ("c", 3, (("bad-name", "x"),)),
    ("h", 0.5, (("", "x"),)),
    ("h", 0.5, (("trace_id", "x" * 121),)),  # 8 + 121 characters
    ("f", 2.0, (("é", "x"),)),
]


def _line(cmd: str, value: float, when: int, labels: tuple[tuple[str, str], ...]) -> str:
    number = str(int(value)) if cmd == "c" else repr(value)
    return "\t".join([cmd, number, str(when), *(s for pair in labels for s in pair)]) + "\n"


def _c_file(exe: Path, directory: Path, lines: list[str]) -> tuple[list[int], str]:
    proc = subprocess.run(
        [str(exe), str(directory), "cw"], input="".join(lines), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    *codes, path = proc.stdout.split()
    return [int(c) for c in codes], path


def _python_file(directory: Path) -> tuple[list[int], str]:
    codes = []
    with statmap.Publisher("cw", str(directory)) as pub:
        requests = pub.counter("requests", "Requests", labels=("route",)).labels("/a")
        size = pub.counter("bytes", "Bytes", float=True)
        latency = pub.histogram("latency", "Latency", unit="seconds", labels=("route",), buckets=(0.1, 1.0))
        latency = latency.labels("/a")
        saved = exemplars._clock
        try:
            for cmd, value, when, labels in [*STEPS, *((c, v, 0, lab) for c, v, lab in BAD)]:
                exemplars._clock = lambda when=when: when  # type: ignore[misc]
                metric: Any = {"c": requests, "f": size, "h": latency}[cmd]
                update = metric.observe if cmd == "h" else metric.inc
                try:
                    update(int(value) if cmd == "c" else value, exemplar=dict(labels))
                    codes.append(0)
                except ValueError:
                    codes.append(-1)
        finally:
            exemplars._clock = saved
        path = pub.path
    return codes, path


def _exemplar_records(path: str) -> list[tuple[L.RecordSpec, bytes]]:
    data = Path(path).read_bytes()
    with statmap.open(path) as reader:
        reader.snapshot()
        records = [r for r in reader.records if r.spec.mtype == L.EXEMPLAR]
    return [(r.spec, data[r.value_offset : r.value_offset + r.value_size]) for r in records]


def _values(path: str) -> dict[str, Any]:
    with statmap.open(path) as reader:
        return {s.record.spec.name: s.value for s in reader.snapshot().series}


def check_writer(exe: Path, tmp_path: Path) -> None:
    lines = [_line(*step) for step in STEPS] + [_line(c, v, 0, lab) for c, v, lab in BAD]
    c_codes, c_path = _c_file(exe, tmp_path / "c", lines)
    py_codes, py_path = _python_file(tmp_path / "py")
    assert c_codes == py_codes == [0] * len(STEPS) + [-1] * len(BAD)
    c_records, py_records = _exemplar_records(c_path), _exemplar_records(py_path)
    assert len(c_records) == 5  # the counter, the float counter, the three buckets
    assert [spec for spec, _ in c_records] == [spec for spec, _ in py_records]
    assert [area for _, area in c_records] == [area for _, area in py_records]  # latch word and both copies
    # the bad exemplars' updates are counted all the same, as by Python
    assert repr(_values(c_path)) == repr(_values(py_path))
    # Python's collection reads back what was written: the latest per series and bucket
    found = collect(str(tmp_path / "c")).exemplars.items()
    got = {(name, bound): (e.value, e.time_ns, e.labels) for (_p, name, _l, bound), e in found}
    want: dict[tuple[str, float | None], tuple[float, int, tuple[tuple[str, str], ...]]] = {}
    for cmd, value, when, labels in STEPS:
        name = {"c": "requests", "f": "bytes", "h": "latency"}[cmd]
        bound = None if cmd != "h" else next((b for b in (0.1, 1.0) if value <= b), float("inf"))
        want[(name, bound)] = (float(value), when, labels)
    assert got == want


def test_c_writes_the_python_exemplars(built_c: None, tmp_path: Path) -> None:  # noqa: F811
    check_writer(EXW, tmp_path)


def test_c_exemplar_records_made_once_by_racing_threads(built_c: None, tmp_path: Path) -> None:  # noqa: F811
    codes, path = _c_file(EXW, tmp_path, ["t\t4\t3000\n"])
    assert codes == [0]
    records = _exemplar_records(path)
    assert sorted(spec.bounds for spec, _ in records) == [(0.1,), (1.0,), (float("inf"),)]
    assert _values(path)["latency"].count == 12000
    got = collect(str(tmp_path)).exemplars
    assert {e.labels[0][1] for e in got.values()} <= {"t0", "t1", "t2", "t3"} and len(got) == 3


@pytest.mark.slow
@pytest.mark.once
def test_c_exemplar_writer_under_address_and_undefined_sanitizers(built_c: None, tmp_path: Path) -> None:  # noqa: F811
    out = subprocess.run(["make", "asan"], cwd=CDIR, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    exe = CDIR / "build" / "asan" / "statmap-exemplar-writer"
    (tmp_path / "one").mkdir()
    check_writer(exe, tmp_path / "one")
    codes, _path = _c_file(exe, tmp_path / "threads", ["t\t4\t500\n"])
    assert codes == [0]
