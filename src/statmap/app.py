"""``StatmapApp``: the routes of ``statmap serve`` (exporter, JSON API, dashboard), independent of any HTTP server.

Routes (GET and HEAD):

* ``/metrics``: the aggregated view as OpenMetrics 1.0 or Prometheus text
  0.0.4 or delimited protobuf (Prometheus native histograms), chosen from the
  ``Accept`` header (``?format=openmetrics|prometheus|protobuf``
  overrides it), gzip-compressed when ``Accept-Encoding`` asks for it;
  ``?match=PATTERN`` keeps the metrics whose name matches (``statmap.pattern``:
  linear time, never ``re``);
* ``/api/processes``: JSON, one entry per file of the directory (file name,
  publisher name, pid, state, age, ...); file names only, never paths;
* ``/api/series``: JSON, every aggregated series with its value, the
  per-second rate of counters and of histogram/summary counts, and the
  p50/p90/p99 of histograms over the last second; ``match=PATTERN`` (metric
  names), ``q=WORDS`` (every word in the series' name or labels),
  ``pin=ID`` (repeatable: always included), ``limit=N``;
* ``/healthz``: ``ok`` while the directory can be read;
* ``/`` and ``/static/NAME``: the dashboard, served from the package's
  ``dashboard`` directory only (the names are fixed when the app is built;
  a request path is never joined to a filesystem path).

A bearer token (``token=``, ``--token`` or ``$STATMAP_TOKEN``) protects
every route: ``Authorization: Bearer TOKEN``, or HTTP Basic with the token
as password (so a browser can open the dashboard); compared in constant
time.

``handle(method, path, query, headers)`` is the whole interface the hosts
use (host_wsgi, host_asgi, host_stdlib); ``ROUTES`` maps each path to its
handler.

One collection is shared by every request for ``max_age`` seconds (0.5 by
default), and the rendered bodies with it: 50 clients polling cost one
collection per half-second, not 50. With ``max_age=0`` every request gets a
collection that started after it arrived, and the requests that arrive
during a collection share the next one.
"""

from __future__ import annotations

import base64
import gzip
import hmac
import json
import math
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from . import knobs_http
from .collect import Collection, Collector, match_families
from .directory import default_directory
from .errors import CollectionError
from .expose import FORMATS, SCRAPE_FORMATS, Exposer
from .history import api_history
from .history import series_id as series_id  # its home is history.py; re-exported
from .httputil import JSON_TYPE, Response, _json, _text, load_assets, wants_gzip, wants_openmetrics, wants_protobuf
from .pattern import compile_pattern
from .rates import QUANTILES, Rates
from .reader import ExpHistogramValue, HistogramValue, SummaryValue
from .render import printable

TOKEN_ENV = "STATMAP_TOKEN"
RATE_WINDOW = 1.0  # seconds: rates and percentiles are over (about) the last second

_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def _bad_pattern(pattern: str) -> Response | None:
    """A 400 naming the problem if statmap refuses ``pattern`` (statmap.pattern: linear time, no backtracking)."""
    try:
        compile_pattern(pattern)
    except re.error as exc:
        return _text(400, f"match: bad regular expression: {exc} (the pattern language: docs/serve.md#patterns)")
    return None


# -- JSON of the collection --------------------------------------------------------


def _num(value: Any) -> Any:
    """A JSON number; NaN and infinities (not JSON) become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _raw(value: Any) -> Any:
    """A value as statmap's JSON writes it: non-finite numbers as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if value != value else ("+Inf" if value > 0 else "-Inf")
    return value


class WouldBlock(Exception):
    """``handle(..., cached_only=True)`` cannot answer from what is already collected and rendered."""


class _Snapshot:
    """One collection and what was derived from it, shared by every request until it is too old."""

    __slots__ = ("at", "bodies", "collection", "history_point", "processes", "series", "taken")

    def __init__(self, collection: Collection) -> None:
        self.collection = collection
        self.taken = time.monotonic()
        self.at = collection.time
        self.bodies: dict[tuple[str, bool], bytes] = {}
        self.series: list[dict[str, Any]] | None = None
        self.processes: bytes | None = None
        self.history_point: dict[Any, Any] = {}


