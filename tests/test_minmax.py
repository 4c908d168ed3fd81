"""Lifetime min and max of classic histograms and summaries (issue 15; docs/format.md 5.1, since 1.2).

Both cell backends write the same bytes; readers report them, None for files from older writers; the
collector takes the min of mins and the max of maxes across processes, the archive keeps them; JSON,
``show`` and ``export`` carry them.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

import statmap
from statmap import _layout as L
from statmap import _pycells
from statmap.archive import archive_path, clean
from statmap.collect import collect
from statmap.reader import HistogramValue, SummaryValue

from .conftest import VECTORS
from .test_collect import finish

LEGACY = VECTORS / "legacy"


def _c_module() -> ModuleType:
    try:
        from statmap import _cells
    except ImportError:  # pragma: no cover - the C extension is built in CI and here
        pytest.fail("needs the C extension statmap._cells built (python3 setup.py build_ext --inplace)")
    return _cells


def _tail(buf: mmap.mmap, at: int) -> tuple[float, float]:
    lo, hi = memoryview(buf)[at : at + 16].cast("d").tolist()
    return lo, hi


@pytest.mark.parametrize(
    ("bounds", "make"),
    [
        (None, lambda m, b: m.Summary(b, 0)),
        ((1.0, 2.0, 5.0), lambda m, b: m.Histogram(b, 0, (1.0, 2.0, 5.0))),
        ((), lambda m, b: m.Histogram(b, 0, ())),
    ],
    ids=["summary", "histogram", "histogram-no-bounds"],
)
def test_both_backends_write_the_same_min_and_max(bounds: Any, make: Callable[[ModuleType, mmap.mmap], Any]) -> None:
    """Random observations (negatives, infinities, signed zeros): identical bytes, and the tail is the
    exact min and max; the direct and the queued pure paths too."""
    rng = random.Random(15)
    values = [rng.uniform(-50, 50) for _ in range(200)] + [0.0, -0.0, math.inf, -math.inf, 3.0]
    rng.shuffle(values)
    mtype = L.MetricType.SUMMARY if bounds is None else L.MetricType.HISTOGRAM
    size = L.value_size(mtype, len(bounds or ()), 0)
    out = {}
    for name, module in (("c", _c_module()), ("pure", _pycells)):
        buf = mmap.mmap(-1, size + L.EXTREMES_SIZE)
        cell = make(module, buf)
        assert _tail(buf, size) == (0.0, 0.0)  # nothing observed: meaningless zeros
        for v in values[:100]:
            cell.observe(v)
        if name == "pure":  # the queued path (a write under way) lands the same
            cell._free.pop()
            for v in values[100:-1]:
                cell.observe(v)
            cell._free.append(True)
            cell.observe(values[-1])
        else:
            for v in values[100:]:
                cell.observe(v)
        out[name] = bytes(buf)
        assert _tail(buf, size) == (-math.inf, math.inf)
    assert out["c"] == out["pure"]
    # Finite only: the exact extremes
    for module in (_c_module(), _pycells):
        buf = mmap.mmap(-1, size + L.EXTREMES_SIZE)
        cell = make(module, buf)
        finite = [v for v in values if math.isfinite(v)]
        for v in finite:
            cell.observe(v)
        assert _tail(buf, size) == (min(finite), max(finite))


def test_reader_reports_lifetime_min_max(statdir: str) -> None:
    with statmap.Publisher("mm", statdir) as pub:
        lin = pub.histogram("lin", "Linear", buckets=(1, 10))
        log = pub.histogram("log", "Log", buckets=statmap.LogBuckets(0.001, 10.0, 0.05))
        summ = pub.summary("sz", "Size")
        timer = pub.timer("t", "Timer")
        pub.histogram("empty", "Never observed", buckets=(1,))
        for v in (3.0, -2.5, 40.0, 0.5):
            lin.observe(v)
            summ.observe(v)
        for v in (0.002, 0.75, 7.5):
            log.observe(v)
        with timer.time():
            pass
        with statmap.open(pub.path) as reader:
            got = {s.name: s.value for s in reader.snapshot().series}
    assert (got["lin"].min, got["lin"].max) == (-2.5, 40.0)
    assert (got["log"].min, got["log"].max) == (0.002, 7.5) and got["log"].log_buckets
    assert (got["sz"].min, got["sz"].max) == (-2.5, 40.0)
    assert 0 <= got["t"].min == got["t"].max < 5
    assert (got["empty"].min, got["empty"].max) == (None, None)
    # Estimates stay within what was observed: the +Inf bucket no longer answers its lower bound
    assert got["lin"].percentile(1.0) == 40.0 and got["lin"].percentile(0.0) == -2.5
    # Lifetime: an interval's value keeps them
    assert got["lin"].since(HistogramValue.from_counts(1, 3.0, (1.0, 10.0), [0, 1, 0])).max == 40.0


def test_files_from_older_writers_read_without_min_max(tmp_path: Any) -> None:
    """The previous 1.2 writer's vectors (no extremes after the value area): values as before, min/max None;
    a header that says 1.1 makes a reader ignore the padding even when it is there."""
    for name, expect in (("histogram", 6), ("summary", 3)):
        with statmap.open(LEGACY / f"{name}-1.2-no-extremes.statmap") as reader:
            (series,) = reader.snapshot().series
        assert series.value.count == expect and (series.value.min, series.value.max) == (None, None)
        doc = series.value.to_json()
        assert doc["min"] is None and doc["max"] is None
    old = tmp_path / "histogram.statmap"
    shutil.copy(VECTORS / "histogram.statmap", old)
    data = bytearray(old.read_bytes())
    data[L.OFF_VERSION + 2 : L.OFF_VERSION + 4] = (1).to_bytes(2, "little")  # minor 1
    old.write_bytes(bytes(data))
    with statmap.open(old) as reader:
        (series,) = reader.snapshot().series
    assert series.value.count == 6 and series.value.min is None


def test_crossed_or_nan_extremes_read_as_unknown(tmp_path: Any) -> None:
    """What the archive writes when it cannot know them (+inf, -inf), and NaN from a broken writer."""
    path = tmp_path / "histogram.statmap"
    data = bytearray((VECTORS / "histogram.statmap").read_bytes())
    with statmap.open(VECTORS / "histogram.statmap") as reader:
        (series,) = reader.snapshot().series
    rec = series.record
    at = rec.value_offset + rec.value_size
    for pair in ((math.inf, -math.inf), (math.nan, 1.0), (2.0, 1.0)):
        data[at : at + 16] = L.encode_extremes(*pair)
        path.write_bytes(bytes(data))
        with statmap.open(path) as reader:
            (got,) = reader.snapshot().series
        assert got.value.count == 6 and got.value.min is None and got.value.max is None, pair


BODY = """
    h = pub.histogram("latency", "Request latency", unit="seconds", buckets=(0.01, 0.1, 1.0))  # as the vector's
    s = pub.summary("size")
    for v in sys.argv[2].split(","):
        h.observe(float(v))
        s.observe(float(v))
