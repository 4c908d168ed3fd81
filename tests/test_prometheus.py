"""A real Prometheus scrapes ``statmap serve``; PromQL gives back what the test's workers produced.

The test starts Prometheus (Debian package ``prometheus``) on loopback with a
generated configuration and a 1 s scrape interval, three worker processes
publishing a counter and a histogram, and ``statmap serve`` (with a token, as
Prometheus' ``authorization`` sends it). It then asks Prometheus' HTTP API:

* ``sum(jobs_total)``: exactly the increments the workers made;
* ``sum(rate(jobs_total[W]))`` over a window from before the workers started
  to after they stopped, times W: the same total, within Prometheus'
  extrapolation at the window's end (one scrape interval);
* ``sum(latency_seconds_count)``: exactly the observations made.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .test_server_support import Server, Worker, free_port, wait_for

PROMETHEUS = shutil.which("prometheus")
pytestmark = [
    pytest.mark.external,
    pytest.mark.once,  # Prometheus scraping the server: the values come from the collector, tested under both cells
    pytest.mark.skipif(PROMETHEUS is None, reason="needs the prometheus binary (Debian package prometheus)"),
]

TOKEN = "prom-scrape-token"


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Any]:
    """Starts later, once the exporter's port is known: returns a function(target) -> query function."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(target: str, *flags: str) -> Any:
        port = free_port()
        (tmp_path / "token").write_text(TOKEN)
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n"
            "  scrape_interval: 1s\n"
            "  scrape_timeout: 1s\n"
            "  evaluation_interval: 1s\n"
            "scrape_configs:\n"
            "  - job_name: statmap\n"
            "    authorization:\n"
            f"      credentials_file: {tmp_path / 'token'}\n"
            "    static_configs:\n"
            f"      - targets: ['{target}']\n"
        )
        log = open(tmp_path / "prometheus.log", "wb")
        proc = subprocess.Popen(
            [
                str(PROMETHEUS),
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
                *flags,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
        procs.append(proc)
        base = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError("prometheus exited: " + (tmp_path / "prometheus.log").read_text()[-2000:])
            try:
                with urllib.request.urlopen(base + "/-/ready", timeout=2) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        wait_for(ready, timeout=60, what="prometheus to be ready")

        def query(promql: str, at: float | None = None) -> list[dict[str, Any]]:
            params = {"query": promql}
            if at is not None:
                params["time"] = f"{at:.3f}"
            url = base + "/api/v1/query?" + urllib.parse.urlencode(params)
            with urllib.request.urlopen(url, timeout=10) as r:
                doc = json.load(r)
            assert doc["status"] == "success", doc
            return doc["data"]["result"]  # type: ignore[no-any-return]

        def targets() -> list[dict[str, Any]]:
            with urllib.request.urlopen(base + "/api/v1/targets", timeout=10) as r:
                return json.load(r)["data"]["activeTargets"]  # type: ignore[no-any-return]

        query.targets = targets  # type: ignore[attr-defined]
        query.base = base  # type: ignore[attr-defined]  # for other APIs (test_prometheus_exemplars.py)
        return query

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def scalar(result: list[dict[str, Any]]) -> float | None:
    if not result:
        return None
    return float(result[0]["value"][1])


def test_prometheus_scrapes_statmap_serve(statdir: str, prometheus: Any) -> None:
    workers = [Worker(statdir, "promtest") for _ in range(3)]
    server = Server(statdir, "--token", TOKEN, env=dict(os.environ))
    try:
        before = time.time()
        query = prometheus(f"127.0.0.1:{server.port}")

        def scraped_at(value: float) -> bool:
            return scalar(query("sum(jobs_total)")) == value and len(query("jobs_total")) == 1

        wait_for(lambda: scraped_at(0), timeout=60, what="a first scrape (jobs_total at 0)")
        health = query.targets()  # type: ignore[attr-defined]
        assert [t["health"] for t in health] == ["up"], health
        # Prometheus asked for OpenMetrics (its Accept header), so it got _created: when the totals started.
        created = scalar(query("min(jobs_created)"))
        assert created is not None and before - 60 < created <= time.time()

        # The workers produce: worker i adds 100 * (i + 1) per round, 10 rounds over 2-3 s.
        expected = 0
        observations = 0
        for _round in range(10):
            for i, w in enumerate(workers):
                w(f"inc {100 * (i + 1)}")
                w(f"observe {0.005 * (i + 1)}")
                expected += 100 * (i + 1)
                observations += 1
            time.sleep(0.25)
        for w in workers:
            w("close")  # closed processes still count: the totals stay
        assert expected == 6000

        wait_for(lambda: scraped_at(expected), timeout=30, what=f"sum(jobs_total) == {expected}")
        time.sleep(2.5)  # a few more scrapes at the final value
        now = time.time()
        assert scalar(query("sum(jobs_total)", now)) == expected
        assert scalar(query("sum(latency_seconds_count)", now)) == observations
        assert (
            scalar(query('sum(latency_seconds_bucket{le="0.01"})', now)) == 20
        )  # 0.005 s and 0.01 s (le is inclusive)

        # A rate over a window from before the first scrape to now, times the window: the total.
        window = math.ceil(now - before) + 2
        rate = scalar(query(f"sum(rate(jobs_total[{window}s]))", now))
        assert rate is not None
        produced = rate * window
        assert expected * 0.98 <= produced <= expected * 1.15, (produced, expected, window)
        # And while the workers were busy, the rate was well above zero; after, it is zero.
        assert scalar(query("sum(rate(jobs_total[2s]))", now)) == 0
        increase = scalar(query(f"sum(increase(jobs_total[{window}s]))", now))
        assert increase is not None and expected * 0.98 <= increase <= expected * 1.15
    finally:
        for w in workers:
            w.stop()
        code, _, err = server.stop()
        assert code == 0, err


def test_prometheus_scrapes_native_histograms_through_protobuf(statdir: str, prometheus: Any) -> None:
    """With native histograms on, Prometheus negotiates protobuf: exponential histograms arrive native."""
    import random

    import statmap
    from statmap.collect import Collector

    rnd = random.Random(42)
    pub = statmap.Publisher("native", statdir)
    lat = pub.histogram("lat", "Latency", unit="seconds", buckets=statmap.Exponential(160))
    for _ in range(5000):
        lat.observe(rnd.lognormvariate(-3, 1.5))
    pub.counter("jobs", "Jobs").inc(42)
    pub.gauge("temperature", "Temperature").set(-3.5)
    size = pub.histogram("size", "Sizes", unit="bytes", buckets=(10, 100))
    for v in (5, 50, 500):
        size.observe(v)
    pub.summary("work", "Work", unit="seconds").observe(2.5)
    server = Server(statdir, "--token", TOKEN, env=dict(os.environ))
    try:
        query = prometheus(f"127.0.0.1:{server.port}", "--enable-feature=native-histograms")
        wait_for(lambda: scalar(query("histogram_count(lat_seconds)")) == 5000, timeout=60, what="a native scrape")
        value = next(f for f in Collector(statdir).collect().families if f.name == "lat").samples[0].value
        base = 2**2 ** -min(value.scale, 8)
        for q in (0.5, 0.9, 0.99):
            ours = value.percentile(q)
            theirs = scalar(query(f"histogram_quantile({q}, lat_seconds)"))
            assert theirs is not None and abs(theirs - ours) <= (base - 1) * ours * (1 + 1e-9), (q, theirs, ours)
        assert scalar(query("histogram_sum(lat_seconds)")) == value.sum
        # the classic kinds arrive through protobuf as before
        assert scalar(query("jobs_total")) == 42
        assert scalar(query("temperature")) == -3.5
        assert scalar(query('size_bytes_bucket{le="100.0"}')) == 2 and scalar(query("size_bytes_count")) == 3
        assert scalar(query("work_seconds_count")) == 1 and scalar(query("work_seconds_sum")) == 2.5
        assert not query("lat_seconds_bucket")  # native only: no classic series
    finally:
        pub.close()
        code, _, err = server.stop()
        assert code == 0, err