class StatmapApp:
    """The exporter and dashboard, independent of any HTTP server.

    ``handle(method, path, query, headers)`` returns a ``Response``. ``path``
    is the path below the mount point (``/metrics``), ``query`` the raw query
    string, ``headers`` a mapping with lowercase names.

    ``directory``: the statmap directory (default ``$STATMAP_DIR`` or the
    per-user directory). ``token``: the bearer token (default
    ``$STATMAP_TOKEN``; ``""`` for none). ``max_age``: how long one
    collection is shared between requests (seconds). ``publishers``: only
    these publisher names. ``allowed_hosts``: if set, requests whose ``Host``
    is not one of them get 403 (``serve()`` sets it to the loopback names
    when it listens on loopback, against DNS rebinding). ``process_metrics``:
    add each live writer's /proc metrics (``procstats.py``).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        token: str | None = None,
        max_age: float = 0.5,
        publishers: Iterable[str] | None = None,
        publisher_label: str = "auto",
        include_text: bool = False,
        allowed_hosts: Iterable[str] | None = None,
        process_metrics: bool = False,
        allow_set: bool = False,
    ) -> None:
        self.directory = os.fspath(directory) if directory is not None else default_directory()
        if token is None:
            token = os.environ.get(TOKEN_ENV, "")
        self._token = token.encode() if token else None
        if allow_set and self._token is None:
            raise ValueError("allow_set (--allow-set) needs a token: setting knobs is never open to anyone")
        self.allow_set = allow_set  # POST /api/knobs (knobs_http.py)
        self.max_age = max_age
        self.allowed_hosts = frozenset(h.lower() for h in allowed_hosts) if allowed_hosts is not None else None
        self._collector = Collector(self.directory, publishers=publishers, process_metrics=process_metrics)
        self._exposer_options = {"publisher_label": publisher_label, "include_text": include_text}
        self._exposer = Exposer(**self._exposer_options)  # type: ignore[arg-type]
        self._lock = threading.Lock()  # rendering (the exposer and the rate history are not thread-safe)
        self._cond = threading.Condition()  # collecting: one at a time, shared by every waiting request
        self._collecting = False
        self._closed = False
        self._snapshot: _Snapshot | None = None
        self._rates = Rates(RATE_WINDOW)  # the values of recent collections, for /api/series' rates
        self._last_gzip: dict[str, tuple[bytes, bytes]] = {}  # format -> (text, its gzip), the latest
        self._local = threading.local()  # .cached_only: this thread's handle() may not collect or render
        self.assets = load_assets()
        self.problems: list[str] = []  # the exposer's last problems (families left out)

    def close(self) -> None:
        with self._cond:
            while self._collecting:
                self._cond.wait()
            self._closed = True
            self._collector.close()
            self._cond.notify_all()

    # -- collections ---------------------------------------------------------

    def snapshot(self) -> _Snapshot:
        """A collection no older than ``max_age`` when the request arrived.

        One collection runs at a time and every request waiting for it shares
        it: with ``max_age=0`` each request still gets a collection that
        started after it arrived, yet 50 concurrent clients cost one
        collection per round, not 50.
        """
        arrived = time.monotonic()
        with self._cond:
            while True:
                if self._closed:
                    raise RuntimeError("the statmap app is closed")
                snap = self._snapshot
                if snap is not None and (snap.taken >= arrived or arrived - snap.taken < self.max_age):
                    return snap
                if getattr(self._local, "cached_only", False):
                    raise WouldBlock  # neither collect nor wait for a collection
                if not self._collecting:
                    self._collecting = True
                    break
                self._cond.wait()
        fresh: _Snapshot | None = None
        try:
            started = time.monotonic()
            fresh = _Snapshot(self._collector.collect())
            fresh.taken = started
            return fresh
        finally:
            with self._cond:
                self._collecting = False
                if fresh is not None:
                    self._snapshot = fresh
                self._cond.notify_all()

    def _body(self, snap: _Snapshot, fmt: str, compressed: bool) -> bytes:
        key = (fmt, compressed)
        body = snap.bodies.get(key)
        if body is None:
            if getattr(self._local, "cached_only", False):
                raise WouldBlock
            with self._lock:
                body = snap.bodies.get(key)
                if body is None:
                    plain = snap.bodies.get((fmt, False))
                    if plain is None:
                        plain = self._exposer.render_bytes(snap.collection, fmt)
                        self.problems = list(self._exposer.problems)
                        snap.bodies[(fmt, False)] = plain
                    body = plain
                    if compressed:  # the same text as the last collection's (idle writers): its gzip again
                        last = self._last_gzip.get(fmt)
                        if last is not None and last[0] == plain:
                            body = last[1]
                        else:
                            body = gzip.compress(plain, 6)
                            self._last_gzip[fmt] = (plain, body)
                    snap.bodies[key] = body
        return body

    # -- the request ---------------------------------------------------------

    def authorized(self, authorization: str | None) -> bool:
        if self._token is None:
            return True
        if not authorization:
            return False
        scheme, _, credentials = authorization.strip().partition(" ")
        scheme = scheme.lower()
        given = b""
        if scheme == "bearer":
            given = credentials.strip().encode("utf-8", "replace")
        elif scheme == "basic":
            try:
                decoded = base64.b64decode(credentials.strip(), validate=True)
            except ValueError:
                return False
            given = decoded.partition(b":")[2]  # any user name; the token is the password
        else:
            return False
        return hmac.compare_digest(given, self._token)

    def handle(self, method: str, path: str, query: str, headers: dict[str, str]) -> Response:
        """The response to one request; any thread, concurrently."""
        try:
            return self._handle(method, path, query, headers)
        except WouldBlock:  # only under cached(): its caller asks again through handle()
            raise
        except CollectionError as exc:  # every route: incomplete totals are never served (a 503 says why)
            print(f"statmap serve: {printable(path)}: {exc}", file=sys.stderr)
            return _text(503, f"collection failed: {exc}")
        except Exception as exc:  # noqa: BLE001 - one request's failure must not stop the server
            print(f"statmap serve: {method} {path}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return _text(500, "internal error (see the server's log)")

    def cached(self, method: str, path: str, query: str, headers: dict[str, str]) -> Response | None:
        """``handle()``'s response if it needs neither a collection nor a rendering, else None.

        For a host's I/O thread answering ``/metrics`` from the shared
        collection's body without handing the request to a worker (a thread
        switch each way). Meant for ``/metrics``: other routes may do work
        of their own. On None, ask ``handle()``.
        """
        self._local.cached_only = True
        try:
            return self.handle(method, path, query, headers)
        except WouldBlock:
            return None
        finally:
            self._local.cached_only = False

    def _handle(self, method: str, path: str, query: str, headers: dict[str, str]) -> Response:
        if self.allowed_hosts is not None:
            host = headers.get("host", "").lower()
            if host not in self.allowed_hosts:
                return _text(403, "this server answers only requests addressed to its loopback name")
        if not self.authorized(headers.get("authorization")):
            return _text(
                401,
                "a token is required: Authorization: Bearer TOKEN",
                [
                    ("WWW-Authenticate", 'Basic realm="statmap", charset="UTF-8"'),
                    ("WWW-Authenticate", 'Bearer realm="statmap"'),
                ],
            )
        params = parse_qs(query, keep_blank_values=True) if query else {}
        if method == "POST" and path in POST_ROUTES:
            return POST_ROUTES[path](self, params, headers)
        if method not in ("GET", "HEAD"):
            return _text(405, "only GET and HEAD", [("Allow", "GET, HEAD")])
        route = ROUTES.get(path)
        if route is not None:
            return route(self, params, headers)
        if path.startswith("/static/"):
            return self.asset(path[len("/static/") :], headers)
        return _text(404, "not found")

    # -- routes --------------------------------------------------------------

    def metrics(self, params: dict[str, list[str]], headers: dict[str, str]) -> Response:
        fmt = (params.get("format") or [""])[-1]
        if fmt and fmt not in SCRAPE_FORMATS:
            return _text(400, "format: " + " or ".join(SCRAPE_FORMATS))
        if not fmt:
            accept = headers.get("accept")
            fmt = "protobuf" if wants_protobuf(accept) else "openmetrics" if wants_openmetrics(accept) else "prometheus"
        compressed = wants_gzip(headers.get("accept-encoding"))
        match = (params.get("match") or [""])[-1]
        if match and (problem := _bad_pattern(match)):
            return problem
        snap = self.snapshot()  # a CollectionError is a 503 (handle): never totals that read as a reset
        if match and getattr(self._local, "cached_only", False):
            raise WouldBlock  # rendered for this request alone
        if match:
            exposer = Exposer(match=match, **self._exposer_options)  # type: ignore[arg-type]
            body = exposer.render_bytes(snap.collection, fmt)
            if compressed:
                body = gzip.compress(body, 6)
        else:
            body = self._body(snap, fmt, compressed)
        out = [
            ("Content-Type", FORMATS[fmt].content_type),
            ("Vary", "Accept, Accept-Encoding"),
            ("Cache-Control", "no-store"),
        ]
        if compressed:
            out.append(("Content-Encoding", "gzip"))
        return Response(200, body, out)

    def healthz(self) -> Response:
        if not os.path.isdir(self.directory) or not os.access(self.directory, os.R_OK | os.X_OK):
            return _text(503, "statmap directory not readable")
        return _text(200, "ok")

    def api_processes(self) -> Response:
        snap = self.snapshot()
        if snap.processes is None:
            snap.processes = json.dumps(self._processes(snap), separators=(",", ":"), allow_nan=False).encode()
        return Response(200, snap.processes, [("Content-Type", JSON_TYPE), ("Cache-Control", "no-store")])

    def _relative(self, text: str) -> str:
        """File paths in messages become names within the directory."""
        prefix = self.directory.rstrip("/") + "/"
        return text.replace(prefix, "")

    def _processes(self, snap: _Snapshot) -> dict[str, Any]:
        c = snap.collection
        out = []
        for f in c.files:
            ident = f.identity
            entry: dict[str, Any] = {
                "file": os.path.basename(f.path),
                "name": f.name,
                "pid": f.pid if ident and f.status != "archive" else None,
                "state": f.status,
                "program": ident.program if ident else "",
                "instance": ident.instance_id.hex() if ident else "",
                "created": ident.created_ns / 1e9 if ident else None,
                "age": max(0.0, c.time - ident.created_ns / 1e9) if ident else None,
                "closed": f.closed_ns / 1e9 if f.closed_ns else None,
                "size": f.size,
                "series": f.series,
            }
            if f.absorbed:
                entry["absorbed"] = True
            if f.status == "archive":
                entry["absorbed_processes"] = f.absorbed_count
            if f.error:
                entry["error"] = self._relative(f.error)
            out.append(entry)
        out.sort(key=lambda e: (e["name"], e["state"] == "archive", e["created"] or 0))
        return {
            "directory": os.path.basename(self.directory.rstrip("/")),
            "time": c.time,
            "counts": c.counts(),
            "processes": out,
            "errors": [{"file": os.path.basename(e.path), "problem": self._relative(e.problem)} for e in c.errors],
        }

    def _series(self, snap: _Snapshot) -> list[dict[str, Any]]:
        """Every series with value, rate and interval percentiles; computed once per collection."""
        if snap.series is not None:
            return snap.series
        with self._lock:
            if snap.series is not None:
                return snap.series
            c = snap.collection
            interval = self._rates.start(snap.at)  # against a collection about RATE_WINDOW back
            out: list[dict[str, Any]] = []
            for fam in c.families:
                kind = fam.kind  # the dashboard shows a series as its kind says (view, rank)
                for s in fam.samples:
                    key = (fam.publisher, fam.name, s.key)
                    value = s.value
                    entry: dict[str, Any] = {
                        "id": series_id(fam.publisher, fam.name, s.labels),
                        "publisher": fam.publisher,
                        "metric": fam.name,
                        "type": fam.type,
                        "view": kind.view,
                        "rank": kind.rank,
                        "unit": fam.unit,
                        "labels": s.labels,
                    }
                    if isinstance(value, (HistogramValue, ExpHistogramValue)):
                        rate, delta = interval.change(key, value)
                        entry["count"] = value.count
                        entry["sum"] = _num(value.sum)
                        window = delta if delta is not None else value  # the interval, or everything without a baseline
                        entry["rate"] = _num(rate)
                        for q in QUANTILES:
                            entry[f"p{round(q * 100)}"] = _num(window.percentile(q)) if window.count > 0 else None
                        entry["value"] = entry["p50"]
                        entry["min"], entry["max"] = _num(value.min), _num(value.max)  # lifetime; null: unknown
                    elif isinstance(value, SummaryValue):
                        rate, delta = interval.change(key, value)
                        entry["count"] = value.count
                        entry["sum"] = _num(value.sum)
                        entry["rate"] = _num(rate)
                        entry["avg"] = entry["value"] = _num((delta if delta is not None else value).average)
                        entry["min"], entry["max"] = _num(value.min), _num(value.max)
                    elif isinstance(value, (int, float)) and not isinstance(value, bool):
                        entry["value"] = _raw(value)
                        if fam.type == "counter":
                            entry["rate"] = _num(interval.change(key, value)[0])
                    elif isinstance(value, dict):
                        entry["value"] = {str(k): str(v) for k, v in value.items()}
                    else:
                        entry["value"] = None if value is None else str(value)
                    out.append(entry)
            snap.series = out
            return out

    def api_series(self, params: dict[str, list[str]]) -> Response:
        match = (params.get("match") or [""])[-1]
        words = (params.get("q") or [""])[-1].lower().split()
        pins = set(params.get("pin", []))
        try:
            limit = int((params.get("limit") or ["0"])[-1])
        except ValueError:
            return _text(400, "limit: a number")
        if match and (problem := _bad_pattern(match)):
            return problem
        snap = self.snapshot()
        allowed = {(f.publisher, f.name) for f in match_families(snap.collection.families, match or None)}
        selected: list[dict[str, Any]] = []
        pinned: list[dict[str, Any]] = []
        total = 0
        for entry in self._series(snap):
            if entry["id"] in pins:
                pinned.append(entry)
                continue
            if (entry["publisher"], entry["metric"]) not in allowed:
                continue
            if words:
                hay = entry["id"].lower()
                if not all(w in hay for w in words):
                    continue
            total += 1
            if limit <= 0 or len(selected) < limit:
                selected.append(entry)
        return _json({"time": snap.at, "matched": total, "pinned": pinned, "series": selected})

    def asset(self, name: str, headers: dict[str, str]) -> Response:
        asset = self.assets.get(name)
        if asset is None:
            return _text(404, "not found")
        out = [("Content-Type", asset.type), ("Cache-Control", "no-cache"), ("ETag", asset.etag)]
        if name == "index.html":
            out += [("Content-Security-Policy", _CSP), ("X-Frame-Options", "DENY"), ("Referrer-Policy", "no-referrer")]
        if headers.get("if-none-match") == asset.etag:
            return Response(304, b"", out)
        body = asset.body
        if asset.gz is not None and wants_gzip(headers.get("accept-encoding")):
            body = asset.gz
            out.append(("Content-Encoding", "gzip"))
        out.append(("Vary", "Accept-Encoding"))
        return Response(200, body, out)


Route = Callable[[StatmapApp, dict[str, list[str]], dict[str, str]], Response]
# The routes: exact path -> handler(app, query parameters, headers); ``/static/NAME`` is the one prefix.
ROUTES: dict[str, Route] = {
    "/metrics": lambda app, params, headers: app.metrics(params, headers),
    "/api/series": lambda app, params, headers: app.api_series(params),
    "/api/processes": lambda app, params, headers: app.api_processes(),
    "/api/history": lambda app, params, headers: api_history(app, params),  # history.py
    "/healthz": lambda app, params, headers: app.healthz(),
    "/api/knobs": lambda app, params, headers: knobs_http.get_knobs(app.directory, params, app.allow_set),
    "/": lambda app, params, headers: app.asset("index.html", headers),
    "/index.html": lambda app, params, headers: app.asset("index.html", headers),
}
# The routes that take POST (no body: parameters in the query string).
POST_ROUTES: dict[str, Route] = {
    "/api/knobs": lambda app, params, headers: knobs_http.post_knobs(app.directory, params, headers, app.allow_set),
}
