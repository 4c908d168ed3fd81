"""``statmap demo``: worker processes publishing a realistic mix of metrics, shown live.

Each worker pretends to be a small web service: it serves requests with
random paths, methods and latencies, tracks in-flight work and a queue,
and changes state now and then. The demo's own process reads their files
every second and redraws the view.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import TYPE_CHECKING

from . import LogBuckets, Stats
from . import metrics as m
from .discover import statmap_files
from .knobs import Knob
from .render import read_snapshots, render_text

if TYPE_CHECKING:
    from .server import StatmapHTTPServer


class DemoStats(Stats):
    requests = m.Counter("Requests served", labels=("method", "status"))
    bytes_sent = m.Counter("Response bytes sent", unit="bytes")
    in_flight = m.Gauge("Requests being served", aggregate="sum", live_only=True)
    queue_depth = m.Gauge("Jobs waiting in the queue", aggregate="max")
    latency = m.Histogram("Request latency", unit="seconds", buckets=LogBuckets(0.0005, 5.0, 0.02))
    payload = m.Summary("Request payload size", unit="bytes")
    last_path = m.Text("Last path served", size=64)
    state = m.Enum("Worker state", states=("starting", "serving", "draining"))
    build = m.Info("Build information", values={"version": "0.1.0", "python": sys.version.split()[0]})
    # Knobs (docs/knobs.md): `statmap set demo-web error_rate=0.5 slow_mode=true --dir DIR`
    error_rate = Knob("Share of requests answered 500", default=0.05, min=0.0, max=1.0)
    slow_mode = Knob("Serve every request 10x slower", default=False)


PATHS = ("/", "/index", "/api/users", "/api/orders", "/static/app.js", "/health", "/search?q=café")


def worker(directory: str, seed: int) -> None:
    """Publish until SIGTERM or SIGINT, then close the file."""
    rng = random.Random(seed)
    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    # Ctrl-C reaches every process of the terminal's foreground group: stop quietly.
    signal.signal(signal.SIGINT, on_term)
    stats = DemoStats("demo-web", directory=directory)
    stats.state.state("serving")
    while not stop:
        for _ in range(rng.randint(5, 40)):
            path = rng.choice(PATHS)
            method = "GET" if rng.random() < 0.8 else "POST"
            status = "500" if rng.random() < stats.error_rate.value else "200" if rng.random() < 0.98 else "404"
            stats.requests.labels(method, status).inc()
            stats.bytes_sent.inc(rng.randint(200, 20000))
            stats.latency.observe(rng.lognormvariate(-4.5, 1.0) * (10.0 if stats.slow_mode.value else 1.0))
            stats.payload.observe(rng.randint(0, 4096))
            stats.last_path.set(path)
        stats.in_flight.set(rng.randint(0, 8))
        stats.queue_depth.set(max(0.0, rng.gauss(10, 5)))
        if rng.random() < 0.02:
            stats.state.state("draining" if stats.state.get() == "serving" else "serving")
        time.sleep(0.5 if stats.slow_mode.value else 0.1)
    stats.close()


def start_dashboard(directory: str, port: int) -> StatmapHTTPServer | None:
    """The exporter and dashboard on loopback (any free port if ``port`` is taken); None if it cannot start."""
    from .server import start_server

    for attempt in (port, 0):
        try:
            return start_server(directory, "127.0.0.1", attempt)
        except OSError as exc:
            if attempt == 0:
                print(f"statmap demo: no dashboard: {exc}", file=sys.stderr)
    return None


def run_demo(seconds: float | None = None, workers: int = 3, directory: str | None = None, port: int = 9464) -> int:
    own_dir = directory is None
    directory = directory or tempfile.mkdtemp(prefix="statmap-demo-")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    procs = [
        subprocess.Popen([sys.executable, "-m", "statmap.demo", directory, str(i)], env=env) for i in range(workers)
    ]
    server = start_dashboard(directory, port)
    print(f"statmap demo: {workers} workers publishing into {directory}")
    if server is not None:
        print(f"statmap demo: dashboard at {server.url} (metrics at {server.url}metrics)")
    print(f"read them from another terminal with: statmap show --dir {directory}")
    print(f"turn its knobs with: statmap set demo-web error_rate=0.5 slow_mode=true --dir {directory}")
    interactive = sys.stdout.isatty()
    deadline = None if seconds is None else time.monotonic() + seconds
    try:
        time.sleep(0.5)
        while deadline is None or time.monotonic() < deadline:
            snapshots, errors = read_snapshots(statmap_files(directory))
            view = render_text(snapshots, errors)
            if interactive:
                sys.stdout.write("\x1b[H\x1b[2J")
                sys.stdout.write(f"statmap demo ({directory}) - Ctrl-C to stop\n\n")
            sys.stdout.write(view + "\n")
            if interactive and server is not None:
                sys.stdout.write(f"dashboard: {server.url}\n")
            sys.stdout.flush()
            time.sleep(1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic())))
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)
        if own_dir:
            shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    worker(sys.argv[1], int(sys.argv[2]))
