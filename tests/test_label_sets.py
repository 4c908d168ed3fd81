"""One label set, one record: signal handlers that create the label sets the
interrupted code is creating, and readers given a file that has duplicates
anyway (written by an older statmap, or by another implementation).
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import statmap
from statmap import _layout as L
from statmap import cells
from statmap.archive import clean
from statmap.collect import collect

from .conftest import run_python

# The handler creates (and updates) the label set the main code is creating
# at that moment, and the next one, so it often lands mid-creation: between
# the family's cache miss and its store, inside the record append, during a
# file growth (capacity 4096 grows often).
SAME_LABEL_SETS = textwrap.dedent(
    """
    import json, signal, sys, statmap
    d, rounds = sys.argv[1], int(sys.argv[2])
    pub = statmap.Publisher("same", d, capacity=4096)
    c = pub.counter("c", "C", labels=("i",), max_series=100_000)
    g = pub.gauge("g", "G", labels=("i",), max_series=100_000)
    h = pub.histogram("h", "H", labels=("i",), buckets=(1.0,), max_series=100_000)
    cur = [0]
    hits = []  # list.append is atomic: handlers can nest inside handlers

    def handler(signum, frame):
        i = cur[0]
        for k in (i, i + 1):
            c.labels(str(k)).inc()
            g.labels(str(k)).set(2.0)
            h.labels(str(k)).observe(2.0)
            hits.append(k)

    signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, 0.0002, 0.0002)
    for i in range(rounds):
        cur[0] = i
        c.labels(str(i)).inc()
        g.labels(str(i)).set(1.0)
        h.labels(str(i)).observe(0.5)
    signal.setitimer(signal.ITIMER_REAL, 0, 0)
    print(json.dumps({"path": pub.path, "hits": hits, "rounds": rounds}))
    """
)


def _export(statdir: str, fmt: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "statmap", "export", "--dir", statdir, "--format", fmt],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _sample_lines(text: str) -> list[str]:
    """The sample lines' names with labels (values left out)."""
    return [line.rsplit(" ", 1)[0] for line in text.splitlines() if line and not line.startswith("#")]


