"""Every metric that can be declared gives a scrape that strict parsers accept.

Each type (counter, gauge in every aggregation mode, histogram with every
kind of buckets including negative bounds and ``LogBuckets``, timer,
summary, text, info, enum), labelled and not, empty, with special float
values and odd but legal names, labels and help, is exposed:

* from one process, and aggregated across processes (alive, closed, and
  folded into the archive);
* as OpenMetrics, checked by prometheus_client's strict parser, and as
  Prometheus text 0.0.4, checked by ``promtool check metrics`` (which parses
  only 0.0.4);
* by ``statmap.expose.Exposer`` and by the prometheus_client bridge
  (``StatmapCollector``) in both of prometheus_client's formats.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from typing import Any

import pytest

import statmap
from statmap.archive import clean
from statmap.collect import collect
from statmap.expose import Exposer, StatmapCollector
from statmap.metrics import LogBuckets

parser = pytest.importorskip("prometheus_client.openmetrics.parser")
PROMTOOL = shutil.which("promtool")

pytestmark = pytest.mark.external  # every scrape is checked by promtool (Debian package prometheus)

ODD_HELP = 'unicode \u00fc \u20ac \U0001d11e, quote " backslash \\ newline\n tab\t cr\r nul\x00 end \\n'
ODD_VALUE = 'v \u00fc "q" \\ \n \U0001d11e \r\t\x00'


def declare_everything(pub: statmap.Publisher) -> None:
    pub.counter("c_int", ODD_HELP).inc(3)
    pub.counter("c_total", "").inc(0)
    pub.counter("c_float", "float", float=True, unit="seconds").inc(1.5)
    pub.counter("c_float_inf", "float", float=True).inc(1e308)  # aggregates to +Inf
    pub.counter("c_lab", "labels", labels=("_", "a__b", "publisher", "value", "x_1", "pid_")).labels(
        ODD_VALUE, "", "p", "v", "1", "q"
    ).inc()
    pub.counter("c_lab_empty", "a family without series", labels=("k",))
    for mode in ("per_process", "sum", "max", "min", "last"):
        for live in (False, True):
            g = pub.gauge(f"g_{mode}_{int(live)}", "gauge", aggregate=mode, live_only=live, labels=("k",))
            g.labels("nan").set(math.nan)
            g.labels("pinf").set(math.inf)
            g.labels("minf").set(-math.inf)
            g.labels("neg").set(-2.5)
            g.labels("big").set(1e300)
    pub.gauge("g_total", "a gauge named like a counter").set(1)
    pub.gauge("_", "a one-character name").set(1)
    pub.gauge("__x__", "dunder").set(1)
    pub.gauge("g_bytes", "", unit="bytes").set(1)
    pub.gauge("g_odd_unit", "", unit="_9_").set(1)
    pub.gauge("g_info", "a gauge named like an info").set(1)
    pub.histogram("h_default", "").observe(0.3)
    pub.histogram("h_no_bounds", "", buckets=()).observe(1)
    h = pub.histogram("h_neg", "negative bounds", buckets=(-10, -1, 0, 1))
    for v in (-20, -5, 0.5, 3):
        h.observe(v)
    pub.histogram("h_neg_lab", "", buckets=(-1,), labels=("k",)).labels("a").observe(-3)
    pub.histogram("h_neg_empty", "negative bounds, nothing observed", buckets=(-2.0, -1.0))
    pub.histogram("h_negsum", "non-negative bounds, negative observations", buckets=(0, 1)).observe(-5)
    pub.histogram("h_log", "", buckets=LogBuckets(1e-3, 10, 0.1), unit="seconds").observe(0.02)
    pub.histogram("h_inf", "").observe(math.inf)
    pub.histogram("h_minf", "", buckets=(0, 1)).observe(-math.inf)
    h = pub.histogram("h_nansum", "+Inf and -Inf observed: the sum is NaN", buckets=(0,))
    h.observe(math.inf)
    h.observe(-math.inf)
    pub.histogram("h_extreme", "", buckets=(-1e300, -5e-324, 5e-324, 1e300)).observe(5)
    pub.timer("t", "timer").observe(0.1)
    pub.timer("t_lab", "timer", labels=("le_",)).labels("a").observe(0.1)
    pub.summary("s", ODD_HELP, unit="bytes").observe(5)
    pub.summary("s_neg", "negative observations").observe(-5)
    pub.summary("s_inf", "").observe(math.inf)
    pub.summary("s_empty", "")
    pub.enum("e", "", states=("a", ODD_VALUE, "e"), labels=("e",)).labels("x").state(ODD_VALUE)
    pub.enum("e_one", "", states=("only",))
    pub.info("i_info", "", values={"version": ODD_VALUE, "pid": "x", "_": "u"})
    pub.info("i_empty", "", values={})
    pub.info("i_lab", "", labels=("version",)).labels("L").info({"version": "v"})
    pub.text("txt", "", size=64).set('"x" \u00fc \\')
    pub.text("txt_empty", "")
    pub.text("txt_lab", "", labels=("value",)).labels("q").set("x")


def check_openmetrics(text: str) -> dict[str, Any]:
    assert text.endswith("# EOF\n")
    return {f.name: f for f in parser.text_string_to_metric_families(text)}  # raises on anything invalid


def check_promtool(text: str) -> None:
    if PROMTOOL is None:
        pytest.skip("needs promtool (Debian package prometheus)")
    result = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    out = result.stdout + result.stderr
    # 0: valid; 3: valid with lint advice (empty help, a gauge named *_total: the declarations' choice).
    # 1 is a rejection ("text format parsing error").
    assert result.returncode in (0, 3) and "error" not in out, out


def sample_names(families: dict[str, Any], family: str) -> set[str]:
    return {s.name for s in families[family].samples}


@pytest.fixture(params=["one process", "aggregate"])
def scenario(request: pytest.FixtureRequest, statdir: str) -> Any:
    pubs = [statmap.Publisher("web", statdir)]
    declare_everything(pubs[0])
    if request.param == "aggregate":
        for _ in range(2):  # one folded into the archive, one closed and left in place
            p = statmap.Publisher("web", statdir)
            declare_everything(p)
            p.close()
            clean(statdir)
        closed = statmap.Publisher("web", statdir)
        declare_everything(closed)
        closed.close()
        other = statmap.Publisher("api", statdir)  # shares names with web: a publisher label
        declare_everything(other)
        pubs.append(other)
        gone = statmap.Publisher("batch", statdir)  # nobody alive: live-only gauges have no series
        declare_everything(gone)
        gone.close()
    yield statdir
    for p in pubs:
        p.close()


@pytest.mark.parametrize("include_text", [False, True])
def test_exposer_output_passes_strict_parsers(scenario: str, include_text: bool) -> None:
    exposer = Exposer(include_text=include_text)
    collection = collect(scenario)
    assert not collection.errors, collection.errors
    if any(f.publisher == "batch" for f in collection.families):
        empty = [f.name for f in collection.families if f.publisher == "batch" and not f.samples]
        assert "g_max_1" in empty  # a family with no series is exposed too
    families = check_openmetrics(exposer.openmetrics(collection))
    assert exposer.problems == [], exposer.problems
    check_promtool(exposer.prometheus(collection))
    # Negative bounds: buckets only (OpenMetrics: no _sum there, and _count only with _sum).
    assert sample_names(families, "h_neg") == {"h_neg_bucket", "h_neg_created"}
    assert sample_names(families, "h_neg_empty") == {"h_neg_empty_bucket", "h_neg_empty_created"}
    # A sum that is not a valid counter (negative, NaN): buckets only as well.
    assert sample_names(families, "h_negsum") == {"h_negsum_bucket", "h_negsum_created"}
    assert sample_names(families, "h_nansum") == {"h_nansum_bucket", "h_nansum_created"}
    assert "h_default_sum" in sample_names(families, "h_default")
    assert "h_inf_sum" in sample_names(families, "h_inf")
    assert sample_names(families, "s_neg") == {"s_neg_count", "s_neg_created"}  # summaries may have _count alone
    assert "c_lab_empty" not in families
    if include_text:
        assert families["txt"].type == "info"


def test_bridge_output_passes_strict_parsers(scenario: str) -> None:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

    registry = CollectorRegistry()
    registry.register(StatmapCollector(scenario, include_text=True))
    families = check_openmetrics(generate_openmetrics(registry).decode())  # type: ignore[no-untyped-call]
    check_promtool(generate_latest(registry).decode())
    assert sample_names(families, "h_neg") == {"h_neg_bucket", "h_neg_created"}
    assert sample_names(families, "s_neg") == {"s_neg_count", "s_neg_created"}
