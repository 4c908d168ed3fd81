"""``/api/history``: the recent past a real ``statmap serve`` keeps in memory (statmap.history).

The server samples from its start, so a client arriving later gets the past
at once; per-process values of a summed series once someone asks for its
breakdown; process deaths and closes as events; bounded requests.
"""

from __future__ import annotations

import itertools
import signal
import time
from typing import Any

import pytest

from statmap import history as H

from .test_server_support import Server, Worker, wait_for

pytestmark = pytest.mark.once  # the values come from the collector, tested under both cells


def _hist(server: Server, query: str) -> Any:
    return server.json("/api/history?" + query)


def test_history_holds_the_past_before_any_client_asks(statdir: str) -> None:
    worker = Worker(statdir, "hist")
    server = Server(statdir)
    try:
        for i in range(4):
            worker(f"inc {10 * (i + 1)}")
            worker("set 3")
            worker("observe 0.05")
            time.sleep(1.0)
        # The first request already sees several samples, a second apart, oldest first.
        doc = _hist(server, "id=hist:jobs%7Bqueue%3D%22high%22%7D&id=hist:level&id=hist:latency&id=hist:nope")
        times = doc["times"]
        assert len(times) >= 3 and times == sorted(times)
        assert all(0.4 < b - a < 10 for a, b in itertools.pairwise(times)), times  # about STEP apart
        jobs = doc["series"]['hist:jobs{queue="high"}']
        assert jobs["kind"] == "counter" and jobs["view"] == "rate" and len(jobs["values"]) == len(times)
        values = [v for v in jobs["values"] if v is not None]
        assert values == sorted(values) and values[-1] == 100  # cumulative: 10 + 20 + 30 + 40
        assert doc["series"]["hist:level"]["values"][-1] == 3
        lat = doc["series"]["hist:latency"]
        assert lat["kind"] == "histogram" and lat["bounds"] == [0.01, 0.1, 1.0, "+Inf"]
        assert lat["count"][-1] == 4 and len(lat["buckets"]) == 4 and lat["buckets"][1][-1] == 4
        assert doc["missing"] == ["hist:nope"]
        # since=T: only what came after T
        later = _hist(server, f"id=hist:level&since={times[-1]}")
        assert all(t > times[-1] for t in later["times"])
        assert len(later["series"]["hist:level"]["values"]) == len(later["times"])
        # bad requests
        assert server.request("/api/history?since=soon")[0] == 400
        assert server.request("/api/history?" + "&".join(f"id={i}" for i in range(H.MAX_IDS + 1)))[0] == 400
    finally:
        worker.stop()
        server.stop()


def test_history_breaks_a_sum_down_by_process_and_marks_deaths(statdir: str) -> None:
    a, b = Worker(statdir, "hist"), Worker(statdir, "hist")
    server = Server(statdir)
    sid = 'hist:jobs{queue="high"}'
    query = "breakdown=hist:jobs%7Bqueue%3D%22high%22%7D"
    try:
        a("inc 5")
        b("inc 7")
        wait_for(lambda: sid in _hist(server, "id=" + sid.replace('"', "%22"))["series"], what="the series")
        first = _hist(server, query)
        assert first["breakdown"] == [sid]
        a("inc 100")

        def split() -> dict[str, Any]:
            per = _hist(server, query)["processes"].get(sid, {})
            last = {k: v[-1] for k, v in per.items()}
            return last if last.get(str(a.pid)) == 105 and last.get(str(b.pid)) == 7 else {}

        wait_for(split, what="per-process values 105 and 7")
        # A summed gauge breaks down too; an unknown series does not.
        assert _hist(server, "breakdown=hist:level")["breakdown"] == ["hist:level"]
        assert _hist(server, "breakdown=hist:nope")["breakdown"] == []
        # A worker killed: a "died" event, named by pid.
        b.proc.send_signal(signal.SIGKILL)
        b.proc.wait()

        def died() -> list[Any]:
            return [e for e in _hist(server, "")["events"] if e["event"] == "died" and e["pid"] == b.pid]

        (event,) = wait_for(died, what="the death event")
        assert event["publisher"] == "hist" and event["time"] > first["times"][0]
    finally:
        a.stop()
        b.stop()
        server.stop()


def test_history_bounds(statdir: str) -> None:
    """The ring is bounded: after CAPACITY samples only the newest CAPACITY are kept."""
    from statmap.collect import Collector

    worker = Worker(statdir, "hist")
    try:
        hist = H.History()
        with Collector(statdir) as collector:
            for i in range(H.CAPACITY + 25):
                worker(f"set {i}")
                c = collector.collect()
                c.time = 1000.0 + i  # one sample per "second"
                hist.sample(c)
        doc = hist.read(["hist:level"], None, set())
        assert len(doc["times"]) == H.CAPACITY
        assert doc["times"][0] == 1000.0 + 25 and doc["times"][-1] == 1000.0 + H.CAPACITY + 24
        assert doc["series"]["hist:level"]["values"][0] == 25
    finally:
        worker.stop()