"""


def _worker(statdir: str, values: str, exit: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _script(exit), statdir, values], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return proc


def _script(exit: str) -> str:
    import textwrap

    tail = {"close": "pub.close()", "wait": "sys.stdin.read()"}[exit]
    return textwrap.dedent(
        f"""
        import sys, statmap
        pub = statmap.Publisher("web", sys.argv[1])
        {textwrap.indent(textwrap.dedent(BODY), "        ").strip()}
        print("ready", flush=True)
        {tail}
        """
    )


def test_min_of_mins_and_max_of_maxes_across_processes_and_the_archive(statdir: str) -> None:
    alive = _worker(statdir, "0.5,0.05,7", "wait")
    _worker(statdir, "-3,0.2", "close").wait()
    _worker(statdir, "12.5", "close").wait()
    try:
        c = collect(statdir)
        h, s = c.value("latency"), c.value("size")
        assert isinstance(h, HistogramValue) and isinstance(s, SummaryValue)
        assert (h.count, h.min, h.max) == (6, -3.0, 12.5)
        assert (s.count, s.min, s.max) == (6, -3.0, 12.5)
        report = clean(statdir)  # the two ended processes go into the archive
        assert len(report.folded) == 2
        with statmap.open(archive_path(statdir, "web")) as reader:
            archived = {x.name: x.value for x in reader.snapshot().series}
        assert (archived["latency"].min, archived["latency"].max) == (-3.0, 12.5)
        assert (archived["size"].min, archived["size"].max) == (-3.0, 12.5)
        c = collect(statdir)
        assert (c.value("latency").min, c.value("latency").max) == (-3.0, 12.5)  # type: ignore[union-attr]
        # JSON: export and show
        out = subprocess.run(
            [sys.executable, "-m", "statmap", "export", "--format", "json", "--dir", statdir],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert '"min": -3.0' in out.stdout and '"max": 12.5' in out.stdout
        out = subprocess.run(
            [sys.executable, "-m", "statmap", "show", "--aggregate", "--dir", statdir],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert "min=-3 max=12.5" in out.stdout
    finally:
        finish(alive)


def test_a_process_from_an_older_writer_makes_the_aggregate_unknown(statdir: str) -> None:
    """min and max over processes are unknown when one with observations did not record them."""
    alive = _worker(statdir, "0.5", "wait")
    try:
        legacy = os.path.join(statdir, "web.7.00000000.statmap")
        data = bytearray((VECTORS / "histogram.statmap").read_bytes())
        data[L.OFF_VERSION + 2 : L.OFF_VERSION + 4] = (1).to_bytes(2, "little")  # as a 1.1 writer's
        data[L.OFF_PUBLISHER : L.OFF_PUBLISHER + 9] = b"web\0\0\0\0\0\0"
        with open(legacy, "wb") as f:
            f.write(data)
        c = collect(statdir)
        h = c.value("latency")
        assert isinstance(h, HistogramValue)
        assert h.count == 7 and (h.min, h.max) == (None, None)
        assert json.loads(json.dumps(h.to_json()))["max"] is None
    finally:
        finish(alive)
    # The archive cannot know them either: it stores them crossed, read as unknown
    assert len(clean(statdir).folded) == 2
    with statmap.open(archive_path(statdir, "web")) as reader:
        archived = {x.name: x.value for x in reader.snapshot().series}
    assert archived["latency"].count == 7 and archived["latency"].max is None
    assert (archived["size"].min, archived["size"].max) == (0.5, 0.5)  # only the new writer had a summary


LIVE = """
import sys, statmap
pub = statmap.Publisher("live", sys.argv[1])
h = pub.histogram("h", buckets=(-10.0, 0.0, 10.0))
s = pub.summary("s")
print(pub.path, flush=True)
sys.stdin.readline()
for k in range(1, 400001):  # odd k observed as k, even k as -k: after count c, max >= c - 1, min <= 1 - c
    v = float(k if k % 2 else -k)
    h.observe(v)
    s.observe(v)
