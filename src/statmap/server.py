"""``statmap serve``: the HTTP exporter and the live dashboard of a statmap directory.

Routes (GET and HEAD):

* ``/metrics``: the aggregated view as OpenMetrics 1.0 or Prometheus text
  0.0.4, chosen from the ``Accept`` header (``?format=openmetrics|prometheus``
  overrides it), gzip-compressed when ``Accept-Encoding`` asks for it;
  ``?match=REGEX`` keeps the metrics whose name matches;
* ``/api/processes``: JSON, one entry per file of the directory (file name,
  publisher name, pid, state, age, ...); file names only, never paths;
* ``/api/series``: JSON, every aggregated series with its value, the
  per-second rate of counters and of histogram/summary counts, and the
  p50/p90/p99 of histograms over the last second; ``match=REGEX`` (metric
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

The core, ``StatmapApp``, is independent of any server: ``WSGIApp`` and
``ASGIApp`` adapt it to WSGI and ASGI (plain callables, no framework), so an
existing Flask, Django or FastAPI application can mount the exporter and
the dashboard; ``serve()`` runs it in the standard library's
``ThreadingHTTPServer``.

One collection is shared by every request for ``max_age`` seconds (0.5 by
default), and the rendered bodies with it: 50 clients polling cost one
collection per half-second, not 50. With ``max_age=0`` every request gets a
collection that started after it arrived, and the requests that arrive
during a collection share the next one.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import hmac
import ipaddress
import json
import math
import mimetypes
import os
import re
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from .collect import Collection, Collector, match_families
from .directory import default_directory
from .errors import CollectionError
from .expose import OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE, Exposer
from .reader import HistogramValue, SummaryValue

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9464  # the port Prometheus' registry of default ports gives statmap-like exporters
TOKEN_ENV = "STATMAP_TOKEN"
ASSET_DIR = Path(__file__).resolve().parent / "dashboard"
QUANTILES = (0.5, 0.9, 0.99)
RATE_WINDOW = 1.0  # seconds: rates and percentiles are over (about) the last second

JSON_TYPE = "application/json; charset=utf-8"
TEXT_TYPE = "text/plain; charset=utf-8"
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


class Response:
    """What a route returns: status, headers and the whole body (bytes)."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, body: bytes = b"", headers: Iterable[tuple[str, str]] = ()) -> None:
        self.status = status
        self.body = body
        self.headers = [("X-Content-Type-Options", "nosniff"), *headers]

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)


