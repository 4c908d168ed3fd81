"""Process metrics read from /proc by the reader (procstats.py), and the opt-in GC counters (gcstats.py)."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

import statmap
from statmap.collect import Collector, MetricFamily
from statmap.procstats import read_process

# A worker: 3 extra threads, 40 MiB touched, 5 extra descriptors; prints its pid, waits for stdin to close.
WORKER = r"""
import os, sys, threading, statmap
pub = statmap.Publisher("web", sys.argv[1])
pub.counter("requests").inc(7)
stop = threading.Event()
threads = [threading.Thread(target=stop.wait) for _ in range(3)]
for t in threads: t.start()
ballast = bytearray(40 << 20)
for i in range(0, len(ballast), 4096): ballast[i] = 1
fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(5)]
print(os.getpid(), flush=True)
sys.stdin.read()
stop.set()
"""


@pytest.fixture
def workers(statdir: str) -> Iterator[list[subprocess.Popen[str]]]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, statdir], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    for p in procs:
        assert p.stdout is not None
        assert p.stdout.readline().strip() == str(p.pid)
    yield procs
    for p in procs:
        if p.poll() is None:
            assert p.stdin is not None
            p.stdin.close()
            p.wait(timeout=30)


def _families(statdir: str) -> dict[str, MetricFamily]:
    with Collector(statdir, process_metrics=True) as c:
        return {f.name: f for f in c.collect().families}


@pytest.mark.once
def test_process_metrics_per_worker_and_sums(statdir: str, workers: list[subprocess.Popen[str]]) -> None:
    fams = _families(statdir)
    pids = sorted(str(p.pid) for p in workers)

    def per_pid(name: str) -> dict[str, float]:
        fam = fams[name]
        assert fam.publisher == "web"
        return {s.labels["pid"]: s.value for s in fam.samples}

    assert sorted(per_pid("process_threads")) == pids
    assert all(v >= 4 for v in per_pid("process_threads").values())  # main + 3
    assert all(v >= 40 << 20 for v in per_pid("process_resident_memory_bytes").values())
    rss = per_pid("process_resident_memory_bytes")
    assert all(v >= rss[p] for p, v in per_pid("process_virtual_memory_bytes").items())
    assert all(v >= 3 + 5 for v in per_pid("process_open_fds").values())  # stdio + 5 + the statmap file
    assert all(v >= 8 for v in per_pid("process_max_fds").values())
    assert all(v > 0 for v in per_pid("process_cpu_seconds_total").values())
    assert all(abs(v - time.time()) < 300 for v in per_pid("process_start_time_seconds").values())
    assert fams["process_cpu_seconds_total"].type == "counter"
    assert fams["statmap_processes"].samples[0].value == 2
    for total, each in (
        ("statmap_processes_threads", "process_threads"),
        ("statmap_processes_open_fds", "process_open_fds"),
    ):
        assert fams[total].samples[0].value == sum(per_pid(each).values())
    # the program's own metrics are untouched
    assert fams["requests"].samples[0].value == 14


@pytest.mark.once
def test_a_worker_that_exits_leaves_the_process_metrics(statdir: str, workers: list[subprocess.Popen[str]]) -> None:
    gone = workers[0]
    assert gone.stdin is not None
    gone.stdin.close()
    gone.wait(timeout=30)
    fams = _families(statdir)
    assert [s.labels["pid"] for s in fams["process_threads"].samples] == [str(workers[1].pid)]
    assert fams["statmap_processes"].samples[0].value == 1
    assert fams["requests"].samples[0].value == 14  # the dead worker's total still counts


@pytest.mark.once
def test_off_by_default_and_exposed_when_asked(statdir: str, workers: list[subprocess.Popen[str]]) -> None:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    def export(*extra: str) -> str:
        cmd = [sys.executable, "-m", "statmap", "export", "--dir", statdir, *extra]
        return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60).stdout

    plain = export()
    assert "process_" not in plain
    om = export("--process-metrics")
    fams = {f.name: f for f in text_string_to_metric_families(om)}  # type: ignore[no-untyped-call]
    assert {s.labels["pid"] for s in fams["process_cpu_seconds"].samples} == {str(p.pid) for p in workers}
    assert fams["process_resident_memory_bytes"].type == "gauge"
    assert fams["statmap_processes"].samples[0].value == 2


@pytest.mark.once
def test_show_prints_and_json_carries_process_metrics(statdir: str, workers: list[subprocess.Popen[str]]) -> None:
    cmd = [sys.executable, "-m", "statmap", "show", "--dir", statdir, "--process-metrics"]
    text = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60).stdout
    assert text.count("  process: cpu ") == 2 and "threads 4" in text
    doc = json.loads(subprocess.run([*cmd, "--json"], capture_output=True, text=True, check=True, timeout=60).stdout)
    by_pid = {p["pid"]: p["process"] for p in doc["processes"]}
    assert sorted(by_pid) == sorted(p.pid for p in workers)
    assert all(v["threads"] == 4 and v["resident_memory_bytes"] >= 40 << 20 for v in by_pid.values())


@pytest.mark.once
def test_the_programs_own_process_metric_wins(statdir: str) -> None:
    pub = statmap.Publisher("bridged", statdir)
    try:
        pub.gauge("process_open_fds", "the program's own").set(-1)
        fams = [f for f in Collector(statdir, process_metrics=True).collect().families if f.name == "process_open_fds"]
        assert len(fams) == 1 and fams[0].help == "the program's own"
    finally:
        pub.close()


@pytest.mark.once
def test_a_reused_pid_or_vanishing_process_is_left_out() -> None:
    me = read_process(os.getpid())
    assert me is not None and me.pid == os.getpid()
    assert read_process(os.getpid(), me.start_ticks + 1) is None  # another process under the same pid
    # processes exiting while they are read: never an exception, a reading or None
    for _ in range(40):
        child = subprocess.Popen(["true"])
        while True:
            st = read_process(child.pid)
            if st is None or child.poll() is not None:
                break
        child.wait()
        assert read_process(child.pid) is None


def test_gc_counters(statdir: str) -> None:
    pub = statmap.Publisher("gc", statdir)
    metrics = statmap.gc_metrics(pub)
    try:
        before = gc.get_stats()[2]["collections"]
        garbage: list[object] = []
        garbage.append(garbage)  # a cycle for the collector to find
        del garbage
        gc.collect()
        gc.collect()
        collection = Collector(statdir).collect()
        assert collection.value("python_gc_collections", {"generation": "2"}) >= 2
        assert collection.value("python_gc_objects_collected", {"generation": "2"}) >= 1
        assert collection.value("python_gc_seconds", {"generation": "2"}) > 0
        assert gc.get_stats()[2]["collections"] - before >= 2
    finally:
        metrics.close()
    counted = Collector(statdir).collect().value("python_gc_collections", {"generation": "2"})
    gc.collect()
    assert Collector(statdir).collect().value("python_gc_collections", {"generation": "2"}) == counted
    pub.close()
