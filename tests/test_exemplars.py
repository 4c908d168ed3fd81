"""Exemplars (format 1.2, docs/format.md section 15): stored per counter and per histogram bucket, latched,
merged across processes by recency, exposed in OpenMetrics only; both cell backends write the same bytes."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

import statmap
from statmap import _layout as L
from statmap import cells, exemplar_read, expose
from statmap.collect import collect
from tests.conftest import run_python

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def _exemplar_records(path: str) -> list[L.Record]:
    with statmap.open(path) as reader:
        reader.snapshot()
        return [r for r in reader.records if r.spec.mtype == L.EXEMPLAR]


def test_counter_and_bucket_exemplars_in_openmetrics_only(statdir: str) -> None:
    pub = statmap.Publisher("ex", statdir)
    requests = pub.counter("requests", "Requests", labels=("route",))
    latency = pub.histogram("latency", "Latency", unit="seconds", buckets=(0.1, 1.0))
    plain = pub.counter("plain", "No exemplar")
    requests.labels("/a").inc(exemplar={"trace_id": TRACE})
    requests.labels("/a").inc(2, exemplar={"trace_id": "second"})  # the latest replaces the first
    requests.labels("/b").inc()
    latency.observe(0.5, exemplar={"trace_id": "t-half"})
    latency.observe(3.0, exemplar={"trace_id": "t-big", "span_id": "s1"})
    latency.observe(0.05)
    plain.inc()
    # the updates themselves count as without an exemplar
    assert requests.labels("/a").get() == 3
    assert latency.get() == (3, 3.55, (1, 1, 1))
    # one record per counter series and per bucket that got an exemplar
    records = _exemplar_records(pub.path)
    assert sorted((r.spec.name, r.spec.labels, r.spec.bounds) for r in records) == [
        ("latency", (), (1.0,)),
        ("latency", (), (float("inf"),)),
        ("requests", (("route", "/a"),), ()),
    ]
    text = expose.openmetrics(collect(statdir))
    lines = {line.split(" ", 1)[0]: line for line in text.splitlines()}
    assert lines['requests_total{route="/a"}'].startswith('requests_total{route="/a"} 3 # {trace_id="second"} 2.0 ')
    assert " # " not in lines['requests_total{route="/b"}']
    assert lines['latency_seconds_bucket{le="1.0"}'].startswith(
        'latency_seconds_bucket{le="1.0"} 2 # {trace_id="t-half"} 0.5 '
    )
    assert lines['latency_seconds_bucket{le="+Inf"}'].startswith(
        'latency_seconds_bucket{le="+Inf"} 3 # {trace_id="t-big",span_id="s1"} 3.0 '
    )
    assert " # " not in lines['latency_seconds_bucket{le="0.1"}'] and " # " not in lines["plain_total"]
    # the timestamp is the time of the update, in seconds with nanoseconds
    stamp = float(lines['requests_total{route="/a"}'].rsplit(" ", 1)[1])
    assert abs(stamp - time.time()) < 600
    # the Prometheus text format has no exemplars
    assert "trace_id" not in expose.prometheus(collect(statdir))
    pub.remove()


def test_exemplar_arguments_are_checked(statdir: str) -> None:
    pub = statmap.Publisher("ex", statdir)
    c = pub.counter("c", "C")
    f = pub.counter("f", "F", float=True)
    h = pub.histogram("h", "H", buckets=(1.0,))
    g = pub.gauge("g", "G")
    with pytest.raises(ValueError, match="128"):
        c.inc(exemplar={"trace_id": "x" * 121})  # 8 + 121 characters
    c.inc(exemplar={"trace_id": "é" * 120})  # 128 characters, 248 bytes: allowed
    with pytest.raises(ValueError, match="label name"):
        c.inc(exemplar={"1bad": "x"})
    with pytest.raises(TypeError, match="mapping"):
        h.observe(1.0, exemplar="trace")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        g.inc(1, exemplar={"trace_id": "x"})  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        c.inc(1, n=2)
    with pytest.raises(ValueError, match="negative"):
        c.inc(-1, exemplar={"trace_id": "x"})
    # keywords, defaults and None all work as without an exemplar
    c.inc(n=2, exemplar=None)
    f.inc(exemplar={"trace_id": "f"})
    f.inc(n=0.5, exemplar={"trace_id": "g"})
    h.observe(value=2.0, exemplar={"trace_id": "h"})
    # a refused exemplar is refused after its update: the event is counted, not lost (two refused for c, one for h)
    assert (c.get(), f.get(), h.get()[0]) == (5, 1.5, 2)
    found = collect(statdir).exemplars
    assert found[("ex", "f", (), None)].value == 0.5
    assert found[("ex", "h", (), float("inf"))].labels == (("trace_id", "h"),)
    assert found[("ex", "c", (), None)].labels == (("trace_id", "é" * 120),)
    pub.remove()


WRITER = """
import sys, statmap
from statmap import exemplars
exemplars._clock = lambda: int(sys.argv[3])
pub = statmap.Publisher(sys.argv[2], sys.argv[1])
c = pub.counter("jobs", "Jobs", labels=("queue",))
h = pub.histogram("wait", "Wait", buckets=(1.0, 10.0))
c.labels("q").inc(exemplar={"trace_id": sys.argv[4]})
h.observe(5.0, exemplar={"trace_id": sys.argv[4]})
print(pub.path)
"""


def test_merged_across_processes_by_recency(statdir: str) -> None:
    """Two real processes of one program: the exemplar with the later timestamp wins, whichever file it is in."""
    newer = run_python(WRITER, statdir, "merge", str(2_000_000_000_000_000_000), "from-newer").stdout.strip()
    older = run_python(WRITER, statdir, "merge", str(1_900_000_000_000_000_000), "from-older").stdout.strip()
    assert newer != older and os.path.exists(newer) and os.path.exists(older)
    collection = collect(statdir)
    assert collection.value("jobs", {"queue": "q"}) == 2
    for key in (("merge", "jobs", (("queue", "q"),), None), ("merge", "wait", (), 10.0)):
        got = collection.exemplars[key]
        assert got.labels == (("trace_id", "from-newer"),) and got.time_ns == 2_000_000_000_000_000_000
    text = expose.openmetrics(collection)
    assert 'jobs_total{queue="q"} 2 # {trace_id="from-newer"} 1.0 2000000000.000000000' in text
    assert 'wait_bucket{le="10.0"} 2 # {trace_id="from-newer"} 5.0 2000000000.000000000' in text


BYTES = """
import sys, statmap
from statmap import exemplars
exemplars._clock = lambda: 1_767_225_600_123_456_789
pub = statmap.Publisher("same", sys.argv[1])
c = pub.counter("c", "C", float=True)
h = pub.histogram("h", "H", buckets=(0.5,))
c.inc(0.25, exemplar={"trace_id": "abc", "span_id": "d\\u00e9f"})
h.observe(0.1, exemplar={"trace_id": "a" * 100})
h.observe(0.2, exemplar={"trace_id": "b"})
h.observe(9.0, exemplar={"trace_id": "c"})
print(statmap.backend, pub.path)
"""


@pytest.mark.once  # it runs both backends itself
def test_both_backends_write_byte_identical_exemplar_records(tmp_path: os.PathLike[str]) -> None:
    """The C and the pure-Python cells write the same exemplar record bytes (value area included)."""
    out = {}
    for pure in ("0", "1"):
        d = os.path.join(tmp_path, f"d{pure}")
        os.mkdir(d, 0o700)
        env = {**os.environ, "STATMAP_PURE": pure}
        proc = subprocess.run([sys.executable, "-c", BYTES, d], env=env, text=True, capture_output=True, check=True)
        backend, path = proc.stdout.split()
        with open(path, "rb") as f:
            data = f.read()
        out[backend] = [data[r.offset : r.offset + r.size] for r in _exemplar_records(path)]
    assert set(out) == {"c", "python"}
    assert len(out["c"]) == 3 and out["c"] == out["python"]


TORN_WRITER = """
import sys, statmap
pub = statmap.Publisher("torn", sys.argv[1])
c = pub.counter("c", "C")
c.inc(exemplar={"trace_id": "a" * 100})
print(pub.path, flush=True)
i = 0
while True:  # two exemplars of different lengths, each with its own value
    i += 1
    if i % 2:
        c.inc(1, exemplar={"trace_id": "a" * 100})
    else:
        c.inc(2, exemplar={"trace_id": "b", "span_id": "b" * 7})
