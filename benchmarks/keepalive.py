"""Latency of one keep-alive client of ``statmap serve`` (the way Prometheus and the dashboard poll).

A lone client on one kept-alive connection (``http.client``) asks, in turn,
for ``/metrics`` as OpenMetrics with gzip (Prometheus' headers),
``/healthz``, ``/api/series?limit=60`` and ``/api/processes``, against a
real ``statmap serve`` process reading a directory of 64 live processes x
1000 series (benchmarks/scrape.py's workers). The time is the client's wall
time from sending the request to the last byte of the body; with
``--max-age`` 0.5 (the default) most requests are answered from the shared
collection, so the figure is mostly the HTTP layer's own latency.

A server that sends headers and body in two writes with Nagle's algorithm
on waits for the client's delayed ACK (about 40 ms on Linux) on every such
response; one write with TCP_NODELAY does not.

    python3 benchmarks/keepalive.py                      # the server from this checkout
    python3 benchmarks/keepalive.py --src /path/to/src   # another checkout's server (before/after)
    python3 benchmarks/keepalive.py --processes 8 --requests 50 --json
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROUTES = {
    "/metrics (OpenMetrics, gzip)": (
        "/metrics",
        {
            "Accept": "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
            "Accept-Encoding": "gzip",
        },
    ),
    "/healthz": ("/healthz", {}),
    "/api/series?limit=60": ("/api/series?limit=60", {}),
    "/api/processes": ("/api/processes", {}),
}


def start_workers(directory: str, processes: int) -> list[subprocess.Popen[str]]:
    """benchmarks/scrape.py's statmap workers: 10 counters x 100 label sets each, alive until stdin closes."""
    procs = []
    for seed in range(processes):
        argv = [sys.executable, os.path.join(HERE, "scrape.py"), "--worker", "statmap", directory, str(seed)]
        procs.append(
            subprocess.Popen([*argv, "10", "100", "0", "0"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        )
    for p in procs:
        assert p.stdout is not None and p.stdout.readline() == "ready\n", "a worker did not start"
    return procs


def start_server(directory: str, src: str | None, extra: tuple[str, ...] = ()) -> tuple[subprocess.Popen[str], int]:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.Popen(
        [sys.executable, "-m", "statmap", "serve", "--dir", directory, "--port", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "http://127.0.0.1:" not in line:
        proc.kill()
        raise SystemExit(f"statmap serve did not start: {line!r} {proc.communicate()[1]}")
    return proc, int(line.split("http://127.0.0.1:")[1].split("/")[0])


def measure(port: int, requests: int) -> dict[str, list[float]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    times: dict[str, list[float]] = {name: [] for name in ROUTES}
    try:
        for name, (path, headers) in ROUTES.items():  # warm up: first collection, parsed files
            conn.request("GET", path, headers=headers)
            conn.getresponse().read()
            del name
        for _ in range(requests):
            for name, (path, headers) in ROUTES.items():
                started = time.perf_counter()
                conn.request("GET", path, headers=headers)
                resp = conn.getresponse()
                body = resp.read()
                times[name].append(time.perf_counter() - started)
                assert resp.status == 200 and body, (name, resp.status)
    finally:
        conn.close()
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--processes", type=int, default=64, help="worker processes (default 64, 1000 series each)")
    ap.add_argument("--requests", type=int, default=200, help="requests per route (default 200)")
    ap.add_argument("--src", help="put this directory first on the server's PYTHONPATH (another checkout's src)")
    ap.add_argument("--json", action="store_true", help="print JSON")
    args = ap.parse_args()
    directory = tempfile.mkdtemp(prefix="statmap-keepalive-")
    workers = start_workers(directory, args.processes)
    server, port = start_server(directory, args.src)
    try:
        times = measure(port, args.requests)
    finally:
        server.terminate()
        server.wait(timeout=30)
        for p in workers:
            assert p.stdin is not None
            p.stdin.close()
        for p in workers:
            p.wait()
        shutil.rmtree(directory, ignore_errors=True)
    report: dict[str, Any] = {}
    for name, values in times.items():
        values.sort()
        report[name] = {
            "median_ms": round(statistics.median(values) * 1e3, 2),
            "p90_ms": round(values[int(len(values) * 0.9)] * 1e3, 2),
            "max_ms": round(values[-1] * 1e3, 2),
        }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"one keep-alive client, {args.processes} processes x 1000 series, {args.requests} requests per route")
    print(f"{'route':32} {'median':>9} {'p90':>9} {'max':>9}")
    for name, r in report.items():
        print(f"{name:32} {r['median_ms']:7.2f}ms {r['p90_ms']:7.2f}ms {r['max_ms']:7.2f}ms")


if __name__ == "__main__":
    main()
