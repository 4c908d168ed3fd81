"""Percentiles of exponential histograms where people look: ``statmap show``, ``statmap top`` (in a
pseudo-terminal) and the dashboard's ``/api/series`` and ``/api/history``.

Each reported p50/p90/p99 is checked against the exact percentile of what was
observed (the observation of rank ceil(q * n)), within the documented relative
error of the histogram's scale (docs/format.md section 14) plus the rounding of
the three significant digits the terminal views print.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import statmap
from statmap import history as H
from statmap.app import StatmapApp
from statmap.collect import Collector
from statmap.values import ExpHistogramValue, exp_relative_error

from .test_top_tty import Terminal, _row

pytestmark = pytest.mark.once  # what the views show: the values come from the reader, tested under both cells

QS = (0.5, 0.9, 0.99)
SHOWN = 0.005  # three significant digits


def exact(observed: list[float], q: float) -> float:
    ordered = sorted(observed)
    return ordered[max(math.ceil(q * len(ordered)), 1) - 1]


def close(got: float, want: float, scale: int, shown: float = 0.0) -> bool:
    return abs(got - want) <= (exp_relative_error(scale) + shown) * abs(want) * (1 + 1e-9)


def number(text: str) -> float:
    """A number as the terminal views print it (three digits, an SI prefix)."""
    prefixes = {"k": 1e3, "M": 1e6, "m": 1e-3, "u": 1e-6, "µ": 1e-6}
    if text[-1:] in prefixes:
        return float(text[:-1]) * prefixes[text[-1]]
    return float(text)


def percentiles(text: str) -> dict[float, float]:
    found = dict(re.findall(r"\bp(50|90|99)=(\S+)", text))
    return {q: number(found[str(round(q * 100))]) for q in QS if str(round(q * 100)) in found}


FIRST = [0.001 * 1.01**i for i in range(700)]  # 0.001 .. 1.06, a long tail on a log scale
SECOND = [500 + i / 10 for i in range(100)]  # 500 .. 510: an interval all of its own


def _publish(statdir: str) -> tuple[statmap.Publisher, Any]:
    pub = statmap.Publisher("app", statdir)
    h = pub.histogram("delay", "Delay", buckets=statmap.Exponential(160))
    for v in FIRST:
        h.observe(v)
    return pub, h


def _scale(pub: statmap.Publisher) -> int:
    with statmap.open(pub.path) as reader:
        (series,) = reader.snapshot().series
        scale: int = series.value.scale
        return scale


def test_show_prints_percentiles_within_the_error(statdir: str) -> None:
    pub, _h = _publish(statdir)
    try:
        scale = _scale(pub)
        out = subprocess.run(
            [sys.executable, "-m", "statmap", "show", "--dir", statdir], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stderr
        (line,) = [line for line in out.stdout.splitlines() if "delay" in line]
        got = percentiles(line)
        assert set(got) == set(QS), line
        for q in QS:
            assert close(got[q], exact(FIRST, q), scale, SHOWN), (q, got[q], exact(FIRST, q), line)
    finally:
        pub.close()


@pytest.fixture
def terminal_of(statdir: str) -> Iterator[Callable[..., Terminal]]:
    made: list[Terminal] = []

    def start(*args: str) -> Terminal:
        t = Terminal([sys.executable, "-m", "statmap", "top", "--dir", statdir, *args])
        made.append(t)
        return t

    yield start
    for t in made:
        t.close()


def test_top_shows_interval_percentiles(statdir: str, terminal_of: Callable[..., Terminal]) -> None:
    pub, h = _publish(statdir)
    try:
        term = terminal_of("--interval", "0.5")
        # no baseline yet: all-time percentiles, said so
        screen = term.wait_for(lambda s: "(all time)" in " ".join(_row(s, "delay")), "delay's all-time row")
        row = " ".join(_row(screen, "delay"))
        got = percentiles(row)
        assert set(got) == set(QS), row
        scale = _scale(pub)
        for q in QS:
            assert close(got[q], exact(FIRST, q), scale, SHOWN), (q, got[q], row)
        # observations between two refreshes: the next one shows their percentiles alone
        for v in SECOND:
            h.observe(v)
        scale = _scale(pub)
        screen = term.wait_for(
            lambda s: "p50=" in " ".join(_row(s, "delay")) and "(all time)" not in " ".join(_row(s, "delay")),
            "delay's interval row",
        )
        row = " ".join(_row(screen, "delay"))
        got = percentiles(row)
        for q in QS:
            assert close(got[q], exact(SECOND, q), scale, SHOWN), (q, got[q], row)
        term.type(b"q")
        assert term.proc.wait(timeout=15) == 0
    finally:
        pub.close()


def test_api_series_gives_interval_percentiles(statdir: str) -> None:
    pub, h = _publish(statdir)
    app = StatmapApp(statdir, token="", max_age=0)
    try:
        scale = _scale(pub)

        def entry() -> dict[str, Any]:
            resp = app.handle("GET", "/api/series", "", {})
            assert resp.status == 200, resp.body
            (found,) = [s for s in json.loads(resp.body)["series"] if s["metric"] == "delay"]
            return dict(found)

        first = entry()
        assert first["type"] == "exphistogram" and first["view"] == "quantiles"
        assert first["count"] == len(FIRST)
        for q in QS:  # no baseline yet: over everything
            assert close(first[f"p{round(q * 100)}"], exact(FIRST, q), scale), (q, first)
        for v in SECOND:
            h.observe(v)
        scale = _scale(pub)
        second = entry()
        assert second["count"] == len(FIRST) + len(SECOND) and second["rate"] > 0
        for q in QS:  # the interval's observations alone
            assert close(second[f"p{round(q * 100)}"], exact(SECOND, q), scale), (q, second)
    finally:
        app.close()
        pub.close()


def _cumulative_at(value: ExpHistogramValue, bounds: list[float | str]) -> list[float]:
    """Observations at or below each bound, from the value's own buckets (+Inf: all)."""
    out = []
    for b in bounds:
        top = math.inf if b == "+Inf" else float(b)
        out.append(float(sum(c for _lower, upper, c in value.ordered() if upper <= top)))
    return out


