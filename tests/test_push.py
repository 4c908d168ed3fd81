"""``statmap push`` and ``statmap.push``: a real Pushgateway (started here), a real Prometheus scraping it.

Also: a gateway that refuses (a 4xx: exit 1, the gateway's reason, no retry), one that is down
(retries, then exit 1), one that fails twice with 503 then accepts (the retries get it through),
and a finished process's file pushed alone (post-mortem).
"""

from __future__ import annotations

import http.server
import json
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import statmap
from statmap.pushgateway import PushError, gateway_url

from .test_server_support import free_port, wait_for

PUSHGATEWAY = shutil.which("prometheus-pushgateway")
PROMETHEUS = shutil.which("prometheus")
_skip_without_gateway = pytest.mark.skipif(
    PUSHGATEWAY is None, reason="needs prometheus-pushgateway (Debian package prometheus-pushgateway)"
)


def needs_gateway(test: Any) -> Any:
    """A test against the real Pushgateway: external tier, skipped (a failure in CI) without it."""
    return pytest.mark.external(_skip_without_gateway(test))


pytestmark = pytest.mark.once  # what is pushed comes from the collector, tested under both cells


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _ready(proc: subprocess.Popen[bytes], url: str, log: Path) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"{url}: exited: {log.read_text()[-2000:]}")
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[str]:
    """A Pushgateway on a free loopback port, persisting into the test's directory only."""
    port = free_port()
    log = tmp_path / "pushgateway.log"
    proc = subprocess.Popen(
        [
            str(PUSHGATEWAY),
            f"--web.listen-address=127.0.0.1:{port}",
            f"--persistence.file={tmp_path / 'pushgateway.data'}",
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(proc, base + "/-/ready", log), timeout=30, what="the pushgateway")
        yield base
    finally:
        _stop(proc)


def gateway_samples(base: str) -> dict[str, float]:
    """``name{labels}`` -> value of what the gateway serves (its own metrics left out)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name.startswith(("go_", "process_", "pushgateway_", "push_")):
                continue
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}"] = s.value
    return out


def statmap_cmd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "statmap", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def batch(statdir: str) -> Iterator[str]:
    """What two processes of a finished batch job left: one closed file, one still open."""
    ended = statmap.Publisher("batch", statdir)
    ended.counter("rows", "Rows written").inc(40)
    ended.histogram("step", "Step time", buckets=(0.1, 1.0), unit="seconds").observe(0.3)
    ended.close()
    live = statmap.Publisher("batch", statdir)
    live.counter("rows", "Rows written").inc(2)
    live.histogram("step", "Step time", buckets=(0.1, 1.0), unit="seconds").observe(0.05)
    yield statdir
    live.close()


@needs_gateway
def test_push_a_directory_with_grouping(gateway: str, batch: str) -> None:
    done = statmap_cmd(
        "push", "--gateway", gateway, "--job", "nightly", "--grouping", "instance=host/7", "--dir", batch
    )
    assert done.returncode == 0, done.stderr
    assert "/metrics/job/nightly/instance@base64/" in done.stdout
    got = gateway_samples(gateway)
    assert got["rows_total{instance=host/7,job=nightly}"] == 42
    assert got["step_seconds_count{instance=host/7,job=nightly}"] == 2
    assert got["step_seconds_bucket{instance=host/7,job=nightly,le=0.1}"] == 1
    # PUT replaces the group: a second push with fewer metrics leaves only those
    only = statmap_cmd("push", "--gateway", gateway, "--job", "nightly", "--grouping", "instance=host/7",
                       "--dir", batch, "--match", "^rows$")  # fmt: skip
    assert only.returncode == 0, only.stderr
    assert sorted(k for k in gateway_samples(gateway) if "host/7" in k) == ["rows_total{instance=host/7,job=nightly}"]
    statmap.push(gateway, "nightly", grouping={"instance": "host/7"}, directory=batch, publishers=["nobody"])
    assert not any("instance=host/7" in k for k in gateway_samples(gateway))


@needs_gateway
def test_push_a_finished_process_file_alone(gateway: str, batch: str) -> None:
    closed = [p for p in Path(batch).iterdir() if statmap.open(str(p)).snapshot().status == "closed"]
    assert len(closed) == 1
    result = statmap.push(gateway, "postmortem", file=str(closed[0]))
    assert result.status == 200 and result.attempts == 1
    assert gateway_samples(gateway)["rows_total{instance=,job=postmortem}"] == 40


@needs_gateway
def test_a_refusal_is_reported_not_retried(gateway: str, batch: str, statdir: str) -> None:
    bad = statmap_cmd("push", "--gateway", gateway, "--job", "j", "--grouping", "__bad=1", "--dir", batch)
    assert bad.returncode == 1
    assert "answered 400" in bad.stderr and "improper label name" in bad.stderr and "not retried" in bad.stderr
    # a push inconsistent with what the gateway holds: rows_total is a counter there, a gauge here
    assert statmap_cmd("push", "--gateway", gateway, "--job", "one", "--dir", batch).returncode == 0
    other = Path(statdir).parent / "other"
    other.mkdir(mode=0o700)
    pub = statmap.Publisher("other", str(other))
    try:
        pub.gauge("rows_total", "not a counter").set(1)
        t = time.monotonic()
        with pytest.raises(PushError, match=r"answered 400 .*inconsistent.*not retried"):
            statmap.push(gateway, "two", directory=str(other), backoff=5)
        assert time.monotonic() - t < 5  # no backoff sleep: refused at once
    finally:
        pub.close()


def test_an_unreachable_gateway_is_retried_then_fails(batch: str) -> None:
    port = free_port()  # nothing listens there
    t = time.monotonic()
    done = statmap_cmd("push", "--gateway", f"127.0.0.1:{port}", "--job", "j", "--dir", batch, "--retries", "2")
    assert done.returncode == 1
    assert "gave up after 3 attempts" in done.stderr and "refused" in done.stderr.lower()
    assert time.monotonic() - t >= 0.5 + 1.0  # backoff 0.5 s, then 1 s


def test_server_errors_are_retried_until_accepted(batch: str) -> None:
    seen: list[tuple[str, str, bytes]] = []

    class Flaky(http.server.BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append((self.path, self.headers["Authorization"], body))
            self.send_response(503 if len(seen) <= 2 else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = statmap.push(
            f"http://127.0.0.1:{server.server_port}", "flaky", directory=batch, backoff=0.05,
            headers={"Authorization": "Bearer t"},
        )  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
    assert result.attempts == 3 and result.status == 200
    assert [p for p, _, _ in seen] == ["/metrics/job/flaky"] * 3
    assert all(auth == "Bearer t" for _, auth, _ in seen)
    assert b"rows_total 42\n" in seen[-1][2]


def test_gateway_urls() -> None:
    assert gateway_url("gw:9091", "j") == "http://gw:9091/metrics/job/j"
    assert gateway_url("https://gw/prefix/", "a b", {"x": ""}) == (
        "https://gw/prefix/metrics/job@base64/YSBi/x@base64/="
    )
    with pytest.raises(ValueError, match="grouping label"):
        gateway_url("gw", "j", {"bad-name": "1"})
    with pytest.raises(ValueError, match="expected http"):
        gateway_url("ftp://gw", "j")


@needs_gateway
@pytest.mark.skipif(PROMETHEUS is None, reason="needs the prometheus binary (Debian package prometheus)")
def test_prometheus_scrapes_what_was_pushed(gateway: str, batch: str, tmp_path: Path) -> None:
    assert statmap_cmd("push", "--gateway", gateway, "--job", "nightly", "--dir", batch).returncode == 0
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n  - job_name: pushgateway\n    honor_labels: true\n"
        f"    static_configs:\n      - targets: ['{urllib.parse.urlsplit(gateway).netloc}']\n"
    )
    log = tmp_path / "prometheus.log"
    proc = subprocess.Popen(
        [
            str(PROMETHEUS), f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
        ],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=tmp_path,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(proc, base + "/-/ready", log), timeout=60, what="prometheus")

        def query() -> Any:
            url = base + "/api/v1/query?" + urllib.parse.urlencode({"query": 'rows_total{job="nightly"}'})
            with urllib.request.urlopen(url, timeout=10) as r:
                return json.load(r)["data"]["result"]

        result = wait_for(query, timeout=60, what="prometheus to scrape the gateway")
        assert float(result[0]["value"][1]) == 42
        assert result[0]["metric"]["job"] == "nightly"  # the pushed job, kept by honor_labels
    finally:
        _stop(proc)