REASONS = {
    200: "OK",
    301: "Moved Permanently",
    304: "Not Modified",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def _text(status: int, message: str, headers: Iterable[tuple[str, str]] = ()) -> Response:
    return Response(status, (message + "\n").encode(), [("Content-Type", TEXT_TYPE), *headers])


def _json(doc: Any, status: int = 200) -> Response:
    body = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
    return Response(status, body, [("Content-Type", JSON_TYPE), ("Cache-Control", "no-store")])


# -- content negotiation ------------------------------------------------------


def _media_ranges(header: str) -> Iterator[tuple[str, dict[str, str], float]]:
    """``Accept``-like header -> (lowercased value, parameters, q) for each element."""
    for part in header.split(","):
        fields = [f.strip() for f in part.split(";")]
        if not fields[0]:
            continue
        params: dict[str, str] = {}
        for f in fields[1:]:
            k, _, v = f.partition("=")
            params[k.strip().lower()] = v.strip().strip('"')
        try:
            q = float(params.pop("q", "1"))
        except ValueError:
            q = 0.0
        if not 0 <= q <= 1:
            q = 0.0
        yield fields[0].lower(), params, q


def wants_openmetrics(accept: str | None) -> bool:
    """True if the client prefers OpenMetrics to the Prometheus text format (as Prometheus does)."""
    if not accept:
        return False
    om = text = 0.0
    for media, _params, q in _media_ranges(accept):
        if media == "application/openmetrics-text":
            om = max(om, q)
        elif media in ("text/plain", "text/*", "*/*"):
            text = max(text, q)
    return om > 0 and om >= text


def wants_gzip(accept_encoding: str | None) -> bool:
    if not accept_encoding:
        return False
    q = {coding: q for coding, _params, q in _media_ranges(accept_encoding)}
    if "gzip" in q:
        return q["gzip"] > 0
    return q.get("*", 0) > 0


# -- the dashboard's files ------------------------------------------------------


class _Asset:
    __slots__ = ("body", "etag", "gz", "type")

    def __init__(self, name: str, body: bytes) -> None:
        self.body = body
        self.gz = gzip.compress(body, 9, mtime=0) if len(body) > 512 else None
        self.etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        guessed = {".js": "text/javascript", ".svg": "image/svg+xml", ".css": "text/css", ".html": "text/html"}
        ctype = guessed.get(os.path.splitext(name)[1]) or mimetypes.guess_type(name)[0] or "application/octet-stream"
        self.type = ctype + ("; charset=utf-8" if ctype.startswith("text/") or ctype.endswith("+xml") else "")


def load_assets(directory: Path = ASSET_DIR) -> dict[str, _Asset]:
    """Every regular file directly in the asset directory, read once: name -> asset.

    Requests are answered from this dictionary by exact name, so no request
    path ever reaches the filesystem.
    """
    assets: dict[str, _Asset] = {}
    if not directory.is_dir():
        return assets
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        if entry.is_file(follow_symlinks=False) and not entry.name.startswith("."):
            assets[entry.name] = _Asset(entry.name, Path(entry.path).read_bytes())
    return assets


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


def series_id(publisher: str, name: str, labels: dict[str, str]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return f"{publisher}:{name}" + ("{" + inner + "}" if inner else "")


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
    when it listens on loopback, against DNS rebinding).
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
    ) -> None:
        self.directory = os.fspath(directory) if directory is not None else default_directory()
        if token is None:
            token = os.environ.get(TOKEN_ENV, "")
        self._token = token.encode() if token else None
        self.max_age = max_age
        self.allowed_hosts = frozenset(h.lower() for h in allowed_hosts) if allowed_hosts is not None else None
        self._collector = Collector(self.directory, publishers=publishers)
        self._exposer_options = {"publisher_label": publisher_label, "include_text": include_text}
        self._exposer = Exposer(**self._exposer_options)  # type: ignore[arg-type]
        self._lock = threading.Lock()  # rendering (the exposer and the rate history are not thread-safe)
        self._cond = threading.Condition()  # collecting: one at a time, shared by every waiting request
        self._collecting = False
        self._closed = False
        self._snapshot: _Snapshot | None = None
        self._history: deque[tuple[float, dict[Any, Any]]] = deque()
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
            with self._lock:
                body = snap.bodies.get(key)
                if body is None:
                    plain = snap.bodies.get((fmt, False))
                    if plain is None:
                        plain = self._exposer.render(snap.collection, fmt).encode()
                        self.problems = list(self._exposer.problems)
                        snap.bodies[(fmt, False)] = plain
                    body = gzip.compress(plain, 6) if compressed else plain
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
        try:
            return self._handle(method, path, query, headers)
        except Exception as exc:  # noqa: BLE001 - one request's failure must not stop the server
            print(f"statmap serve: {method} {path}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return _text(500, "internal error (see the server's log)")

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
        if method not in ("GET", "HEAD"):
            return _text(405, "only GET and HEAD", [("Allow", "GET, HEAD")])
        params = parse_qs(query, keep_blank_values=True) if query else {}
        if path == "/metrics":
            return self.metrics(params, headers)
        if path == "/api/series":
            return self.api_series(params)
        if path == "/api/processes":
            return self.api_processes()
        if path == "/healthz":
            return self.healthz()
        if path in ("/", "/index.html"):
            return self.asset("index.html", headers)
        if path.startswith("/static/"):
            return self.asset(path[len("/static/") :], headers)
        return _text(404, "not found")

    # -- routes --------------------------------------------------------------

    def metrics(self, params: dict[str, list[str]], headers: dict[str, str]) -> Response:
        fmt = (params.get("format") or [""])[-1]
        if fmt not in ("", "openmetrics", "prometheus"):
            return _text(400, "format: openmetrics or prometheus")
        if not fmt:
            fmt = "openmetrics" if wants_openmetrics(headers.get("accept")) else "prometheus"
        compressed = wants_gzip(headers.get("accept-encoding"))
        try:
            snap = self.snapshot()
        except CollectionError as exc:  # incomplete totals would read as a counter reset: say so, serve none
            print(f"statmap serve: /metrics: {exc}", file=sys.stderr)
            return _text(503, f"collection failed: {exc}")
        match = (params.get("match") or [""])[-1]
        if match:
            try:
                exposer = Exposer(match=match, **self._exposer_options)  # type: ignore[arg-type]
            except re.error as exc:
                return _text(400, f"match: bad regular expression: {exc}")
            try:
                body = exposer.render(snap.collection, fmt).encode()
            except re.error as exc:
                return _text(400, f"match: bad regular expression: {exc}")
            if compressed:
                body = gzip.compress(body, 6)
        else:
            body = self._body(snap, fmt, compressed)
        out = [
            ("Content-Type", OPENMETRICS_CONTENT_TYPE if fmt == "openmetrics" else PROMETHEUS_CONTENT_TYPE),
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
            # The baseline for rates: the newest earlier collection at least about a second old.
            baseline: tuple[float, dict[Any, Any]] | None = None
            for at, earlier in self._history:
                if at < snap.at and (baseline is None or snap.at - at >= RATE_WINDOW * 0.9):
                    baseline = (at, earlier)
            before = baseline[1] if baseline else {}
            dt = snap.at - baseline[0] if baseline else 0.0
            point: dict[Any, Any] = {}
            out: list[dict[str, Any]] = []
            for fam in c.families:
                for s in fam.samples:
                    key = (fam.publisher, fam.name, s.key)
                    value = s.value
                    entry: dict[str, Any] = {
                        "id": series_id(fam.publisher, fam.name, s.labels),
                        "publisher": fam.publisher,
                        "metric": fam.name,
                        "type": fam.type,
                        "unit": fam.unit,
                        "labels": s.labels,
                    }
                    prev = before.get(key)
                    if isinstance(value, HistogramValue):
                        point[key] = value
                        entry["count"] = value.count
                        entry["sum"] = _num(value.sum)
                        window = value
                        if isinstance(prev, HistogramValue) and len(prev.buckets) == len(value.buckets):
                            entry["rate"] = _num((value.count - prev.count) / dt) if dt > 0 else None
                            buckets = tuple(
                                (b, c1 - c0) for (b, c1), (_, c0) in zip(value.buckets, prev.buckets, strict=False)
                            )
                            window = HistogramValue(
                                value.count - prev.count, value.sum - prev.sum, buckets, value.log_buckets
                            )
                        else:
                            entry["rate"] = None
                        for q in QUANTILES:
                            entry[f"p{round(q * 100)}"] = _num(window.percentile(q)) if window.count > 0 else None
                        entry["value"] = entry["p50"]
                    elif isinstance(value, SummaryValue):
                        point[key] = value
                        entry["count"] = value.count
                        entry["sum"] = _num(value.sum)
                        avg = value.average
                        if isinstance(prev, SummaryValue) and dt > 0:
                            entry["rate"] = _num((value.count - prev.count) / dt)
                            n = value.count - prev.count
                            avg = (value.sum - prev.sum) / n if n > 0 else float("nan")
                        else:
                            entry["rate"] = None
                        entry["avg"] = entry["value"] = _num(avg)
                    elif isinstance(value, (int, float)) and not isinstance(value, bool):
                        entry["value"] = _raw(value)
                        if fam.type == "counter":
                            point[key] = value
                            rate = (value - prev) / dt if isinstance(prev, (int, float)) and dt > 0 else None
                            entry["rate"] = _num(rate) if rate is None or rate >= 0 else None
                    elif isinstance(value, dict):
                        entry["value"] = {str(k): str(v) for k, v in value.items()}
                    else:
                        entry["value"] = None if value is None else str(value)
                    out.append(entry)
            self._history.append((snap.at, point))
            while len(self._history) > 2 and snap.at - self._history[1][0] >= RATE_WINDOW:
                self._history.popleft()  # keep just enough to find a baseline about a second back
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
        snap = self.snapshot()
        try:
            allowed = {(f.publisher, f.name) for f in match_families(snap.collection.families, match or None)}
        except re.error as exc:
            return _text(400, f"match: bad regular expression: {exc}")
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


# -- WSGI and ASGI ------------------------------------------------------------------


class WSGIApp:
    """A WSGI application serving ``StatmapApp``'s routes below wherever it is mounted.

    ``WSGIApp(directory=None, token=None, **options)`` or ``WSGIApp(app=StatmapApp(...))``.
    It routes on ``PATH_INFO``, so it works under any ``SCRIPT_NAME`` (the
    dashboard uses relative links); see ``mount_wsgi`` to put it beside an
    application.
    """

    def __init__(
        self, directory: str | os.PathLike[str] | None = None, *, app: StatmapApp | None = None, **options: Any
    ) -> None:
        self.app = app if app is not None else StatmapApp(directory, **options)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        path = environ.get("PATH_INFO", "") or ""
        if path == "":  # mounted at /statmap and asked for /statmap: the dashboard's relative links need the slash
            location = (environ.get("SCRIPT_NAME", "") or "") + "/"
            start_response("301 Moved Permanently", [("Location", location), ("Content-Length", "0")])
            return [b""]
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        method = environ.get("REQUEST_METHOD", "GET")
        resp = self.app.handle(method, path, environ.get("QUERY_STRING", ""), headers)
        body = b"" if method == "HEAD" else resp.body
        start_response(
            f"{resp.status} {REASONS.get(resp.status, '')}", [*resp.headers, ("Content-Length", str(len(resp.body)))]
        )
        return [body]


def mount_wsgi(
    application: Callable[..., Any], prefix: str = "/statmap", statmap: Any = None, **options: Any
) -> Callable[..., Any]:
    """A WSGI application sending ``prefix`` and below to statmap, everything else to ``application``.

    ``statmap``: a ``WSGIApp`` (default: ``WSGIApp(**options)``). For Django,
    in ``wsgi.py``: ``application = mount_wsgi(get_wsgi_application())``;
    for Flask: ``app.wsgi_app = mount_wsgi(app.wsgi_app)``.
    """
    prefix = "/" + prefix.strip("/")
    inner = statmap if statmap is not None else WSGIApp(**options)

    def dispatch(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "") or ""
        if path == prefix or path.startswith(prefix + "/"):
            environ = dict(environ)
            environ["SCRIPT_NAME"] = (environ.get("SCRIPT_NAME", "") or "") + prefix
            environ["PATH_INFO"] = path[len(prefix) :]
            return inner(environ, start_response)
        return application(environ, start_response)

    return dispatch


class ASGIApp:
    """An ASGI application (HTTP and lifespan) serving ``StatmapApp``'s routes.

    Mount it in Starlette or FastAPI with ``app.mount("/statmap", ASGIApp())``:
    it routes on the path below ``root_path``. Collections run in a worker
    thread (``asyncio.to_thread``) so they never block the event loop.
    """

    def __init__(
        self, directory: str | os.PathLike[str] | None = None, *, app: StatmapApp | None = None, **options: Any
    ) -> None:
        self.app = app if app is not None else StatmapApp(directory, **options)

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        kind = scope.get("type")
        if kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if kind != "http":
            if kind == "websocket":
                await send({"type": "websocket.close", "code": 1000})
            return
        path = scope.get("path", "") or ""
        root = scope.get("root_path", "") or ""
        if root and (path == root or path.startswith(root + "/")):
            path = path[len(root) :]
        if path == "":
            await send(
                {
                    "type": "http.response.start",
                    "status": 301,
                    "headers": [(b"location", (root + "/").encode("latin-1")), (b"content-length", b"0")],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        headers: dict[str, str] = {}
        for k, v in scope.get("headers", []):
            name = k.decode("latin-1").lower()
            value = v.decode("latin-1")
            headers[name] = headers[name] + ", " + value if name in headers else value
        method = scope.get("method", "GET")
        query = scope.get("query_string", b"").decode("latin-1")
        resp = await asyncio.to_thread(self.app.handle, method, path, query, headers)
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in resp.headers]
        raw.append((b"content-length", str(len(resp.body)).encode()))
        await send({"type": "http.response.start", "status": resp.status, "headers": raw})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else resp.body})


# -- the standalone server -------------------------------------------------------------


def is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, None)
        except OSError:
            return False
        return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def _loopback_hosts(port: int) -> set[str]:
    names = {"localhost", "127.0.0.1", "[::1]"}
    return names | {f"{n}:{port}" for n in names}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: Prometheus and the dashboard reuse their connection
    server_version = "statmap"
    app: StatmapApp
    access_log = False

    def _serve(self) -> None:
        path, _, query = self.path.partition("?")
        if not path.startswith("/"):  # absolute-form ("http://...") or "*": not for this server
            self.send_error(400)
            return
        headers: dict[str, str] = {}
        for k, v in self.headers.items():
            name = k.lower()
            headers[name] = headers[name] + ", " + v if name in headers else v
        resp = self.app.handle(self.command, path, query, headers)
        self.send_response(resp.status, REASONS.get(resp.status))
        for k, v in resp.headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(resp.body)))
        self.end_headers()
        if self.command != "HEAD" and resp.body:
            self.wfile.write(resp.body)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _serve

    def version_string(self) -> str:
        return "statmap"

    def log_message(self, format: str, *args: Any) -> None:
        if self.access_log:
            sys.stderr.write(f"statmap serve: {self.address_string()} {format % args}\n")

    def log_error(self, format: str, *args: Any) -> None:
        pass  # timeouts and bad request lines get a response; no need to fill the log


class StatmapHTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # keep-alive connections must not delay a shutdown
    request_queue_size = 128
    block_on_close = False

    def __init__(self, address: tuple[str, int], app: StatmapApp, *, access_log: bool = False) -> None:
        host = address[0]
        if ":" in host.strip("[]"):
            self.address_family = socket.AF_INET6
            address = (host.strip("[]"), address[1])
        handler = type("Handler", (_Handler,), {"app": app, "access_log": access_log})
        super().__init__(address, handler)
        self.app = app

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        if isinstance(host, bytes):
            host = host.decode()
        shown = f"[{host}]" if ":" in str(host) else str(host)
        if str(host) in ("0.0.0.0", "::"):
            shown = "127.0.0.1" if str(host) == "0.0.0.0" else "[::1]"
        return f"http://{shown}:{port}/"


def make_server(
    directory: str | os.PathLike[str] | None = None,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    token: str | None = None,
    access_log: bool = False,
    check_host: bool = True,
    **options: Any,
) -> StatmapHTTPServer:
    """A ``ThreadingHTTPServer`` for the exporter and dashboard, bound but not serving yet.

    On loopback, requests whose ``Host`` is not a loopback name are refused
    (``check_host``), which stops a web page from reaching it through DNS rebinding.
    """
    app = StatmapApp(directory, token=token, **options)
    server = StatmapHTTPServer((host, port), app, access_log=access_log)
    if check_host and is_loopback(host) and app.allowed_hosts is None:
        app.allowed_hosts = frozenset(_loopback_hosts(server.server_address[1]))
    return server