def test_history_keeps_an_exponential_histogram_across_new_buckets_and_downscales(statdir: str) -> None:
    """/api/history's columns: the classic cumulative buckets; a new bucket or a coarser scale re-grids the
    track exactly (no restart), every sample then read on the newest bounds."""
    pub = statmap.Publisher("app", statdir)
    h = pub.histogram("delay", "Delay", buckets=statmap.Exponential(20, zero_threshold=0.001))
    collector = Collector(statdir)
    hist = H.History()
    seen: list[ExpHistogramValue] = []
    try:
        for batch in ([1.0, 1.1, 1.2], [1.3, 0.0, -2.0], [100.0, 1000.0], [1e6, 5.0]):
            for v in batch:
                h.observe(v)
            c = collector.collect()
            (fam,) = [f for f in c.families if f.name == "delay"]
            seen.append(fam.samples[0].value)
            hist.sample(c)
        assert len({v.scale for v in seen}) > 1, [v.scale for v in seen]  # it did downscale
        doc = hist.read(["app:delay"], None, set())
        entry = doc["series"]["app:delay"]
        assert entry["kind"] == "histogram" and entry["view"] == "quantiles"
        assert entry["scale"] == seen[-1].scale and entry["zero_threshold"] == 0.001
        assert entry["count"] == [float(v.count) for v in seen]  # all four samples kept
        bounds = entry["bounds"]
        assert bounds == [b if math.isfinite(b) else "+Inf" for b, _c in seen[-1].buckets]
        for k, value in enumerate(seen):
            want = _cumulative_at(value.downscaled(seen[-1].scale), bounds)
            assert [col[k] for col in entry["buckets"]] == want, k
    finally:
        collector.close()
        pub.close()
