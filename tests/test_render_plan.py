"""A long-lived Collector and Exposer (caches, render plan kept across scrapes) write the same bytes as fresh ones.

The repeat scrape keeps what it built (label texts, line prefixes, family
headers, per-family slot lists) between collections; these tests change the
directory under it (new files, removed files, new label sets and families,
a process that dies, files folded into the archive, a second publisher name
sharing metric names, values moving) and check after each change that its
text equals that of a new Collector and Exposer, in every text format and
with the options that change labels.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import statmap
from statmap.archive import clean
from statmap.collect import Collector
from statmap.expose import Exposer

from .test_export import publish_everything

_OPTIONS: tuple[dict[str, object], ...] = (
    {},
    {"publisher_label": "always", "include_text": True},
    {"prefix": "app_", "match": "req|lat"},
)

_CHILD = """
import os, sys, statmap
sys.path.insert(0, {tests!r})
from test_export import publish_everything
pub = publish_everything({d!r}, {name!r})
pub.counter("child_only", "Only in the child", labels=("k",)).labels("v").inc(7)
print("ready", flush=True)
sys.stdin.read()
"""


class _Pair:
    """A long-lived collector and exposers, compared with fresh ones at every check."""

    def __init__(self, statdir: str) -> None:
        self.statdir = statdir
        self.collector = Collector(statdir)
        self.exposers = [Exposer(**o) for o in _OPTIONS]  # type: ignore[arg-type]

    def check(self) -> None:
        for _ in range(2):  # the first scrape after a change, then the repeat scrape
            kept = self.collector.collect()
            with Collector(self.statdir) as c:
                fresh = c.collect()
            assert kept.created == fresh.created
            for options, exposer in zip(_OPTIONS, self.exposers, strict=True):
                new = Exposer(**options)  # type: ignore[arg-type]
                assert exposer.openmetrics(kept) == new.openmetrics(fresh)
                assert exposer.prometheus(kept) == new.prometheus(fresh)
                # the same collection rendered twice by one exposer
                assert exposer.openmetrics(kept) == new.openmetrics(kept)

    def close(self) -> None:
        self.collector.close()


def _child(statdir: str, name: str) -> subprocess.Popen[str]:
    tests = os.path.dirname(os.path.abspath(__file__))
    code = _CHILD.format(tests=tests, d=statdir, name=name)
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline() == "ready\n"
    return p


def test_long_lived_scrape_equals_a_fresh_one_across_changes(statdir: str) -> None:
    live = publish_everything(statdir)
    hits = live.counter("hits_total", "Hits", labels=("method", "path"))
    hits.labels("GET", "/").inc(1)
    level = live.gauge("level", "Level", unit="bytes")
    closed = publish_everything(statdir)
    closed.close()
    pair = _Pair(statdir)
    try:
        pair.check()
        # values move
        hits.labels("GET", "/").inc(5)
        level.set(3.5)
        pair.check()
        # a new label set and a new family in a live file
        hits.labels("PUT", "/new").inc(2)
        live.gauge("queue", "Queue depth", aggregate="max", labels=("q",)).labels("a").set(4)
        pair.check()
        # a new live process, with a family of its own; then it dies (SIGKILL)
        child = _child(statdir, "web")
        pair.check()
        child.send_signal(signal.SIGKILL)
        child.wait()
        pair.check()
        # the dead and closed files folded into the archive and removed
        clean(statdir)
        pair.check()
        # a second publisher name sharing metric names (publisher labels appear)
        other = publish_everything(statdir, "api")
        pair.check()
        # a file removed
        path = other.path
        other.close()
        os.unlink(path)
        pair.check()
        # a new file of the first publisher, then a removed one
        extra = statmap.Publisher("web", statdir)
        extra.counter("requests_total", "Requests served", labels=("method", "path")).labels("GET", "/").inc(1)
        pair.check()
        extra.close()
        os.unlink(extra.path)
        pair.check()
    finally:
        pair.close()
        live.close()


def test_repeat_scrape_sees_new_values_of_every_kind(statdir: str) -> None:
    pub = statmap.Publisher("web", statdir)
    cpu = pub.counter("cpu", "CPU time", float=True, unit="seconds")
    cpu.inc(1.5)
    lat = pub.histogram("latency", "Request latency", unit="seconds", buckets=(0.01, 0.1, 1.0, 1e6))
    lat.observe(0.5)
    payload = pub.summary("payload", "Payload size", unit="bytes")
    payload.observe(100)
    state = pub.enum("state", "Worker state", states=("starting", "serving"))
    state.state("serving")
    text = pub.text("last_path", "Last path", size=32)
    text.set("/x")
    try:
        collector, exposer = Collector(statdir), Exposer(include_text=True)
        first = exposer.openmetrics(collector.collect())
        cpu.inc(2.25)
        lat.observe(0.02)
        payload.observe(-1e9)  # its sum goes negative: _sum left out
        state.state("starting")
        text.set("/z")
        second = exposer.openmetrics(collector.collect())
        assert first != second
        with Collector(statdir) as c:
            assert second == Exposer(include_text=True).openmetrics(c.collect())
        assert "cpu_seconds_total 3.75\n" in second
        assert f'state{{pid="{os.getpid()}",state="starting"}} 1\n' in second
        assert "payload_bytes_sum" not in second
        collector.close()
    finally:
        pub.close()