def start_server(*args: Any, **kwargs: Any) -> StatmapHTTPServer:
    """``make_server(...)`` serving from a daemon thread; stop it with ``server.shutdown(); server.server_close()``."""
    server = make_server(*args, **kwargs)
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="statmap-serve", daemon=True
    ).start()
    return server


def bind_warning(host: str, token: bool) -> str | None:
    if is_loopback(host):
        return None
    guard = "a token protects it" if token else "anyone who can reach it can read your metrics (see --token)"
    return f"statmap serve: warning: listening on {host}, beyond loopback: {guard}"


def serve(
    directory: str | os.PathLike[str] | None = None,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    token: str | None = None,
    access_log: bool = False,
    out: Any = None,
    **options: Any,
) -> int:
    """Serve until SIGINT or SIGTERM; returns 0 after a clean stop."""
    out = out or sys.stdout
    if token is None:
        token = os.environ.get(TOKEN_ENV, "")
    warning = bind_warning(host, bool(token))
    server = make_server(directory, host, port, token=token, access_log=access_log, **options)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    stop = threading.Event()
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="statmap-serve")
    thread.start()
    protected = ", token required" if token else ""
    print(
        f"statmap serve: {server.app.directory} on {server.url} (dashboard {server.url}, "
        f"metrics {server.url}metrics{protected})",
        file=out,
        flush=True,
    )
    try:
        while not stop.wait(0.5):
            if not thread.is_alive():
                break
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()
        server.app.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("statmap serve: stopped", file=out, flush=True)
    return 0


__all__ = [
    "ASGIApp",
    "Response",
    "StatmapApp",
    "StatmapHTTPServer",
    "WSGIApp",
    "make_server",
    "mount_wsgi",
    "serve",
    "start_server",
    "wants_gzip",
    "wants_openmetrics",
]
