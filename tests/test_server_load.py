"""Load: 50 concurrent clients against ``statmap serve`` over a directory of many processes x 1000 series.

The clients (5 processes of 10 threads, each thread with its own keep-alive
connection) cycle through the routes a Prometheus server and dashboards use:
``/metrics`` as OpenMetrics with gzip, ``/metrics`` as Prometheus text,
``/api/series?q=...&limit=60`` and ``/api/processes``. Every answer must be a
200 with a complete, valid body: no errors at all.

In the default run (CI, ``STATMAP_SCALE=1``): 16 processes x 1000 series, 50
clients for 3 s; ``STATMAP_SCALE=N`` runs 16 * N processes for 3 * N s (at
most 10 s). The full run, whose figures are in docs/benchmarks.md ("Serving"):

    STATMAP_SCALE=4 python3 -m pytest tests/test_server_load.py -s

64 processes x 1000 series, 50 clients for 10 s. ``STATMAP_LOAD_REPORT=FILE``
writes the figures as JSON; ``STATMAP_LOAD_MAX_AGE=0`` runs the server
with ``--max-age 0`` (a new collection for every request).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .conftest import SCALE
from .test_server_support import Server

pytestmark = [pytest.mark.slow, pytest.mark.once]  # load on the server; the cells are tested elsewhere

PROCESSES = max(1, round(16 * SCALE))
SECONDS = min(10.0, 3.0 * SCALE)
CLIENT_PROCESSES, THREADS = 5, 10  # 50 clients
MAX_AGE = os.environ.get("STATMAP_LOAD_MAX_AGE", "0.5")  # serve's --max-age (0: a collection per request)

# 1000 series per process: 10 labelled counters x 100 label sets; then wait (alive) until stdin closes.
PUBLISHER = r"""
import sys, statmap
pub = statmap.Publisher("load", sys.argv[1], capacity=1 << 20)
seed = int(sys.argv[2])
for f in range(10):
    fam = pub.counter(f"requests_{f}", "Requests", labels=("endpoint",))
    for i in range(100):
        fam.labels(f"/e{i}").inc((seed * 7 + i) % 13 + 1)
print("ready", flush=True)
sys.stdin.read()
"""

CLIENT = r"""
import gzip, http.client, json, sys, threading, time
host, port, seconds, threads = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
ROUTES = [
    ("/metrics", {"Accept": "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
                  "Accept-Encoding": "gzip"}, "/metrics (OpenMetrics, gzip)"),
    ("/api/series?q=requests_3&limit=60", {}, "/api/series?q=...&limit=60"),
    ("/metrics", {}, "/metrics (Prometheus text)"),
    ("/api/processes", {}, "/api/processes"),
]
lat = {r[2]: [] for r in ROUTES}
errors = []
start = time.monotonic()
deadline = start + seconds

def check(i, body, headers):
    if i == 0:
        text = gzip.decompress(body)
        assert text.endswith(b"# EOF\n") and b"requests_9_total" in text, "bad OpenMetrics"
    elif i == 2:
        assert b"requests_0_total" in body and b"# EOF" not in body, "bad Prometheus text"
    else:
        doc = json.loads(body)
        assert ("series" in doc and len(doc["series"]) == 60) or "processes" in doc, "bad JSON"

def run(n):
    conn = http.client.HTTPConnection(host, port, timeout=60)
    i = n % len(ROUTES)
    while time.monotonic() < deadline:
        path, headers, label = ROUTES[i]
        t0 = time.perf_counter()
        try:
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            dt = time.perf_counter() - t0
            if resp.status != 200:
                errors.append(f"{path}: HTTP {resp.status}")
            else:
                check(i, body, resp.headers)
                lat[label].append(dt)
        except Exception as exc:
            errors.append(f"{path}: {type(exc).__name__}: {exc}")
            conn.close()
            conn = http.client.HTTPConnection(host, port, timeout=60)
        i = (i + 1) % len(ROUTES)
    conn.close()

ts = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
for t in ts: t.start()
for t in ts: t.join()
json.dump({"latencies": lat, "errors": errors[:20], "error_count": len(errors),
           "elapsed": time.monotonic() - start}, sys.stdout)
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def test_fifty_clients(statdir: str) -> None:
    publishers = [
        subprocess.Popen(
            [sys.executable, "-c", PUBLISHER, statdir, str(i)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for i in range(PROCESSES)
    ]
    server = None
    try:
        for p in publishers:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        server = Server(statdir, "--max-age", MAX_AGE)
        # The expected total of one series, to check the aggregate under load.
        expected = sum((seed * 7 + 0) % 13 + 1 for seed in range(PROCESSES))
        status, _, body = server.request("/metrics?match=^requests_0$")
        assert status == 200 and f'requests_0_total{{endpoint="/e0"}} {expected}\n'.encode() in body
        clients = [
            subprocess.Popen(
                [sys.executable, "-c", CLIENT, server.host, str(server.port), str(SECONDS), str(THREADS)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(CLIENT_PROCESSES)
        ]
        results = []
        for c in clients:
            out, err = c.communicate(timeout=SECONDS + 120)
            assert c.returncode == 0, err
            results.append(json.loads(out))
        errors = [e for r in results for e in r["errors"]]
        error_count = sum(r["error_count"] for r in results)
        by_route: dict[str, list[float]] = {}
        for r in results:
            for route, values in r["latencies"].items():
                by_route.setdefault(route, []).extend(values)
        everything = [v for values in by_route.values() for v in values]
        elapsed = max(r["elapsed"] for r in results)
        report = {
            "processes": PROCESSES,
            "series_per_process": 1000,
            "clients": CLIENT_PROCESSES * THREADS,
            "seconds": SECONDS,
            "max_age": float(MAX_AGE),
            "requests": len(everything),
            "errors": error_count,
            "throughput_per_s": round(len(everything) / elapsed, 1),
            "p50_ms": round(percentile(everything, 0.5) * 1000, 2),
            "p99_ms": round(percentile(everything, 0.99) * 1000, 2),
            "max_ms": round(max(everything) * 1000, 2),
            "routes": {
                route: {
                    "requests": len(values),
                    "p50_ms": round(percentile(values, 0.5) * 1000, 2),
                    "p99_ms": round(percentile(values, 0.99) * 1000, 2),
                }
                for route, values in sorted(by_route.items())
            },
        }
        print("\nstatmap serve under load:", json.dumps(report, indent=2))
        if os.environ.get("STATMAP_LOAD_REPORT"):
            with open(os.environ["STATMAP_LOAD_REPORT"], "w") as f:
                json.dump(report, f, indent=2)
        assert error_count == 0, errors
        assert len(everything) > 50  # every client got answers
        assert all(len(v) > 0 for v in by_route.values())
        # Still exact after the load.
        status, _, body = server.request("/metrics?match=^requests_0$")
        assert f'requests_0_total{{endpoint="/e0"}} {expected}\n'.encode() in body
        code, _, err = server.stop()
        assert code == 0, err
    finally:
        if server is not None and server.proc.poll() is None:
            server.stop()
        for p in publishers:
            if p.stdin:
                p.stdin.close()
        for p in publishers:
            p.wait(timeout=30)
