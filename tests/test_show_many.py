"""``statmap show`` over many files of one program: the same answers and text as file by file.

``read_snapshots`` keeps each reader open until the next file is read, so
files with the same metadata share its parsed records; ``render_text``
labels each distinct record once and escapes each piece once (issue 12:
``statmap show`` time). These tests hold the results to what reading every
file on its own and the plain formatting give.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import pytest

import statmap
from statmap.discover import statmap_files
from statmap.errors import FormatError
from statmap.reader import TYPE_NAMES, Series, Snapshot
from statmap.render import describe, format_value, printable, read_snapshots, render_text, series_label

HOSTILE = "evil\x1b[2J\u202esvg.exe\n"  # a terminal escape, a bidi override, a newline


@pytest.fixture
def many(statdir: str) -> Iterator[str]:
    pubs = []
    for n in range(4):  # one program's workers: the same metadata, different values
        pub = statmap.Publisher("web", statdir)
        requests = pub.counter("requests", "Requests", labels=("code", "path"))
        for code in ("200", "404", "500"):
            requests.labels(code, "/x").inc(n + int(code) // 100)
        requests.labels("200", HOSTILE).inc()
        pub.gauge("temperature", "Heat", unit="celsius").set(20.5 + n)
        pub.histogram("latency", "Latency", buckets=(0.1, 1.0), unit="seconds").observe(0.05 * (n + 1))
        pub.text("last", "Last path").set(HOSTILE)
        pubs.append(pub)
    other = statmap.Publisher("batch", statdir)  # another program between them in the listing
    other.counter("jobs", "Jobs").inc(7)
    pubs.append(other)
    with open(os.path.join(statdir, "web.1.00000000.statmap"), "wb") as f:
        f.write(b"garbage!" * 64)
    yield statdir
    for pub in pubs:
        pub.close()


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _alone(path: str) -> Snapshot:
    with statmap.open(path) as reader:
        return reader.snapshot()


def test_snapshots_read_together_equal_files_read_alone(many: str) -> None:
    paths = statmap_files(many)
    before = _fds()
    snapshots, errors = read_snapshots(paths)
    assert _fds() == before  # every reader closed
    assert [e.path for e in errors] == [os.path.join(many, "web.1.00000000.statmap")]
    assert len(snapshots) == len(paths) - 1 == 5
    for snap in snapshots:
        alone = _alone(snap.path)
        got = [(s.name, s.type, s.labels, s.unit, s.value) for s in snap.series]
        assert got == [(s.name, s.type, s.labels, s.unit, s.value) for s in alone.series]


def _plain_render(snapshots: Sequence[Snapshot], errors: Sequence[FormatError]) -> str:
    """The text as formatted before the speed-ups: every line built alone, then escaped whole."""
    lines: list[str] = []
    for snap in snapshots:
        lines.append(describe(snap))
        width = max((len(series_label(s)) for s in snap.series), default=0)
        for s in snap.series:
            unit = f" {s.unit}" if s.unit else ""
            lines.append(f"  {series_label(s):<{width}}  {s.type:<9}  {format_value(s)}{unit}")
        lines.append("")
    for err in errors:
        lines.append(f"corrupt: {err}")
    return "\n".join(printable(line) for line in lines)


def test_render_text_is_the_plain_formatting_byte_for_byte(many: str) -> None:
    snapshots, errors = read_snapshots(statmap_files(many))
    text = render_text(snapshots, errors)
    assert text == _plain_render(snapshots, errors)
    assert "\x1b" not in text and "\u202e" not in text and "\\x1b[2J\\u202esvg.exe\\n" in text


@pytest.mark.parametrize(
    "text",
    ["plain", "tab\there", "\x00\x7f\x9b", "\u061c\u200e\u200f\u2028\u2029\u202a\u202e\u2066\u2069", "é ü 漢字 ✓"],
)
def test_printable_fast_path_agrees_with_the_escaping(text: str) -> None:
    # printable() skips the regular expression for text str.isprintable() accepts: it must never skip
    # a character the expression would escape
    import re

    from statmap import render

    escaped = render._UNSAFE.sub(render._escape, text)
    assert printable(text) == escaped
    assert all(not c.isprintable() for c in re.findall(render._UNSAFE.pattern, "".join(map(chr, range(0x3000)))))


def test_knobs_read_together_equal_files_read_alone(statdir: str) -> None:
    # show's knob lines read every file again (knob_state.read_each): each reader stays open until the
    # next one is read, so the files of one program share their parsed records; the answers are the
    # ones of each file read alone, corrupt and missing files included
    from statmap.knob_state import read_each, read_process
    from statmap.record_table import _decoded

    pubs = []
    for n in range(3):
        pub = statmap.Publisher("tuned", statdir)
        for i in range(20):  # enough records for a template
            pub.counter(f"c{i}", "C").inc(n)
        pub.knob("level", default=n, min=0, max=9)
        pubs.append(pub)
    plain = statmap.Publisher("plain", statdir)
    plain.counter("jobs", "Jobs").inc()
    pubs.append(plain)
    bad = os.path.join(statdir, "tuned.1.00000000.statmap")
    with open(bad, "wb") as f:
        f.write(b"garbage!" * 64)
    try:
        paths = [*statmap_files(statdir), os.path.join(statdir, "gone.2.00000000.statmap")]
        before, entries = _fds(), len(_decoded)
        got = list(read_each(paths))
        assert _fds() == before and len(_decoded) == entries  # every reader closed, the shared cache emptied
        assert [p for p, _, _ in got] == paths
        for path, knobs, error in got:
            if path == bad or path == paths[-1]:  # corrupt, missing: what reading it alone raises
                assert knobs is None and isinstance(error, FormatError) and error.path == path
                with pytest.raises(FormatError):
                    read_process(path)
                continue
            assert error is None
            assert knobs == read_process(path)
        tuned = [k for _, k, _ in got if k is not None]
        assert sorted(k.knobs["level"].typed_value() for k in tuned) == [0, 1, 2]
    finally:
        for pub in pubs:
            pub.close()


def _every_kind(pub: statmap.Publisher, n: int) -> None:
    pub.counter("requests", "Requests", labels=("code",)).labels("200").inc(n)
    pub.counter("cpu", "CPU time", float=True, unit="seconds").inc(1.5 + n)
    pub.gauge("temperature", "Heat", unit="celsius").set(-0.0 if n else float("nan"))
    pub.histogram("latency", "Latency", buckets=(0.1, 1.0), unit="seconds").observe(0.05 * (n + 1))
    pub.summary("payload", "Payload", unit="bytes").observe(100 + n)
    pub.enum("state", "State", states=("starting", "serving")).state("serving" if n else "starting")
    pub.info("build", "Build").info({"version": f"1.{n}"})
    pub.text("last", "Last path").set(f"/p{n}")
    for i in range(10):  # enough records for a template (record_table)
        pub.gauge(f"g{i}", "G").set(i + n / 4)


def _plain_series(reader: statmap.Reader) -> list[Series]:
    """The series as snapshot() built them before: Series(...) per known record, each value by value()."""
    out = []
    for r in reader.records:
        if r.known:
            spec = r.spec
            out.append(Series(spec.name, TYPE_NAMES[spec.mtype], spec.help, spec.unit, dict(spec.labels),
                              reader.value(r), r))  # fmt: skip
    return out


def test_snapshots_are_the_series_as_init_builds_them(statdir: str) -> None:
    # snapshot() builds its Series from a plan per template (record_table): every value word read in
    # one bulk read, the other kinds decoded, the instance dict copied from the record's fields. The
    # result is what Series(...) and value() give, for every kind, for files that match a template, one
    # that grew past it (records of its own after the template's) and one too small for a template.
    pubs = [statmap.Publisher("web", statdir) for _ in range(3)]
    try:
        for n, pub in enumerate(pubs):
            _every_kind(pub, n)
        pubs[2].counter("late", "Added after the others").inc(5)
        small = statmap.Publisher("tiny", statdir)
        pubs.append(small)
        small.counter("jobs", "Jobs").inc(3)
        snapshots, errors = read_snapshots(statmap_files(statdir))
        assert not errors and len(snapshots) == 4
        for snap in snapshots:
            with statmap.open(snap.path) as reader:
                reader.poll()
                want = _plain_series(reader)
            assert all(type(s) is Series for s in snap.series)
            # every field, in __init__'s order, the values as they print (NaN, -0.0), the records alike
            assert [repr(vars(s)) for s in snap.series] == [repr(vars(w)) for w in want]
            assert [s.to_json() for s in snap.series] == [w.to_json() for w in want]
            with statmap.open(snap.path) as reader:
                alone = reader.snapshot()  # no memo shared: the same answers
            assert repr([(s.name, s.labels, s.value) for s in alone.series]) == repr(
                [(s.name, s.labels, s.value) for s in snap.series]
            )
        late = [s for snap in snapshots for s in snap.series if s.name == "late"]
        assert [s.value for s in late] == [5]
    finally:
        for pub in pubs:
            pub.close()


@pytest.mark.parametrize(
    "label,text",
    [
        ("\x1b[2J", "a\nb"),  # ASCII: the bytes check must see a control
        ("a\nb", "ok"),  # ASCII: ... and a newline inside a line (printable() writes it as \n)
        ("x", "tab\there"),
        ("x", "ok"),  # nothing to escape
        ("ü", "é\u202e"),  # not ASCII: str.isprintable's check
        ("x", "\x7f"),
        ("x", "\x9b"),  # a C1 control, not ASCII
    ],
)
def test_render_text_escapes_labels_and_values_like_the_plain_formatting(statdir: str, label: str, text: str) -> None:
    pub = statmap.Publisher("esc", statdir)
    try:
        pub.gauge("heat", "Heat", unit="celsius", labels=("where",)).labels(label).set(1.5)
        pub.text("last", "Last").set(text)
        snapshots, errors = read_snapshots(statmap_files(statdir))
        assert render_text(snapshots, errors) == _plain_render(snapshots, errors)
    finally:
        pub.close()


@pytest.mark.parametrize("note", ["python3 app.py\n--fake-line", "tab\there", "esc\x1b[2J", "plain note"])
def test_render_text_escapes_a_newline_inside_a_note(statdir: str, note: str) -> None:
    # the notes under a file's line (--process-metrics) come from outside the file: a newline in one
    # is written as \n (printable), never a line of its own, also on render_text's one-scan check
    pub = statmap.Publisher("esc", statdir)
    try:
        pub.counter("jobs", "Jobs").inc()
        snapshots, errors = read_snapshots(statmap_files(statdir))
        text = render_text(snapshots, errors, {snapshots[0].path: note})
        lines = text.split("\n")
        assert lines[1] == "  " + printable(note)
        assert len(lines) == 4  # the file, the note, its series, the blank line after it
    finally:
        pub.close()
