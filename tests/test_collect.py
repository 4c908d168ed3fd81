"""collect(): liveness per file, aggregation rules, cached readers, bad files skipped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

import statmap
from statmap.collect import CORRUPT, Collector, collect
from statmap.reader import ALIVE, CLOSED, DEAD, NOT_READY, HistogramValue, SummaryValue


def spawn(statdir: str, body: str, *, exit: str = "close") -> subprocess.Popen[str]:
    """A real worker process running ``body`` with ``pub`` (publisher "web"), then:
    exit="close" (clean exit), "die" (os._exit: no close -> dead), "wait" (stays alive until stdin closes)."""
    tail = {
        "close": "pub.close()",
        "die": "sys.stdout.flush(); os._exit(0)",
        "wait": "sys.stdin.read()",
    }[exit]
    code = textwrap.dedent(
        """
        import os, sys, statmap
        pub = statmap.Publisher("web", sys.argv[1])
        {body}
        print("ready", flush=True)
        {tail}
        """
    ).format(body=textwrap.indent(textwrap.dedent(body), "").strip(), tail=tail)
    proc = subprocess.Popen(
        [sys.executable, "-c", code, statdir], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    return proc


def finish(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=30)


def test_liveness_of_each_file(statdir: str) -> None:
    alive = spawn(statdir, "pub.counter('n').inc()", exit="wait")
    spawn(statdir, "pub.counter('n').inc()", exit="close").wait()
    spawn(statdir, "pub.counter('n').inc()", exit="die").wait()
    killed = spawn(statdir, "pub.counter('n').inc()", exit="wait")
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    open(os.path.join(statdir, "web.1.00000000.statmap"), "wb").close()  # zero length: not ready
    with open(os.path.join(statdir, "web.2.00000000.statmap"), "wb") as f:
        f.write(b"NOTSTATM" + bytes(4088))  # corrupt
    try:
        c = collect(statdir)
        statuses = sorted(f.status for f in c.files)
        assert statuses == sorted([ALIVE, CLOSED, DEAD, DEAD, NOT_READY, CORRUPT])
        assert c.value("n") == 4  # the bad files did not stop the others
        assert [e.path for e in c.errors] == [os.path.join(statdir, "web.2.00000000.statmap")]
        assert "bad magic" in c.errors[0].problem
    finally:
        finish(alive)


def test_counters_histograms_summaries_are_summed(statdir: str) -> None:
    body = """
        req = pub.counter("requests", "Requests", labels=("code",))
        req.labels("200").inc(int(sys.argv[2]))
        req.labels("500").inc()
        pub.counter("seconds", float=True).inc(0.25)
        h = pub.histogram("latency", buckets=(0.1, 1.0), unit="seconds")
        for v in (0.05, 0.5, 5):
            h.observe(v)
        pub.summary("size").observe(10)
    """
    procs = []
    for n in (1, 2, 3):
        code_body = body.replace("int(sys.argv[2])", str(n))
        procs.append(spawn(statdir, code_body, exit="wait" if n == 1 else "close"))
    try:
        c = collect(statdir)
        assert c.value("requests", {"code": "200"}) == 6
        assert c.value("requests", {"code": "500"}) == 3
        assert c.value("seconds") == pytest.approx(0.75)
        h = c.value("latency")
        assert isinstance(h, HistogramValue)
        assert h.count == 9 and h.sum == pytest.approx(3 * 5.55)
        assert h.buckets == ((0.1, 3), (1.0, 6), (float("inf"), 9))
        assert c.value("size") == SummaryValue(3, 30.0, 10.0, 10.0)
        assert (h.min, h.max) == (0.05, 5.0)  # lifetime min and max across the processes
        fam = c.family("requests")
        assert fam is not None and fam.type == "counter" and fam.help == "Requests" and fam.publisher == "web"
        assert c.family("latency").unit == "seconds"  # type: ignore[union-attr]
    finally:
        for p in procs:
            finish(p)


def test_gauge_modes(statdir: str) -> None:
    body = """
        v = float(sys.argv[2])
        pub.gauge("total", aggregate="sum").set(v)
        pub.gauge("high", aggregate="max").set(v)
        pub.gauge("low", aggregate="min").set(v)
        pub.gauge("newest", aggregate="last").set(v)
        pub.gauge("busy", aggregate="sum", live_only=True).set(v)
        pub.gauge("mem").set(v)
    """
    first = spawn(statdir, body.replace("float(sys.argv[2])", "1.0"), exit="wait")
    second = spawn(statdir, body.replace("float(sys.argv[2])", "5.0"), exit="wait")
    spawn(statdir, body.replace("float(sys.argv[2])", "3.0"), exit="die").wait()  # newest, but dead
    try:
        c = collect(statdir)
        assert c.value("total") == 9.0
        assert c.value("high") == 5.0
        assert c.value("low") == 1.0
        assert c.value("newest") == 3.0  # last = most recently created process, alive or not
        assert c.value("busy") == 6.0  # live only: the dead process is left out
        mem = c.family("mem")
        assert mem is not None and mem.aggregation == "per_process"
        by_pid = {s.labels["pid"]: s.value for s in mem.samples}
        assert by_pid[str(first.pid)] == 1.0 and by_pid[str(second.pid)] == 5.0
        assert sorted(by_pid.values()) == [1.0, 3.0, 5.0]  # the dead process is still shown
    finally:
        finish(first)
        finish(second)


def test_text_enum_info_stay_per_process(statdir: str) -> None:
    body = """
        pub.text("last_path").set("/p" + sys.argv[2])
        pub.enum("state", states=("starting", "serving")).state("serving")
        pub.info("build", values={"version": "1." + sys.argv[2]})
    """
    procs = [spawn(statdir, body.replace("sys.argv[2]", repr(str(i))), exit="wait") for i in (1, 2)]
    try:
        c = collect(statdir)
        text = c.family("last_path")
        assert text is not None
        assert {s.labels["pid"]: s.value for s in text.samples} == {str(procs[0].pid): "/p1", str(procs[1].pid): "/p2"}
        state = c.family("state")
        assert state is not None and [s.value for s in state.samples] == ["serving", "serving"]
        assert state.states == ("starting", "serving")
        build = c.family("build")
        assert build is not None and sorted(s.value["version"] for s in build.samples) == ["1.1", "1.2"]
    finally:
        for p in procs:
            finish(p)


def test_mismatched_histogram_bounds_name_both_files(statdir: str) -> None:
    a = statmap.Publisher("web", statdir)
    a.histogram("latency", buckets=(1, 2)).observe(1)
    b = statmap.Publisher("web", statdir)
    b.histogram("latency", buckets=(1, 3)).observe(1)
    b.counter("ok").inc()
    try:
        c = collect(statdir)
        assert len(c.errors) == 1
        message = str(c.errors[0])
        assert a.path in message and b.path in message and "bounds" in message
        assert c.value("latency").count == 1  # the file that agrees with the first one seen
        assert c.value("ok") == 1  # the rest of the disagreeing file is still collected
    finally:
        a.close()
        b.close()


def test_publishers_are_aggregated_separately(statdir: str) -> None:
    web = statmap.Publisher("web", statdir)
    web.counter("requests").inc(2)
    api = statmap.Publisher("api", statdir)
    api.counter("requests").inc(5)
    try:
        c = collect(statdir)
        assert c.value("requests", publisher="web") == 2
        assert c.value("requests", publisher="api") == 5
        only = collect(statdir, publishers=["api"])
        assert [f.name for f in only.files] == ["api"]
    finally:
        web.close()
        api.close()


def test_repeated_collections_reuse_readers_and_see_new_values_and_series(statdir: str) -> None:
    pub = statmap.Publisher("web", statdir)
    hits = pub.counter("hits", labels=("path",))
    hits.labels("/").inc()
    with Collector(statdir) as collector:
        assert collector.collect().value("hits", {"path": "/"}) == 1
        (source,) = collector._sources.values()
        reader, parsed = source.reader, list(source.reader.records)
        hits.labels("/").inc(41)
        c = collector.collect()
        assert c.value("hits", {"path": "/"}) == 42
        assert source.reader is reader and source.reader.records == parsed  # nothing re-parsed
        for i in range(300):  # new series, and enough of them to grow the file
            hits.labels(f"/{i}").inc(i)
        c = collector.collect()
        assert c.value("hits", {"path": "/299"}) == 299
        assert len(c.family("hits").samples) == 301  # type: ignore[union-attr]
        assert next(iter(collector._sources.values())).reader is reader
        pub.remove()
        assert collector.collect().files == []
        assert collector._sources == {}


def test_pid_collisions_get_distinct_pid_labels(statdir: str) -> None:
    # Two files with the same pid (a reused pid, or two containers sharing the directory).
    a = statmap.Publisher("web", statdir)
    a.gauge("mem").set(1)
    b = statmap.Publisher("web", statdir)
    b.gauge("mem").set(2)
    try:
        fam = collect(statdir).family("mem")
        assert fam is not None
        pids = sorted(s.labels["pid"] for s in fam.samples)
        assert pids[0] == str(os.getpid()) or pids[1] == str(os.getpid())
        assert len(set(pids)) == 2
        older = f"{os.getpid()}:{a.identity.instance_id[:4].hex()}"
        assert older in pids  # the newer file keeps the plain pid
    finally:
        a.close()
        b.close()


def test_truncated_and_garbage_files_never_break_collection(statdir: str) -> None:
    good = statmap.Publisher("web", statdir)
    good.counter("n").inc(7)
    victim = statmap.Publisher("web", statdir)
    victim.counter("n").inc(1)
    victim.close()
    data = open(victim.path, "rb").read()
    os.unlink(victim.path)
    try:
        for cut in (0, 8, 100, 255, 256, 300, 4096):
            path = os.path.join(statdir, f"web.9.{cut:08x}.statmap")
            with open(path, "wb") as f:
                f.write(data[:cut])
            c = collect(statdir)
            assert c.value("n") in (7, 8)
            os.unlink(path)
        rng = __import__("random").Random(3)
        for i in range(30):
            blob = bytearray(data)
            for _ in range(8):
                blob[rng.randrange(256, 1024)] = rng.randrange(256)
            path = os.path.join(statdir, f"web.9.{i:08x}.statmap")
            with open(path, "wb") as f:
                f.write(blob)
            c = collect(statdir)
            assert c.value("n") is None or c.value("n") >= 7
            os.unlink(path)
    finally:
        good.close()
