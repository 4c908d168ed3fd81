"""A small WSGI app that counts its requests with statmap, for gunicorn.

    STATMAP_DIR=/tmp/web-stats gunicorn -w 4 --max-requests 1000 app:app
    statmap show --aggregate --dir /tmp/web-stats
    statmap export --dir /tmp/web-stats          # OpenMetrics for Prometheus
    statmap clean --dir /tmp/web-stats           # archive workers that were replaced

Each gunicorn worker imports this module after the fork (or, with
--preload, inherits it and statmap's fork hook gives it its own file), so
each worker publishes into its own file; statmap aggregates them, and
``statmap clean`` (or ``export --clean``) folds replaced workers into the
archive so the totals never go backwards.
"""

from __future__ import annotations

import time

import statmap


class WebStats(statmap.Stats):
    requests = statmap.Counter("HTTP requests served", labels=("method", "status"))
    latency = statmap.Histogram(
        "Time to build a response", unit="seconds", buckets=statmap.LogBuckets(1e-5, 10.0, 0.05)
    )
    in_flight = statmap.Gauge("Requests being served", aggregate="sum", live_only=True)
    last_path = statmap.Text("Last path served", size=64)


stats = WebStats("web")


def app(environ, start_response):  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    stats.in_flight.inc()
    try:
        path = environ.get("PATH_INFO", "/")
        body = f"hello from {path}\n".encode()
        stats.requests.labels(environ.get("REQUEST_METHOD", "GET"), "200").inc()
        stats.last_path.set(path)
        stats.latency.observe(time.perf_counter() - started)
    finally:
        stats.in_flight.dec()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