def test_signal_handler_creating_the_same_label_sets(statdir: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = run_python(SAME_LABEL_SETS, statdir, "5000", timeout=300)
    got = json.loads(out.stdout)
    rounds, hits = got["rounds"], collections.Counter(got["hits"])
    assert sum(hits.values()) > 100, "the handler hardly ran: the test proves nothing"
    label_sets = rounds + (rounds in hits)  # the handler may create one beyond the last round
    with statmap.open(got["path"]) as reader:
        reader.poll()
        keys = collections.Counter((r.spec.name, r.spec.labels) for r in reader.records)
        dup = {k: n for k, n in keys.items() if n > 1}
        assert not dup, f"{len(reader.records)} records for {len(keys)} label sets; e.g. {list(dup)[:3]}"
        assert len(reader.records) == 3 * label_sets
        values = {(s.name, s.labels["i"]): s.value for s in reader.snapshot().series}
    lost = 0
    for i in range(label_sets):
        n = hits.get(i, 0)
        main = 1 if i < rounds else 0
        hist, count = values[("h", str(i))], values[("c", str(i))]
        assert hist.buckets[0][1] == main, i  # the main code's updates: never lost
        # A series a handler created while the main code was appending lives in
        # private memory until that append ends; a handler's update in the instant
        # it moves into the file may be lost (docs/reliability.md, not promised).
        assert main <= hist.count <= main + n and main <= count <= main + n, i  # type: ignore[operator]
        lost += main + n - hist.count
        assert values[("g", str(i))] in (1.0, 2.0)
    with capsys.disabled():
        print(f"\n[statmap {statmap.backend}] {sum(hits.values())} handler updates, {lost} histogram updates lost")
    # per-process gauges: one sample per label set, never two with the same labels
    for fmt in ("prometheus", "openmetrics"):
        lines = _sample_lines(_export(statdir, fmt))
        twice = [line for line, n in collections.Counter(lines).items() if n > 1]
        assert not twice, f"{fmt}: duplicate samples, e.g. {twice[:3]}"
        assert sum(1 for line in lines if line.startswith("g{")) == label_sets


# -- readers and a file that has duplicates anyway ---------------------------------

IDENTITY = L.Identity(
    pid=os.getpid(), start_time=0, boot_id=bytes(16), instance_id=bytes(range(16)), created_ns=1,
    publisher="dups", program="test_label_sets",
)  # fmt: skip


def _file_with_duplicates(path: Path) -> None:
    """A closed file in which every label set has two records, written with the format module and the cells."""
    specs = [
        L.RecordSpec(L.MetricType.COUNTER, "c", "C", labels=(("k", "a"),)),
        L.RecordSpec(L.MetricType.COUNTER, "fc", "F", labels=(("k", "a"),), flags=L.FLAG_FLOAT),
        L.RecordSpec(L.MetricType.GAUGE, "g", "G", labels=(("k", "a"),)),
        L.RecordSpec(L.MetricType.GAUGE, "gs", "sum", labels=(("k", "a"),), aggregation=L.Aggregation.SUM),
        L.RecordSpec(L.MetricType.HISTOGRAM, "h", "H", labels=(("k", "a"),), bounds=(1.0,)),
        L.RecordSpec(L.MetricType.SUMMARY, "s", "S", labels=(("k", "a"),)),
        L.RecordSpec(L.MetricType.TEXT, "t", "T", labels=(("k", "a"),), capacity=16),
        L.RecordSpec(L.MetricType.ENUM, "e", "E", labels=(("k", "a"),), extras=("x", "y")),
    ]
    capacity = 8192
    buf = bytearray(capacity)
    buf[: L.HEADER_SIZE] = L.encode_header(IDENTITY, capacity)
    end = L.HEADER_SIZE
    for copy in (1, 2):  # the first record of each label set, then the second
        for spec in specs:
            data, rel = L.encode_record(spec)
            buf[end : end + len(data)] = data
            at = end + rel
            end += len(data)
            if spec.name == "c":
                cells.Counter(buf, at).inc(10 * copy)
            elif spec.name == "fc":
                cells.FloatCounter(buf, at).inc(0.5 * copy)
            elif spec.name in ("g", "gs"):
                cells.Gauge(buf, at).set(float(copy))
            elif spec.name == "h":
                cells.Histogram(buf, at, spec.bounds).observe(0.5 if copy == 1 else 5.0)
            elif spec.name == "s":
                cells.Summary(buf, at).observe(float(copy))
            elif spec.name == "t":
                cells.Text(buf, at, spec.capacity).set(f"copy {copy}")
            else:
                cells.Enum(buf, at, len(spec.extras))._set_index(copy - 1)
    cells.store_u64(buf, L.OFF_END, end)
    cells.store_u64(buf, L.OFF_CLOSED_NS, 2)
    cells.store_u64(buf, L.OFF_STATE, L.State.CLOSED)
    path.write_bytes(bytes(buf))
    path.chmod(0o600)


def test_reader_of_one_file_reports_duplicate_records_as_they_are(statdir: str) -> None:
    """One file's reader lists every record (as the C and Rust readers do); aggregation merges them."""
    path = Path(statdir) / "dups.1.00010203.statmap"
    _file_with_duplicates(path)
    with statmap.open(path) as reader:
        snap = reader.snapshot()
    assert len(snap.series) == 16
    assert [s.value for s in snap.series if s.name == "c"] == [10, 20]


def test_collector_merges_duplicate_records(statdir: str) -> None:
    _file_with_duplicates(Path(statdir) / "dups.1.00010203.statmap")
    col = collect(statdir)
    assert col.errors == []
    assert col.files[0].series == 8
    values = {}
    for fam in col.families:
        assert len(fam.samples) == 1, (fam.name, fam.samples)  # never two samples with the same labels
        values[fam.name] = fam.samples[0].value
    assert values["c"] == 30 and values["fc"] == 1.5
    assert (values["h"].count, values["h"].buckets) == (2, ((1.0, 1), (float("inf"), 2)))
    assert (values["s"].count, values["s"].sum) == (2, 3.0)
    assert (values["g"], values["gs"], values["t"], values["e"]) == (2.0, 2.0, "copy 2", "y")
    # the exporters see the same: one sample line per label set
    for fmt in ("prometheus", "openmetrics"):
        lines = _sample_lines(_export(statdir, fmt))
        assert len(lines) == len(set(lines)), lines
    # folding the (closed) file into the archive keeps both records' counts
    report = clean(statdir)
    assert report.folded and not report.errors
    col = collect(statdir)
    assert (col.value("c", {"k": "a"}), col.value("fc", {"k": "a"})) == (30, 1.5)
    assert col.value("h", {"k": "a"}).count == 2 and col.value("s", {"k": "a"}).sum == 3.0


def test_the_same_record_twice_in_a_row_is_one_spec(statdir: str) -> None:
    """Duplicates next to each other (so that one run of the C record decoder builds both): the reader
    shares one decoded spec between them, as it does for duplicates apart, and the collector adds them up."""
    spec = L.RecordSpec(L.MetricType.COUNTER, "c", "C", labels=(("k", "a"),))
    data, rel = L.encode_record(spec)
    capacity = 4096
    buf = bytearray(capacity)
    buf[: L.HEADER_SIZE] = L.encode_header(IDENTITY, capacity)
    end = L.HEADER_SIZE
    for copy in (1, 2, 3):
        buf[end : end + len(data)] = data
        cells.Counter(buf, end + rel).inc(copy)
        end += len(data)
    cells.store_u64(buf, L.OFF_END, end)
    cells.store_u64(buf, L.OFF_CLOSED_NS, 2)
    cells.store_u64(buf, L.OFF_STATE, L.State.CLOSED)
    path = Path(statdir) / "dups.1.00010203.statmap"
    path.write_bytes(bytes(buf))
    with statmap.open(path) as reader:
        reader.poll()
        records = reader.records
        assert len(records) == 3 and records[0].spec is records[1].spec is records[2].spec
        assert [r.offset for r in records] == [L.HEADER_SIZE + i * len(data) for i in range(3)]
        assert [s.value for s in reader.snapshot().series] == [1, 2, 3]
    col = collect(statdir)
    assert col.errors == [] and col.value("c", {"k": "a"}) == 6