"""


def test_a_reader_never_sees_a_torn_exemplar(statdir: str) -> None:
    """A writer process rewrites the exemplar as fast as it can; every read is one of the two it writes."""
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, "-c", TORN_WRITER, statdir], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        path = proc.stdout.readline().strip()
        (record,) = _exemplar_records(path)
        good = {
            (1.0, (("trace_id", "a" * 100),)),
            (2.0, (("trace_id", "b"), ("span_id", "b" * 7))),
        }
        seen = set()
        with statmap.open(path) as reader:
            reader.snapshot()  # maps the file
            deadline = time.monotonic() + 1.5
            reads = 0
            while time.monotonic() < deadline:
                copy = reader.read_latch(record, L.text_copy_size(record.spec.capacity))
                assert copy is not None
                got = exemplar_read.decode(L.decode_text(copy, record.spec.capacity) or b"")
                assert got is not None and (got[0], got[2]) in good
                seen.add(got[0])
                reads += 1
        assert reads > 100 and proc.poll() is None
        assert seen == {1.0, 2.0}, "the writer was not seen changing the exemplar"
    finally:
        proc.kill()
        proc.wait()


def test_exemplars_survive_fork_into_the_childs_file(statdir: str) -> None:
    """A forked child writes its exemplars into its own file, as its values."""
    pub = statmap.Publisher("forky", statdir)
    c = pub.counter("c", "C")
    c.inc(exemplar={"trace_id": "parent"})
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            c.inc(exemplar={"trace_id": "child"})
            os._exit(0)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert status == 0
    by_pid = {}
    for name in os.listdir(statdir):
        path = os.path.join(statdir, name)
        with statmap.open(path) as reader:
            snap = reader.snapshot()
            (record,) = [r for r in reader.records if r.spec.mtype == L.EXEMPLAR]
            copy = reader.read_latch(record, L.text_copy_size(record.spec.capacity))
            assert copy is not None
            got = exemplar_read.decode(L.decode_text(copy, record.spec.capacity) or b"")
            assert got is not None
            by_pid[snap.pid] = got[2]
    assert by_pid == {os.getpid(): (("trace_id", "parent"),), pid: (("trace_id", "child"),)}
    pub.remove()


def test_the_backend_in_use_has_the_hook() -> None:
    assert callable(cells.set_exemplar_hook)


def test_after_close_exemplars_are_dropped_and_forgotten(statdir: str) -> None:
    """A closed publisher's updates stay private, its exemplars too; it is not kept alive by the exemplar index."""
    from statmap import exemplars

    pub = statmap.Publisher("closing", statdir)
    c = pub.counter("c", "C")
    h = pub.histogram("h", "H", buckets=(1.0,))
    c.inc(exemplar={"trace_id": "before"})
    assert id(c) in exemplars._series and id(h) in exemplars._series
    pub.close()
    assert id(c) not in exemplars._series and id(h) not in exemplars._series
    c.inc(exemplar={"trace_id": "after"})  # no error, as an update after close
    h.observe(2.0, exemplar={"trace_id": "after"})
    assert c.get() == 2 and h.get()[0] == 1
    (only,) = collect(statdir).exemplars.values()
    assert only.labels == (("trace_id", "before"),)
    pub.remove()


