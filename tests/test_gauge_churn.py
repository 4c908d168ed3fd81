"""A summed gauge reads 0 when no worker is alive; families do not come and go with worker churn.

Real worker processes start and stop (cleanly, and by SIGKILL) so that at the
moment of some scrapes none is alive; their files are left closed or dead, or
folded into the archive and removed, as gunicorn's hooks do. Every scrape, by
one long-lived ``Collector`` (as ``statmap serve``) and by a fresh one (a
restarted server: it knows the families only through the archive), must show
``http_requests_in_flight`` (sum over live processes, as the middleware
declares it) and every other summed gauge, at 0 when nobody contributes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

import statmap
from statmap.archive import clean
from statmap.collect import Collector, collect
from statmap.expose import openmetrics

parser = pytest.importorskip("prometheus_client.openmetrics.parser")

WORKER = r"""
import sys, statmap
pub = statmap.Publisher("web", sys.argv[1])
in_flight = pub.gauge("http_requests_in_flight", "HTTP requests being served", aggregate="sum", live_only=True)
depth = pub.gauge("queue_depth", "Jobs queued", aggregate="sum")
per_route = pub.gauge("route_in_flight", "In flight by route", aggregate="sum", live_only=True, labels=("route",))
peak = pub.gauge("peak", "Largest batch", aggregate="max", live_only=True)
pub.counter("http_requests", "Requests").inc(3)
in_flight.set(1)
depth.set(2)
per_route.labels("/a").set(1)
peak.set(7)
print("ready", flush=True)
sys.stdin.readline()
pub.close()
"""

SUMMED = {"http_requests_in_flight": {}, "queue_depth": {}, "route_in_flight": {"route": "/a"}}


def start(statdir: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, statdir], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def stop(proc: subprocess.Popen[str], kill: bool) -> None:
    if kill:
        os.kill(proc.pid, signal.SIGKILL)
    else:
        assert proc.stdin is not None
        proc.stdin.write("exit\n")
        proc.stdin.flush()
    proc.wait(timeout=60)


def check(collector: Collector, alive: int, fresh: bool = False) -> None:
    collection = collector.collect()
    assert not collection.errors, collection.errors
    for name, labels in SUMMED.items():
        value = collection.value(name, labels)
        assert value is not None, f"{name} missing from a scrape with {alive} live workers"
        if name != "queue_depth":  # live only: exactly the live workers
            assert value == alive, (name, value, alive)
    families = {f.name: f for f in parser.text_string_to_metric_families(openmetrics(collection))}
    assert families["http_requests_in_flight"].samples[0].value == alive
    if not fresh:  # a max over no live process has no value, but the family stays (the archive keeps sums only)
        assert [s.value for s in families["peak"].samples] == ([7] if alive else [])
    assert families["http_requests"].samples[0].value > 0


def test_summed_gauges_read_zero_when_no_worker_is_alive(statdir: str) -> None:
    server = Collector(statdir)  # long-lived, like statmap serve
    try:
        for round_ in range(4):
            workers = [start(statdir) for _ in range(2)]
            check(server, alive=2)
            for i, proc in enumerate(workers):
                stop(proc, kill=(round_ + i) % 2 == 1)  # some close their file, some are killed
            check(server, alive=0)  # closed and dead files still there
            if round_ % 2 == 0:
                clean(statdir)  # folded into the archive and removed (gunicorn's child_exit hook)
                assert all(n.startswith("web.archive") for n in os.listdir(statdir) if not n.startswith("."))
                check(server, alive=0)
                with Collector(statdir) as fresh:  # a restarted server knows them only from the archive
                    check(fresh, alive=0, fresh=True)
        assert collect(statdir).value("queue_depth") is not None
    finally:
        server.close()


def test_a_declaration_in_the_archive_gives_way_when_the_program_changes_the_gauge(statdir: str) -> None:
    old = statmap.Publisher("web", statdir)
    old.gauge("busy", "x", aggregate="sum").set(3)
    old.close()
    clean(statdir)
    with Collector(statdir) as server:
        assert server.collect().value("busy") == 0.0  # known from the archive only
        new = statmap.Publisher("web", statdir)  # a new version: a max gauge of the same name
        try:
            new.gauge("busy", "x", aggregate="max").set(5)
            for collection in (server.collect(), collect(statdir)):
                assert not collection.errors, collection.errors
                assert collection.value("busy") == 5
                family = collection.family("busy")
                assert family is not None and family.aggregation == "max"
        finally:
            new.close()
        clean(statdir)
        collection = collect(statdir)  # the outdated declaration is gone from the archive
        assert not collection.errors and collection.family("busy") is None
