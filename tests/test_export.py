"""Exposition: OpenMetrics validated strictly by prometheus_client's parser, Prometheus text by promtool."""

from __future__ import annotations

import json
import math
import shutil
import subprocess

import pytest

import statmap
from statmap.collect import collect
from statmap.expose import Exposer, StatmapCollector, format_float, openmetrics, prometheus, register

parser = pytest.importorskip("prometheus_client.openmetrics.parser")


def publish_everything(statdir: str, name: str = "web") -> statmap.Publisher:
    pub = statmap.Publisher(name, statdir)
    req = pub.counter("requests_total", "Requests served", labels=("method", "path"))
    req.labels("GET", "/").inc(3)
    req.labels("POST", 'a "quoted" \\ path\nwith newline').inc()
    pub.counter("cpu", "CPU time", float=True, unit="seconds").inc(1.5)
    pub.gauge("in_flight", "Requests in flight", aggregate="sum").set(2)
    pub.gauge("memory", "Resident memory", unit="bytes").set(1e6)
    h = pub.histogram("latency", "Request latency", unit="seconds", buckets=(0.01, 0.1, 1.0, 1e6))
    for v in (0.005, 0.05, 0.5, 5.0):
        h.observe(v)
    pub.summary("payload", "Payload size", unit="bytes").observe(100)
    pub.enum("state", "Worker state", states=("starting", "serving")).state("serving")
    pub.info("build_info", "Build information", values={"version": "1.2.3", "commit": "abc"})
    pub.text("last_path", "Last path", size=32).set('/x"y')
    return pub


def parse(text: str) -> dict[str, object]:
    return {f.name: f for f in parser.text_string_to_metric_families(text)}


def test_openmetrics_passes_the_strict_parser(statdir: str) -> None:
    pub = publish_everything(statdir)
    try:
        text = openmetrics(collect(statdir), include_text=True)
    finally:
        pub.close()
    assert text.endswith("# EOF\n")
    families = parse(text)
    assert set(families) == {
        "requests", "cpu_seconds", "in_flight", "memory_bytes", "latency_seconds", "payload_bytes",
        "state", "build", "last_path",
    }  # fmt: skip
    req = families["requests"]
    assert req.type == "counter"  # type: ignore[attr-defined]
    values = {(s.name, s.labels.get("path")): s.value for s in req.samples}  # type: ignore[attr-defined]
    assert values[("requests_total", "/")] == 3
    assert values[("requests_total", 'a "quoted" \\ path\nwith newline')] == 1
    assert ("requests_created", "/") in values
    lat = families["latency_seconds"]
    assert lat.type == "histogram" and lat.unit == "seconds"  # type: ignore[attr-defined]
    buckets = [(s.labels["le"], s.value) for s in lat.samples if s.name.endswith("_bucket")]  # type: ignore[attr-defined]
    assert buckets == [("0.01", 1), ("0.1", 2), ("1.0", 3), ("1e+06", 4), ("+Inf", 4)]
    assert families["state"].type == "stateset"  # type: ignore[attr-defined]
    states = {s.labels["state"]: s.value for s in families["state"].samples}  # type: ignore[attr-defined]
    assert states == {"starting": 0, "serving": 1}
    build = families["build"].samples[0]  # type: ignore[attr-defined]
    assert build.name == "build_info" and build.labels["version"] == "1.2.3" and "pid" in build.labels
    assert families["last_path"].samples[0].labels["value"] == '/x"y'  # type: ignore[attr-defined]
    assert families["payload_bytes"].type == "summary"  # type: ignore[attr-defined]
    mem = families["memory_bytes"].samples[0]  # type: ignore[attr-defined]
    assert mem.value == 1e6 and "pid" in mem.labels  # per-process gauge
    assert families["in_flight"].samples[0].labels == {}  # type: ignore[attr-defined]


def test_text_is_left_out_by_default(statdir: str) -> None:
    pub = publish_everything(statdir)
    try:
        assert "last_path" not in parse(openmetrics(collect(statdir)))
    finally:
        pub.close()