def test_openmetrics_with_exemplars_passes_a_strict_parser(statdir: str) -> None:
    """prometheus_client's OpenMetrics parser (strict, checks exemplars' syntax and 128-character limit)
    reads back every exemplar, escapes and non-ASCII included, and the sample values around them."""
    parser = pytest.importorskip("prometheus_client.openmetrics.parser", reason="needs prometheus_client")
    pub = statmap.Publisher("strict", statdir)
    c = pub.counter("c", "C", labels=("k",))
    h = pub.histogram("h", "H", unit="seconds", buckets=(-1.0, 0.5))
    odd = "back\\slash\nline é"  # (prometheus_client's parser, unlike Prometheus, rejects a \" in an exemplar)
    c.labels("x").inc(5, exemplar={"trace_id": odd})
    c.labels("y").inc(exemplar={"a": "é" * 127})  # 128 characters: the limit
    h.observe(-3.0, exemplar={"trace_id": "neg"})
    h.observe(0.25, exemplar={"trace_id": "mid"})
    h.observe(1e300, exemplar={"trace_id": "huge"})
    families = {f.name: f for f in parser.text_string_to_metric_families(expose.openmetrics(collect(statdir)))}
    got = {
        (s.name, tuple(sorted(s.labels.items()))): (s.value, s.exemplar)
        for fam in families.values()
        for s in fam.samples
    }
    value, ex = got[("c_total", (("k", "x"),))]
    assert value == 5 and ex.labels == {"trace_id": odd} and ex.value == 5.0 and ex.timestamp is not None
    assert got[("c_total", (("k", "y"),))][1].labels == {"a": "é" * 127}
    assert got[("h_seconds_bucket", (("le", "-1.0"),))][1].labels == {"trace_id": "neg"}
    assert got[("h_seconds_bucket", (("le", "0.5"),))][1].value == 0.25
    assert got[("h_seconds_bucket", (("le", "+Inf"),))][1].value == 1e300
    assert all(ex is None for (name, _), (_, ex) in got.items() if not name.endswith(("_total", "_bucket")))
    pub.remove()
