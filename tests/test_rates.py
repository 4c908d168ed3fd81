"""statmap.rates: the one rate computation behind ``/api/series`` and ``statmap top``.

The unit tests use the reader's real value classes; the last two read real
files written by real publishers, through ``TopModel`` and ``StatmapApp``,
so both views are checked to use the same rules (a reset is no rate).
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

import statmap
from statmap.collect import Collector
from statmap.rates import QUANTILES, Rates, since
from statmap.reader import HistogramValue, SummaryValue
from statmap.server import StatmapApp
from statmap.top import TopModel

INF = float("inf")


def hist(count: int, total: float, cum: tuple[int, ...], bounds: tuple[float, ...] = (1, 2, INF)) -> HistogramValue:
    return HistogramValue(count, total, tuple(zip(bounds, cum, strict=True)))


def test_since_numbers_is_the_gain_and_none_after_a_reset() -> None:
    assert since(15, 10) == 5
    assert since(2.5, 0.5) == 2.0
    assert since(10, 10) == 0
    assert since(5, 10) is None  # went back: a reset, not a negative gain
    assert since(math.nan, 1) is None
    assert since(INF, INF) is None
    assert since(3, "x") is None  # another kind of value
    assert since(3, hist(1, 1.0, (1, 1, 1))) is None


def test_since_histograms_is_the_interval_histogram() -> None:
    before = hist(4, 5.0, (1, 3, 4))
    now = hist(10, 17.0, (2, 8, 10))
    delta = since(now, before)
    assert delta == hist(6, 12.0, (1, 5, 6))
    assert delta.percentile(0.5) == pytest.approx(1.5)  # the interval's observations only
    assert since(now, now) == hist(0, 0.0, (0, 0, 0))
    assert since(before, now) is None  # fewer observations: a reset
    assert since(now, hist(4, 5.0, (1, 3, 4), bounds=(1.0, 3.0, INF))) is None  # other bounds
    assert since(now, hist(1, 1.0, (1, 1), bounds=(1.0, INF))) is None  # other bucket count
    assert since(now, SummaryValue(1, 1.0)) is None
    assert since(now, 3) is None


def test_since_summaries_is_the_interval_summary() -> None:
    delta = since(SummaryValue(10, 30.0), SummaryValue(4, 6.0))
    assert delta == SummaryValue(6, 24.0) and delta.average == 4.0
    assert since(SummaryValue(1, 1.0), SummaryValue(4, 6.0)) is None
    assert since(SummaryValue(1, 1.0), hist(1, 1.0, (1, 1, 1))) is None


def test_window_zero_compares_with_the_previous_collection() -> None:
    rates = Rates()
    first = rates.start(100.0)
    assert first.dt == 0 and first.change("jobs", 10) == (None, None)  # no baseline yet
    second = rates.start(102.0)
    assert second.dt == 2.0 and second.change("jobs", 14) == (2.0, 4)
    assert second.change("new", 1) == (None, None)  # no earlier value
    third = rates.start(103.0)
    assert third.change("jobs", 20) == (6.0, 6)  # against the previous collection, not the first
    assert third.change("new", 4) == (3.0, 3)
    fourth = rates.start(104.0)
    assert fourth.change("jobs", 3) == (None, None)  # a reset
    assert rates.start(105.0).change("jobs", 5) == (2.0, 2)  # and counting again from the new value


def test_window_finds_a_baseline_about_a_window_back() -> None:
    rates = Rates(window=1.0)
    values = {0.0: 0, 0.5: 10, 1.0: 20, 1.5: 30, 2.0: 40, 2.25: 45}
    got = {}
    for at, value in values.items():
        interval = rates.start(at)
        got[at] = (interval.dt, interval.change("k", value))
    assert got[0.0] == (0.0, (None, None))
    assert got[0.5] == (0.5, (20.0, 10))  # the only earlier one, however recent
    assert got[1.0] == (1.0, (20.0, 20))  # 0.0: 0.5 is too recent
    assert got[1.5] == (1.0, (20.0, 20))  # 0.5, the newest at least 0.9 s back
    assert got[2.25] == (1.25, (20.0, 25))  # 1.0
    assert len(rates._history) <= 4  # bounded: about a window of collections


def test_histogram_and_summary_rates_count_observations() -> None:
    rates = Rates()
    rates.start(0.0).change("h", hist(4, 5.0, (1, 3, 4)))
    rate, delta = rates.start(2.0).change("h", hist(10, 17.0, (2, 8, 10)))
    assert rate == 3.0 and delta == hist(6, 12.0, (1, 5, 6))
    rates = Rates()
    rates.start(0.0).change("s", SummaryValue(4, 6.0))
    assert rates.start(0.5).change("s", SummaryValue(10, 30.0)) == (12.0, SummaryValue(6, 24.0))
    assert QUANTILES == (0.5, 0.9, 0.99)


def _two_publishers(statdir: str) -> tuple[statmap.Publisher, statmap.Publisher, Any]:
    """Two processes' worth of files; removing the second makes every aggregate go back (a reset)."""
    kept = statmap.Publisher("svc", statdir)
    gone = statmap.Publisher("svc", statdir)
    jobs = []
    for pub, n in ((kept, 10), (gone, 5)):
        jobs.append(pub.counter("jobs_total", "jobs"))
        jobs[-1].inc(n)
        h = pub.histogram("latency_seconds", "latency", buckets=(0.5, 1.0))
        s = pub.summary("size_bytes", "size")
        for _ in range(n):
            h.observe(0.7)
            s.observe(2.0 if pub is kept else 8.0)
    return kept, gone, jobs[0]


def test_top_shows_no_rate_across_a_reset(statdir: str) -> None:
    """`statmap top`: a counter that went back (a file gone without an archive) has no rate, never a negative one."""
    kept, gone, jobs = _two_publishers(statdir)
    collector = Collector(statdir)
    try:
        model = TopModel(collector)
        model.sample()
        jobs.inc(2)
        rows = {r.label: r for r in model.sample()}
        assert rows["jobs_total"].rate is not None and rows["jobs_total"].rate > 0
        gone.remove()
        rows = {r.label: r for r in model.sample()}
        assert rows["jobs_total"].value == "12"
        assert [rows[k].rate for k in ("jobs_total", "latency_seconds", "size_bytes")] == [None, None, None]
        assert "(last interval)" not in rows["latency_seconds"].value  # the cumulative histogram
    finally:
        collector.close()
        kept.close()


def test_api_series_shows_no_rate_across_a_reset(statdir: str) -> None:
    """/api/series: after a reset, no rate and the cumulative percentiles and average (as with no baseline)."""
    kept, gone, jobs = _two_publishers(statdir)
    app = StatmapApp(statdir, token="", max_age=0)
    try:

        def series() -> dict[str, dict[str, object]]:
            resp = app.handle("GET", "/api/series", "", {})
            assert resp.status == 200, resp.body
            return {e["metric"]: e for e in json.loads(resp.body)["series"]}

        series()
        jobs.inc(2)
        now = series()
        assert isinstance(now["jobs_total"]["rate"], float) and now["jobs_total"]["rate"] > 0
        gone.remove()
        now = series()
        assert now["jobs_total"]["value"] == 12
        assert [now[k]["rate"] for k in ("jobs_total", "latency_seconds", "size_bytes")] == [None, None, None]
        assert now["latency_seconds"]["count"] == 10 and now["latency_seconds"]["p50"] is not None
        assert now["size_bytes"]["avg"] == 2.0
    finally:
        app.close()
        kept.close()
