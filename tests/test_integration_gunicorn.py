"""End to end: examples/flask_app.py under gunicorn (examples/gunicorn.conf.py, 4 workers) behind the WSGI middleware.

A known mix of requests (methods, statuses, routes, a streamed response,
unknown methods and paths) is sent from several threads while gunicorn
replaces workers (``max_requests``); the scraped ``/metrics`` (from the
``statmap serve`` that the configuration starts, when this statmap has one,
else ``statmap export``) must match the mix exactly: every
``http_requests_total`` series, every latency histogram's count, the
in-flight gauge. After gunicorn stops, ``on_exit`` has folded every worker
into the archive and the totals are unchanged.
"""

from __future__ import annotations

import collections
import concurrent.futures
import http.client
import importlib.util
import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import stop_server

pytest.importorskip("gunicorn")
pytest.importorskip("flask")
parser = pytest.importorskip("prometheus_client.openmetrics.parser")

pytestmark = pytest.mark.external  # a real gunicorn

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
HAS_SERVE = importlib.util.find_spec("statmap.server") is not None
WORKERS = 4
MAX_REQUESTS = 30  # each worker is replaced after 30-32 requests: several replacements during the mix

TEMPLATE = "/items/<int:item_id>"

# (method, path, expected status, expected route label, count)
MIX: list[tuple[str, str, int, str, int]] = [
    ("GET", "/", 200, "/", 30),
    ("HEAD", "/", 200, "/", 4),
    *[("GET", f"/items/{i}", 200, TEMPLATE, 1) for i in range(1, 41)],
    ("GET", "/items/5000", 404, TEMPLATE, 5),  # a 4xx on a known route
    ("POST", "/items", 201, "/items", 12),
    ("DELETE", "/items/3", 204, TEMPLATE, 7),
    ("OPTIONS", "/items", 200, "/items", 2),
    ("GET", "/old", 302, "/old", 6),
    ("GET", "/fail", 500, "/fail", 4),  # the view raises; Flask answers 500
    ("GET", "/stream?chunks=4&delay=0.02", 200, "/stream", 5),
    *[("GET", f"/missing/{i}", 404, "other", 1) for i in range(6)],  # raw paths never become labels
    ("PUT", "/items/1", 405, "other", 3),  # no rule matched
    ("PURGE", "/", 405, "other", 2),  # an unknown method is "other"
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def request(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    for _attempt in range(100):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
            response = conn.getresponse()
            return response.status, response.read()
        except ConnectionRefusedError:  # never reached the server: safe to retry
            time.sleep(0.05)
        finally:
            conn.close()
    raise AssertionError(f"no answer for {method} {path}")


def wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"nothing listens on {port}\n{log.read_text()}"
            time.sleep(0.05)


def scrape(statdir: str, serve_port: int) -> dict[str, Any]:
    """The exposition as {family name: family}, from statmap serve's /metrics or statmap export."""
    if serve_port:
        conn = http.client.HTTPConnection("127.0.0.1", serve_port, timeout=30)
        conn.request("GET", "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        response = conn.getresponse()
        text = response.read().decode()
        conn.close()
        assert response.status == 200, text
        assert response.getheader("Content-Type", "").startswith("application/openmetrics-text"), response.getheaders()
    else:
        text = subprocess.run(
            [sys.executable, "-m", "statmap", "export", "--dir", statdir, "--format", "openmetrics"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    return {f.name: f for f in parser.text_string_to_metric_families(text)}


def settled(statdir: str, serve_port: int, answered: int) -> dict[str, Any]:
    """A scrape once every answered request is recorded.

    A sync worker records a request when the server closes the response,
    just after the client has read its last byte; the middleware decrements
    the in-flight gauge after recording, so 0 in flight and ``answered``
    requests is the settled state.
    """
    deadline = time.monotonic() + 10
    while True:
        families = scrape(statdir, serve_port)
        total = sum(counts(families).values()) if "http_requests" in families else 0
        if in_flight(families) == 0 and total == answered:
            return families
        assert total <= answered, (total, answered)
        assert time.monotonic() < deadline, (in_flight(families), total, answered)
        time.sleep(0.02)


def counts(families: dict[str, Any]) -> dict[tuple[str, str, str], int]:
    out = {}
    for s in families["http_requests"].samples:
        if s.name == "http_requests_total":
            out[(s.labels["method"], s.labels["route"], s.labels["status"])] = int(s.value)
    return out


def durations(families: dict[str, Any]) -> dict[tuple[str, str], tuple[int, float]]:
    fam = families["http_request_duration_seconds"]
    count = {(s.labels["method"], s.labels["route"]): int(s.value) for s in fam.samples if s.name.endswith("_count")}
    total = {(s.labels["method"], s.labels["route"]): s.value for s in fam.samples if s.name.endswith("_sum")}
    inf = {
        (s.labels["method"], s.labels["route"]): int(s.value)
        for s in fam.samples
        if s.name.endswith("_bucket") and s.labels["le"] == "+Inf"
    }
    assert inf == count
    return {k: (count[k], total[k]) for k in count}


def in_flight(families: dict[str, Any]) -> float:
    return float(families["http_requests_in_flight"].samples[0].value)


def web_files(statdir: str) -> collections.Counter[str]:
    from statmap.collect import collect

    return collections.Counter(f.status for f in collect(statdir).files if f.name == "web")


def test_flask_under_gunicorn_metrics_match_the_mix(statdir: str, tmp_path: Path) -> None:
    port = free_port()
    serve_port = free_port() if HAS_SERVE else 0
    env = dict(
        os.environ,
        STATMAP_DIR=statdir,
        GUNICORN_BIND=f"127.0.0.1:{port}",
        WEB_CONCURRENCY=str(WORKERS),
        GUNICORN_MAX_REQUESTS=str(MAX_REQUESTS),
        STATMAP_SERVE_PORT=str(serve_port),
        STATMAP_SERVE_ARGS="--max-age 0",  # every scrape collects afresh (the default shares one for 0.5 s)
    )
    log_path = tmp_path / "gunicorn.log"
    log = open(log_path, "w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            str(EXAMPLES / "gunicorn.conf.py"),
            "--chdir",
            str(EXAMPLES),
            "--no-control-socket",
            "flask_app:app",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    expected: collections.Counter[tuple[str, str, str]] = collections.Counter()
    expected_durations: collections.Counter[tuple[str, str]] = collections.Counter()
    try:
        wait_listening(port, server, log_path)
        if HAS_SERVE:
            wait_listening(serve_port, server, log_path)
        # the four workers each publish from their own file
        deadline = time.monotonic() + 30
        while web_files(statdir)["alive"] < WORKERS:
            assert time.monotonic() < deadline, web_files(statdir)
            time.sleep(0.05)
        assert web_files(statdir)["alive"] == WORKERS
        families = scrape(statdir, serve_port)
        assert in_flight(families) == 0

        # A slow streamed response: in flight while it streams, its latency covers the whole stream.
        slow: dict[str, Any] = {}
        slow_thread = threading.Thread(
            target=lambda: slow.update(answer=request(port, "GET", "/stream?chunks=15&delay=0.1"))
        )
        slow_thread.start()
        deadline = time.monotonic() + 10
        while in_flight(scrape(statdir, serve_port)) != 1:
            assert time.monotonic() < deadline, "the streaming request never showed in flight"
            time.sleep(0.05)

        jobs = [(m, p, status, route) for m, p, status, route, n in MIX for _ in range(n)]
        random.Random(5).shuffle(jobs)

        def run(job: tuple[str, str, int, str]) -> tuple[tuple[str, str, int, str], int]:
            method, path, _, _ = job
            body = b'{"id": 9}' if method == "POST" else None
            return job, request(port, method, path, body)[0]

        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            for (method, path, status, route), got in pool.map(run, jobs):
                assert got == status, (method, path, got)
                label = method if method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS") else "other"
                expected[(label, route, f"{status // 100}xx")] += 1
                expected_durations[(label, route)] += 1
        slow_thread.join(timeout=30)
        assert slow["answer"][0] == 200 and slow["answer"][1].count(b"chunk") == 15
        expected[("GET", "/stream", "2xx")] += 1
        expected_durations[("GET", "/stream")] += 1
        answered = len(jobs) + 1

        families = settled(statdir, serve_port, answered)
        assert counts(families) == dict(expected)
        got_durations = durations(families)
        assert {k: c for k, (c, _) in got_durations.items()} == dict(expected_durations)
        assert got_durations[("GET", "/stream")][1] >= 1.5  # the slow stream alone took 15 x 0.1 s
        assert in_flight(families) == 0
        assert sum(counts(families).values()) == answered

        # Workers were replaced (max_requests) and child_exit folded them into the archive.
        files = web_files(statdir)
        assert files["archive"] == 1, files
        ended = files["closed"] + files["dead"]
        deadline = time.monotonic() + 10
        while ended:  # a worker that just exited is folded when the master reaps it
            assert time.monotonic() < deadline, files
            time.sleep(0.1)
            files = web_files(statdir)
            ended = files["closed"] + files["dead"]
        from statmap.collect import collect

        archive = next(f for f in collect(statdir).files if f.status == "archive")
        assert archive.name == "web"
        assert sum(counts(scrape(statdir, serve_port)).values()) == answered
    finally:
        stop_server(server)
        log.close()
    output = log_path.read_text()
    assert server.returncode == 0, output
    assert output.count("Traceback") == output.count("Exception on /fail") == 4, output  # only the /fail views
    assert "statmap: clean" not in output, output  # the hooks folded without a problem
    # on_exit folded every worker: only the archive is left, and it holds the same totals.
    names = sorted(n for n in os.listdir(statdir) if not n.startswith("."))
    assert names == ["web.archive.statmap"], names
    if HAS_SERVE:  # on_starting started statmap serve; on_exit stopped it cleanly
        assert f"statmap serve: {statdir} on http://127.0.0.1:{serve_port}/" in output, output
        assert "statmap serve: stopped" in output, output
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", serve_port), timeout=1).close()
    text = subprocess.run(
        [sys.executable, "-m", "statmap", "export", "--dir", statdir],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    families = {f.name: f for f in parser.text_string_to_metric_families(text)}
    assert counts(families) == dict(expected)
    assert {k: c for k, (c, _) in durations(families).items()} == dict(expected_durations)


def test_preloaded_app_workers_get_their_own_files(statdir: str, tmp_path: Path) -> None:
    """--preload: the metrics are created in the master; every forked worker publishes into its own file."""
    port = free_port()
    env = dict(
        os.environ,
        STATMAP_DIR=statdir,
        GUNICORN_BIND=f"127.0.0.1:{port}",
        WEB_CONCURRENCY="2",
        GUNICORN_MAX_REQUESTS="0",
        STATMAP_SERVE_PORT="0",  # no sidecar: read with statmap export
    )
    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(EXAMPLES / "gunicorn.conf.py"), "--chdir", str(EXAMPLES),
             "--no-control-socket", "--preload", "flask_app:app"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_listening(port, server, log_path)
            deadline = time.monotonic() + 30
            while web_files(statdir)["alive"] < 3:  # the master's file and one per worker
                assert time.monotonic() < deadline, web_files(statdir)
                time.sleep(0.05)
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                statuses = list(pool.map(lambda i: request(port, "GET", f"/items/{i}")[0], range(60)))
            assert statuses == [200] * 60
            settled(statdir, 0, 60)
            from statmap.collect import collect

            col = collect(statdir)
            per_file = {f.pid: f for f in col.files if f.name == "web"}
            assert len(per_file) == 3 and server.pid in per_file
            assert col.value("http_requests", {"method": "GET", "route": TEMPLATE, "status": "2xx"}) == 60
            assert col.value("http_requests_in_flight") == 0
            assert "statmap serve" not in log_path.read_text()
        finally:
            stop_server(server)
    text = subprocess.run(
        [sys.executable, "-m", "statmap", "export", "--dir", statdir],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    families = {f.name: f for f in parser.text_string_to_metric_families(text)}
    assert counts(families) == {("GET", TEMPLATE, "2xx"): 60}