print("done", flush=True)
"""


@pytest.mark.parametrize("pure", ["0", "1"])
def test_a_live_writers_min_and_max_cover_every_counted_observation(statdir: str, pure: str) -> None:
    """The writer stores min and max before the latch that counts the observation: a reader that sees
    count c sees max >= the largest odd k <= c and min <= -(the largest even k <= c); never torn or NaN."""
    env = dict(os.environ, STATMAP_PURE=pure)
    proc = subprocess.Popen(
        [sys.executable, "-c", LIVE, statdir], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdin is not None and proc.stdout is not None
    path = proc.stdout.readline().strip()
    reads = 0
    try:
        with statmap.open(path) as reader:
            proc.stdin.write("go\n")
            proc.stdin.flush()
            last = (0.0, 0.0)
            while proc.poll() is None or reads == 0:
                for series in reader.snapshot().series:
                    v = series.value
                    if v is None or v.count == 0:
                        continue
                    c = v.count
                    assert v.min is not None and v.max is not None, (series.name, c)
                    odd, even = c if c % 2 else c - 1, c if c % 2 == 0 else c - 1
                    assert v.max >= odd and (even == 0 or v.min <= -even), (series.name, c, v.min, v.max)
                    if series.name == "s":
                        assert v.min <= last[0] and v.max >= last[1]  # lifetime: never back
                        last = (v.min, v.max)
                    reads += 1
        assert proc.stdout.readline() == "done\n"
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    assert reads > 10
