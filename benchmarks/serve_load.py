"""Throughput of ``statmap serve`` under concurrent keep-alive Prometheus-style scrapers (issue 12).

A real ``statmap serve`` process reads a directory of 64 live processes x
1000 series (benchmarks/scrape.py's workers). ``--clients`` client
processes (default 4) each keep one connection alive and ask for
``/metrics`` the way Prometheus does (OpenMetrics preferred, gzip), back to
back, for ``--seconds``; they start together. Clients are raw sockets with
one prebuilt request and a minimal response parser, so that the clients
cost as little as possible of the machine's CPUs; every response is checked
(status 200, the whole body by Content-Length).

It prints requests per second (all clients together), latency percentiles
and the server process's CPU time per request, against the target of 1000
requests/s. ``--max-age`` is passed to the server (its default, 0.5 s: the
collection and the rendered body are shared by the requests of that window).

    python3 benchmarks/serve_load.py                       # 4 clients, 10 s
    python3 benchmarks/serve_load.py --src /other/checkout/src   # another checkout's server
    python3 benchmarks/serve_load.py --clients 8 --seconds 5 --processes 16
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import keepalive  # noqa: E402 - the workers and the server start

REQUEST = (
    b"GET /metrics HTTP/1.1\r\n"
    b"Host: 127.0.0.1\r\n"
    b"User-Agent: Prometheus/2.53.0\r\n"
    b"Accept: application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    b"text/plain;version=0.0.4;q=0.5,*/*;q=0.1\r\n"
    b"Accept-Encoding: gzip\r\n"
    b"X-Prometheus-Scrape-Timeout-Seconds: 10\r\n"
    b"\r\n"
)


def client(port: int, start: float, seconds: float) -> None:
    """One scraper: a kept-alive connection, requests back to back; prints JSON (count, latencies)."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    latencies: list[float] = []
    buf = b""
    time.sleep(max(0.0, start - time.time()))
    end = time.perf_counter() + seconds
    while True:
        t = time.perf_counter()
        if t >= end:
            break
        sock.sendall(REQUEST)
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(262144)
            if not chunk:
                raise SystemExit("server closed the connection")
            buf += chunk
        head, _, buf = buf.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"unexpected response: {head[:200]!r}")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(buf) < length:
            chunk = sock.recv(262144)
            if not chunk:
                raise SystemExit("server closed the connection mid-body")
            buf += chunk
        if not length:
            raise SystemExit("no body")
        buf = buf[length:]
        latencies.append(time.perf_counter() - t)
    sock.close()
    print(json.dumps({"count": len(latencies), "latencies": latencies}))


def server_cpu(pid: int) -> float:
    """CPU seconds (user + system) a live process has used so far, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        client(int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--processes", type=int, default=64, help="worker processes, 1000 series each (default 64)")
    ap.add_argument("--clients", type=int, default=4, help="concurrent keep-alive scrapers (default 4)")
    ap.add_argument("--seconds", type=float, default=10.0, help="how long they scrape (default 10)")
    ap.add_argument("--src", help="put this directory first on the server's PYTHONPATH (another checkout's src)")
    ap.add_argument("--target", type=float, default=1000.0, help="requests/s to meet (default 1000)")
    ap.add_argument("--max-age", type=float, default=None, help="the server's --max-age (default: its own, 0.5 s)")
    args = ap.parse_args()
    directory = tempfile.mkdtemp(prefix="statmap-serve-load-")
    workers = keepalive.start_workers(directory, args.processes)
    extra = ("--max-age", str(args.max_age)) if args.max_age is not None else ()
    server, port = keepalive.start_server(directory, args.src, extra)
    try:
        # warm-up: the first collection parses every file
        for _ in range(3):
            subprocess.run(
                [sys.executable, __file__, "--client", str(port), "0", "0.2"], check=True, capture_output=True
            )
        start = time.time() + 1.0
        cpu0 = server_cpu(server.pid)
        procs = [
            subprocess.Popen(
                [sys.executable, __file__, "--client", str(port), str(start), str(args.seconds)],
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(args.clients)
        ]
        results = [json.loads(p.communicate()[0]) for p in procs]
        cpu = server_cpu(server.pid) - cpu0
        if any(p.returncode for p in procs):
            raise SystemExit("a client failed")
    finally:
        server.terminate()
        server.wait(timeout=30)
        for p in workers:
            assert p.stdin is not None
            p.stdin.close()
        for p in workers:
            p.wait()
        shutil.rmtree(directory, ignore_errors=True)
    count = sum(r["count"] for r in results)
    latencies = sorted(x for r in results for x in r["latencies"])
    rate = count / args.seconds
    print(
        f"statmap serve, {args.processes} processes x 1000 series, {args.clients} keep-alive scrapers"
        f" (OpenMetrics, gzip), {args.seconds:g} s, {os.cpu_count()} CPUs,"
        f" --max-age {'default (0.5)' if args.max_age is None else f'{args.max_age:g}'}"
    )
    print("| requests/s | per client | latency median ms | p90 ms | p99 ms | server CPU us/request | target | met |")
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {rate:.0f} | {', '.join(str(round(r['count'] / args.seconds)) for r in results)}"
        f" | {statistics.median(latencies) * 1e3:.2f} | {latencies[int(len(latencies) * 0.9)] * 1e3:.2f}"
        f" | {latencies[int(len(latencies) * 0.99)] * 1e3:.2f} | {cpu / max(count, 1) * 1e6:.0f}"
        f" | >= {args.target:g}/s | {'met' if rate >= args.target else 'not met'} |"
    )


if __name__ == "__main__":
    main()