def test_shared_names_get_a_publisher_label(statdir: str) -> None:
    web = statmap.Publisher("web", statdir)
    web.counter("requests", "Requests").inc(2)
    web.counter("only_web", "x").inc()
    api = statmap.Publisher("api", statdir)
    api.counter("requests", "Requests").inc(5)
    try:
        c = collect(statdir)
        families = parse(openmetrics(c))
        totals = {s.labels["publisher"]: s.value for s in families["requests"].samples if s.name == "requests_total"}  # type: ignore[attr-defined]
        assert totals == {"web": 2, "api": 5}
        assert families["only_web"].samples[0].labels == {}  # type: ignore[attr-defined]
        always = parse(openmetrics(c, publisher_label="always"))
        assert always["only_web"].samples[0].labels == {"publisher": "web"}  # type: ignore[attr-defined]
    finally:
        web.close()
        api.close()


def test_clashing_names_are_left_out_and_reported(statdir: str) -> None:
    pub = statmap.Publisher("web", statdir)
    pub.counter("jobs", "Jobs").inc()
    pub.gauge("jobs_total", "A gauge whose name a counter's sample uses").set(1)
    other = statmap.Publisher("api", statdir)
    other.gauge("workers", "x").set(1)
    web_workers = statmap.Publisher("web2", statdir)
    web_workers.counter("workers", "Same name, another type").inc()
    try:
        exposer = Exposer()
        text = exposer.openmetrics(collect(statdir))
        families = parse(text)  # still valid
        assert families["jobs"].type == "counter" and "jobs_total" not in families  # type: ignore[attr-defined]
        assert families["workers"].type == "gauge"  # type: ignore[attr-defined]
        assert len(exposer.problems) == 2, exposer.problems
        assert any("jobs_total" in p and "clashes" in p for p in exposer.problems)
        assert any("web2:workers" in p for p in exposer.problems)
    finally:
        pub.close()
        other.close()
        web_workers.close()


def test_match_filters_families(statdir: str) -> None:
    pub = publish_everything(statdir)
    try:
        assert set(parse(openmetrics(collect(statdir), match="^lat"))) == {"latency_seconds"}
    finally:
        pub.close()


def test_json_is_strict_json(statdir: str) -> None:
    pub = publish_everything(statdir)
    pub.gauge("broken", "NaN and infinities").set(math.nan)
    pub.gauge("big", "x", aggregate="max").set(math.inf)
    try:
        doc = json.loads(Exposer().json(collect(statdir)))
    finally:
        pub.close()
    metrics = {m["name"]: m for m in doc["metrics"]}
    assert metrics["requests_total"]["series"][0]["value"] == 3
    assert metrics["big"]["series"][0]["value"] == "+Inf"
    assert metrics["broken"]["series"][0]["value"] == "NaN"
    assert metrics["latency"]["series"][0]["value"]["buckets"][-1] == ["+Inf", 4]
    assert doc["files"][0]["state"] == "closed" or doc["files"][0]["state"] == "alive"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="needs promtool (Debian package prometheus)")
@pytest.mark.external
def test_prometheus_text_passes_promtool(statdir: str) -> None:
    pub = publish_everything(statdir)
    try:
        text = prometheus(collect(statdir))
    finally:
        pub.close()
    result = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# EOF" not in text and "_created" not in text


def test_prometheus_client_collector(statdir: str) -> None:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

    pub = publish_everything(statdir)
    try:
        registry = CollectorRegistry()
        register(statdir, registry)
        families = parse(generate_openmetrics(registry).decode())
        text = generate_latest(registry).decode()
    finally:
        pub.close()
    assert families["requests"].samples[0].value == 3  # type: ignore[attr-defined]
    assert families["latency_seconds"].type == "histogram"  # type: ignore[attr-defined]
    assert "requests_total{" in text
    assert isinstance(StatmapCollector(statdir).describe(), list)


@pytest.mark.parametrize(
    ("value", "text"),
    [(1.0, "1.0"), (0.005, "0.005"), (1e6, "1e+06"), (1234567.0, "1.234567e+06"), (math.inf, "+Inf"), (-2.5, "-2.5")],
)
def test_numbers_are_written_as_prometheus_does(value: float, text: str) -> None:
    assert format_float(value) == text
