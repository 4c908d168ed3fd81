"""OpenTelemetry export (otel.py): what arrives at an OTLP/HTTP receiver, decoded with opentelemetry-proto.

The receiver (tests/otlp_receiver.py) is a real HTTP server decoding each
request as ``ExportMetricsServiceRequest``. The last test runs gunicorn with
workers replaced every few requests, ``statmap serve --otlp`` pushing every
0.3 s and ``--clean`` folding the replaced workers: every push's total is at
most the requests answered, never below the previous push's, its start time
never moves, and the last equals the requests sent.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import statmap

pytest.importorskip("opentelemetry.sdk.metrics", reason="needs the otel extra (pip install 'statmap[otel]')")
pytest.importorskip("opentelemetry.proto", reason="needs opentelemetry-proto (the otel extra)")

from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

from .otlp_receiver import Receiver, attrs, metrics

CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
pytestmark = pytest.mark.once  # the values come from the collector, tested under both cells


def statmap_cmd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "statmap", *args], capture_output=True, text=True, timeout=120)


def test_push_otlp_maps_every_kind(statdir: str) -> None:
    pubs = [statmap.Publisher("web", statdir) for _ in range(2)]
    for n, pub in enumerate(pubs, 1):
        pub.counter("requests_total", "Requests", labels=("code",)).labels("200").inc(10 * n)
        pub.counter("cpu", "CPU", float=True, unit="seconds").inc(0.5)
        pub.histogram("latency", "Latency", buckets=(0.1, 1.0), unit="seconds").observe(0.05 if n == 1 else 0.5)
        pub.summary("size", "Size", unit="bytes").observe(100)
        pub.gauge("busy", "Busy", aggregate="sum").set(1)
        pub.gauge("heap", "Heap").set(n)
        pub.enum("phase", "Phase", states=("init", "run")).state("run")
        pub.info("build", "Build", values={"version": "1.2"})
    pubs[1].close()
    try:
        with Receiver() as r:
            done = statmap_cmd("push", "--otlp", r.url, "--dir", statdir, "--header", "x-api-key=k1")
            assert done.returncode == 0, done.stderr
            assert len(r.requests) == 1 and r.headers[0]["x-api-key"] == "k1"
            request = r.requests[0]
    finally:
        pubs[0].close()
    resource = attrs(request.resource_metrics[0].resource.attributes)
    assert resource["service.name"] == "web" and resource["statmap.publisher"] == "web"
    assert resource["host.name"] and "process.executable.name" in resource
    got = metrics(request)
    req = got[("web", "requests")]  # _total dropped: OTel names carry no suffix
    assert req.WhichOneof("data") == "sum" and req.sum.is_monotonic
    assert req.sum.aggregation_temporality == CUMULATIVE
    (point,) = req.sum.data_points
    assert point.as_int == 30 and attrs(point.attributes) == {"code": "200"}
    assert point.start_time_unix_nano < point.time_unix_nano
    cpu = got[("web", "cpu")]
    assert cpu.unit == "s" and cpu.sum.data_points[0].as_double == 1.0
    lat = got[("web", "latency")].histogram
    assert lat.aggregation_temporality == CUMULATIVE
    (h,) = lat.data_points
    assert (h.count, list(h.explicit_bounds), list(h.bucket_counts)) == (2, [0.1, 1.0], [1, 1, 0])
    assert h.sum == pytest.approx(0.55)
    size = got[("web", "size")]
    assert size.unit == "By" and size.histogram.data_points[0].count == 2
    assert size.histogram.data_points[0].sum == 200 and list(size.histogram.data_points[0].explicit_bounds) == []
    assert [p.as_double for p in got[("web", "busy")].gauge.data_points] == [2.0]  # sum (closed ones count): one point
    heap = got[("web", "heap")].gauge.data_points  # per process: one point each, process.pid
    assert sorted(p.as_double for p in heap) == [1.0, 2.0]
    # both processes are this one: the newest keeps the plain pid, the other gets PID:INSTANCE (as in /metrics)
    pids = sorted(str(attrs(p.attributes)["process.pid"]) for p in heap)
    assert pids[0] == str(os.getpid()) and pids[1].startswith(f"{os.getpid()}:")
    phase = sorted((attrs(p.attributes)["state"], p.as_int) for p in got[("web", "phase")].gauge.data_points)
    assert phase == [("init", 0), ("init", 0), ("run", 1), ("run", 1)]
    build = got[("web", "build")].gauge.data_points
    assert all(attrs(p.attributes)["version"] == "1.2" and p.as_int == 1 for p in build)


def test_a_refusing_endpoint_fails_the_push(statdir: str) -> None:
    pub = statmap.Publisher("web", statdir)
    pub.counter("requests").inc()
    try:
        with Receiver(refuse="no thanks") as r:
            done = statmap_cmd("push", "--otlp", r.url, "--dir", statdir, "--timeout", "5")
    finally:
        pub.close()
    assert done.returncode == 1
    assert "OTLP export to" in done.stderr and "400" in done.stderr


def test_the_producer_feeds_an_sdk_exporter(statdir: str) -> None:
    from opentelemetry.sdk.metrics.export import MetricExportResult

    from statmap.otel import StatmapMetricProducer, make_exporter

    pub = statmap.Publisher("svc", statdir)
    pub.counter("jobs").inc(4)
    producer = StatmapMetricProducer(statdir, resource={"deployment.environment": "test"})
    try:
        with Receiver() as r:
            exporter = make_exporter(r.url)
            assert exporter.export(producer.produce()) is MetricExportResult.SUCCESS
            exporter.shutdown()
            (request,) = r.requests
    finally:
        producer.close()
        pub.close()
    assert attrs(request.resource_metrics[0].resource.attributes)["deployment.environment"] == "test"
    assert metrics(request)[("svc", "jobs")].sum.data_points[0].as_int == 4


@pytest.mark.external
@pytest.mark.slow
def test_serve_otlp_under_gunicorn_worker_churn(statdir: str, tmp_path: Path) -> None:
    pytest.importorskip("gunicorn", reason="needs gunicorn (the test extra)")
    from .test_gunicorn import APP_DIR, free_port, get

    requests = 200
    port = free_port()
    env = dict(os.environ, STATMAP_DIR=statdir)
    log = (tmp_path / "gunicorn.log").open("w")
    gunicorn = subprocess.Popen(
        [
            sys.executable, "-m", "gunicorn", "--chdir", str(APP_DIR), "-w", "3", "-b", f"127.0.0.1:{port}",
            "--max-requests", "15", "--max-requests-jitter", "5", "--no-control-socket", "--graceful-timeout", "5",
            "app:app",
        ],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    with Receiver() as r:
        serve = subprocess.Popen(
            [
                sys.executable, "-m", "statmap", "serve", "--dir", statdir, "--port", "0", "--otlp", r.url,
                "--otlp-interval", "0.3", "--clean", "--clean-interval", "0.5",
            ],
            stdout=subprocess.DEVNULL, stderr=(tmp_path / "serve.log").open("w"),
        )  # fmt: skip
        answered = 0
        try:
            for i in range(1, requests + 1):
                assert get(port, f"/item/{i}") == 200
                answered = i
                if i % 20 == 0:
                    time.sleep(0.35)  # let a push see this point
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if r.requests and _requests_total(r.requests[-1]) == requests:
                    break
                time.sleep(0.2)
        finally:
            serve.send_signal(signal.SIGTERM)
            serve.wait(timeout=30)
            gunicorn.send_signal(signal.SIGTERM)
            gunicorn.wait(timeout=30)
            log.close()
        pushes = list(r.requests)
    totals = [_requests_total(req) for req in pushes]
    starts = {s for req in pushes for s in _starts(req)}
    assert totals[-1] == answered == requests, totals[-5:]
    assert all(b >= a for a, b in itertools.pairwise(totals)), totals  # never backwards
    assert len({t for t in totals if t}) > 5  # many pushes saw the total move
    assert len(starts) == 1, starts  # the start time stayed put while workers were replaced
    ended = statmap_cmd("ls", "--dir", statdir, "--json")
    assert '"absorbed_instances"' in ended.stdout  # workers really were replaced and folded
    assert "Traceback" not in (tmp_path / "serve.log").read_text()


def _requests_total(request: Any) -> int:
    m = metrics(request).get(("web", "requests"))
    return sum(p.as_int for p in m.sum.data_points) if m is not None else 0


def _starts(request: Any) -> set[int]:
    m = metrics(request).get(("web", "requests"))
    return {p.start_time_unix_nano for p in m.sum.data_points} if m is not None else set()


def test_middleware_with_otel_semantic_convention_names(statdir: str) -> None:
    from statmap.middleware import WSGIMiddleware

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        status = "404 Not Found" if environ["PATH_INFO"] == "/missing" else "200 OK"
        environ["statmap.route"] = environ["PATH_INFO"]
        start_response(status, [("Content-Type", "text/plain")])
        return [b"ok"]

    wrapped = WSGIMiddleware(app, publisher="web", directory=statdir, names="otel")
    for path in ("/a", "/a", "/missing"):
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path}
        body = wrapped(environ, lambda status, headers, exc_info=None: None)
        list(body)
        getattr(body, "close", lambda: None)()
    exported = statmap_cmd("export", "--dir", statdir).stdout
    assert (
        'http_server_request_duration_seconds_count{http_request_method="GET",http_route="/a",'
        'http_response_status_code="200"} 2\n'
    ) in exported
    assert "http_server_active_requests 0.0\n" in exported and "http_requests_total" not in exported
    with Receiver() as r:
        assert statmap_cmd("push", "--otlp", r.url, "--dir", statdir).returncode == 0
        got = metrics(r.requests[0])
    wrapped.metrics.publisher.close()
    duration = got[("web", "http.server.request.duration")]
    assert duration.unit == "s"
    points = {
        (a["http.request.method"], a["http.route"], a["http.response.status_code"]): p.count
        for p in duration.histogram.data_points
        for a in [attrs(p.attributes)]
    }
    assert points == {("GET", "/a", 200): 2, ("GET", "/missing", 404): 1}
    assert list(duration.histogram.data_points[0].explicit_bounds)[:3] == [0.005, 0.01, 0.025]
    assert ("web", "http.server.active_requests") in got
