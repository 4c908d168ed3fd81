"""``statmap serve``: the HTTP exporter and the live dashboard of a statmap directory.

Routes (GET and HEAD):

* ``/metrics``: the aggregated view as OpenMetrics 1.0 or Prometheus text
  0.0.4, chosen from the ``Accept`` header (``?format=openmetrics|prometheus``
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

The core, ``StatmapApp``, is independent of any server: ``WSGIApp`` and
``ASGIApp`` adapt it to WSGI and ASGI (plain callables, no framework), so an
existing Flask, Django or FastAPI application can mount the exporter and
the dashboard; ``serve()`` runs it in ``StatmapHTTPServer``: one selector
thread for every socket plus a fixed pool of workers, with timeouts and a
connection cap (docs/serve.md, "Limits").

One collection is shared by every request for ``max_age`` seconds (0.5 by
default), and the rendered bodies with it: 50 clients polling cost one
collection per half-second, not 50. With ``max_age=0`` every request gets a
collection that started after it arrived, and the requests that arrive
during a collection share the next one.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import errno
import gzip
import hashlib
import hmac
import ipaddress
import json
import math
import mimetypes
import os
import queue
import re
import resource
import selectors
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from .collect import Collection, Collector, match_families
from .directory import default_directory
from .errors import CollectionError
from .expose import FORMATS, SCRAPE_FORMATS, Exposer
from .pattern import compile_pattern
from .reader import HistogramValue, SummaryValue
from .render import printable

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9464  # the port Prometheus' registry of default ports gives statmap-like exporters
TOKEN_ENV = "STATMAP_TOKEN"
ASSET_DIR = Path(__file__).resolve().parent / "dashboard"
QUANTILES = (0.5, 0.9, 0.99)
RATE_WINDOW = 1.0  # seconds: rates and percentiles are over (about) the last second
# The standalone server's limits (docs/serve.md, "Limits"): slow or idle clients cannot hold it.
DEFAULT_HEADER_TIMEOUT = 10.0  # seconds to send a whole request head
DEFAULT_IDLE_TIMEOUT = 60.0  # seconds a keep-alive connection may wait for its next request
DEFAULT_WRITE_TIMEOUT = 30.0  # seconds to take a whole response
DEFAULT_MAX_CONNECTIONS = 256  # open connections (at most half the descriptor limit)
DEFAULT_THREADS = 8  # workers running requests (collections are shared, so few are needed)

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


def _bad_pattern(pattern: str) -> Response | None:
    """A 400 naming the problem if statmap refuses ``pattern`` (statmap.pattern: linear time, no backtracking)."""
    try:
        compile_pattern(pattern)
    except re.error as exc:
        return _text(400, f"match: bad regular expression: {exc} (the pattern language: docs/serve.md#patterns)")
    return None


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
        except CollectionError as exc:  # every route: incomplete totals are never served (a 503 says why)
            print(f"statmap serve: {printable(path)}: {exc}", file=sys.stderr)
            return _text(503, f"collection failed: {exc}")
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
        if fmt and fmt not in SCRAPE_FORMATS:
            return _text(400, "format: " + " or ".join(SCRAPE_FORMATS))
        if not fmt:
            fmt = "openmetrics" if wants_openmetrics(headers.get("accept")) else "prometheus"
        compressed = wants_gzip(headers.get("accept-encoding"))
        match = (params.get("match") or [""])[-1]
        if match and (problem := _bad_pattern(match)):
            return problem
        snap = self.snapshot()  # a CollectionError is a 503 (handle): never totals that read as a reset
        if match:
            exposer = Exposer(match=match, **self._exposer_options)  # type: ignore[arg-type]
            body = exposer.render(snap.collection, fmt).encode()
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


# The standalone server: one I/O thread and a fixed pool of worker threads.
#
# Why not ThreadingHTTPServer: it gives every connection a thread that blocks
# in recv() with no timeout, so idle or slowly dribbling clients pin threads
# and descriptors until none is left (then accept() fails with EMFILE in a
# busy loop), and it writes headers and body in two send() calls, which with
# Nagle's algorithm and the client's delayed ACK costs every keep-alive
# response ~40 ms. Here one thread owns every socket through a selector: it
# accepts, reads request heads (with deadlines), writes what a worker could
# not send at once, times out idle keep-alive connections and caps their
# number. Workers only run ``StatmapApp.handle`` and send the response in one
# write (TCP_NODELAY is set on every accepted socket). Threads are bounded:
# 1 + ``threads``, whatever the clients do.

MAX_HEAD = 64 * 1024  # bytes of request line + headers
MAX_HEADERS = 100
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VERSION = re.compile(r"HTTP/1\.[0-9]")
_READING, _BUSY, _WRITING = 0, 1, 2
_OUT_OF_FDS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def _plain_response(status: int, message: str) -> bytes:
    """A complete response that closes the connection (refusals written without a worker)."""
    body = (message + "\n").encode()
    return (
        f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\nServer: statmap\r\n"
        f"Content-Type: {TEXT_TYPE}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
        + ("Retry-After: 1\r\n" if status == 503 else "")
        + "\r\n"
    ).encode() + body


REASONS.update({408: "Request Timeout", 413: "Content Too Large", 431: "Request Header Fields Too Large"})
REASONS.update({505: "HTTP Version Not Supported"})
_REFUSE_BUSY = _plain_response(503, "too many connections, try again")
_TIMEOUT = _plain_response(408, "request head not received in time")


class _Conn:
    """One client connection; owned by the I/O thread, or by one worker while ``_BUSY``."""

    __slots__ = ("buf", "deadline", "keep", "out", "peer", "since", "sock", "state")

    def __init__(self, sock: socket.socket, peer: Any, deadline: float) -> None:
        self.sock = sock
        self.peer = peer
        self.buf = b""
        self.out = b""
        self.state = _READING
        self.deadline = deadline
        self.since = time.monotonic()  # when it last became idle (the oldest idle one is evicted first)
        self.keep = True


class _Request:
    __slots__ = ("conn", "headers", "keep", "method", "path", "query", "target", "version")

    def __init__(
        self, conn: _Conn, method: str, target: str, version: str, headers: dict[str, str], keep: bool
    ) -> None:
        self.conn = conn
        self.method = method
        self.target = target
        self.path, _, self.query = target.partition("?")
        self.version = version
        self.headers = headers
        self.keep = keep


def _parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]] | tuple[int, str]:
    """(method, target, version, headers) or (status, problem) for a request head we refuse."""
    lines = head.decode("latin-1").split("\n")
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    while lines and not lines[0]:
        lines.pop(0)  # RFC 9112: a server ignores empty lines before the request line
    if not lines:
        return 400, "empty request"
    parts = lines[0].split(" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not parts[1]:
        return 400, "bad request line"
    method, target, version = parts
    if not _VERSION.fullmatch(version):
        return (505, "HTTP/1.x only") if version.startswith("HTTP/") else (400, "bad request line")
    headers: dict[str, str] = {}
    if len(lines) - 1 > MAX_HEADERS:
        return 431, "too many header fields"
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.fullmatch(name):
            return 400, "bad header field"  # obs-fold (leading white space) included
        name = name.lower()
        value = value.strip(" \t")
        headers[name] = headers[name] + ", " + value if name in headers else value
    return method, target, version, headers


class StatmapHTTPServer:
    """An HTTP/1.1 server for ``StatmapApp``: bounded threads, timeouts and a connection cap.

    ``header_timeout``: seconds for a client to send a whole request head
    (from its connection, or from the first byte of a later request);
    ``idle_timeout``: seconds a keep-alive connection may wait for its next
    request; ``write_timeout``: seconds for the client to take a whole
    response; ``max_connections``: open connections at most (lowered to half
    the process' descriptor limit so the collector keeps the rest); a new
    connection beyond it closes the longest idle one, or, when every
    connection has a request in progress, gets a 503 with ``Connection:
    close``; ``threads``: worker threads running requests.
    """

    def __init__(
        self,
        address: tuple[str, int],
        app: StatmapApp,
        *,
        access_log: bool = False,
        header_timeout: float = DEFAULT_HEADER_TIMEOUT,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        write_timeout: float = DEFAULT_WRITE_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        threads: int = DEFAULT_THREADS,
    ) -> None:
        for name, value in (
            ("header_timeout", header_timeout),
            ("idle_timeout", idle_timeout),
            ("write_timeout", write_timeout),
        ):
            if not value > 0 or not math.isfinite(value):
                raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
        for name, count in (("max_connections", max_connections), ("threads", threads)):
            if not isinstance(count, int) or count < 1:
                raise ValueError(f"{name} must be at least 1, not {count!r}")
        self.app = app
        self.access_log = access_log
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.write_timeout = write_timeout
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.max_connections = (
            max_connections if soft == resource.RLIM_INFINITY else min(max_connections, max(1, soft // 2))
        )
        host = address[0]
        family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind((host.strip("[]"), address[1]))
            self.socket.listen(128)
            self.socket.setblocking(False)
        except OSError:
            self.socket.close()
            raise
        self.server_address = self.socket.getsockname()
        self._conns: dict[int, _Conn] = {}
        self._sel: selectors.BaseSelector | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._done: deque[tuple[_Conn, bytes, bool]] = deque()
        self._work: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._stopped.set()
        self._paused_until = 0.0  # accepting paused (out of descriptors) until then
        self._reserve: int | None = os.open(os.devnull, os.O_RDONLY)  # freed to refuse a client at EMFILE
        self._workers = [
            threading.Thread(target=self._worker, name=f"statmap-serve-{i}", daemon=True) for i in range(threads)
        ]
        for t in self._workers:
            t.start()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else str(host)
        if str(host) in ("0.0.0.0", "::"):
            shown = "127.0.0.1" if str(host) == "0.0.0.0" else "[::1]"
        return f"http://{shown}:{port}/"

    # -- the I/O thread ---------------------------------------------------------

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serve until ``shutdown()``; ``poll_interval`` bounds how late a timeout or a shutdown is noticed."""
        self._stopped.clear()
        sel = self._sel = selectors.DefaultSelector()
        try:
            sel.register(self.socket, selectors.EVENT_READ, None)
            sel.register(self._wake_r, selectors.EVENT_READ, "wake")
            listening = True
            next_sweep = 0.0
            while not self._stop.is_set():
                for key, mask in sel.select(min(poll_interval, 0.25)):
                    if key.data is None:
                        self._accept()
                    elif key.data == "wake":
                        self._drain_wake()
                    else:
                        conn: _Conn = key.data
                        if mask & selectors.EVENT_READ and conn.state == _READING:
                            self._readable(conn)
                        elif mask & selectors.EVENT_WRITE and conn.state == _WRITING:
                            self._writable(conn)
                self._finish_done()
                now = time.monotonic()
                paused = now < self._paused_until
                if paused and listening:
                    sel.unregister(self.socket)
                    listening = False
                elif not paused and not listening:
                    sel.register(self.socket, selectors.EVENT_READ, None)
                    listening = True
                if now >= next_sweep:
                    next_sweep = now + 0.1
                    for conn in [c for c in self._conns.values() if c.state != _BUSY and c.deadline <= now]:
                        if conn.state == _READING and conn.buf:
                            self._close(conn, _TIMEOUT)
                        else:
                            self._close(conn)
            # Stopping: no more accepting; idle connections go now, requests in progress may finish.
            if listening:
                sel.unregister(self.socket)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                for conn in [c for c in self._conns.values() if c.state == _READING]:
                    self._close(conn)
                if not self._conns:
                    break
                for key, mask in sel.select(0.05):
                    if key.data == "wake":
                        self._drain_wake()
                    elif key.data is not None and mask & selectors.EVENT_WRITE:
                        self._writable(key.data)
                self._finish_done()
            for conn in [c for c in self._conns.values() if c.state != _BUSY]:
                self._close(conn)
        finally:
            self._sel = None
            sel.close()
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop ``serve_forever`` (from another thread) and wait until it has returned."""
        self._stop.set()
        self._wake()
        self._stopped.wait()

    def server_close(self) -> None:
        self._stop.set()
        self.socket.close()
        for _ in self._workers:
            self._work.put(None)
        for t in self._workers:
            t.join(timeout=5)
        for conn in list(self._conns.values()):
            with contextlib.suppress(OSError):
                conn.sock.close()
        self._conns.clear()
        self._wake_r.close()
        self._wake_w.close()
        if self._reserve is not None:
            os.close(self._reserve)
            self._reserve = None

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full (a wake-up is pending anyway) or closed
            self._wake_w.send(b"\0")

    def _drain_wake(self) -> None:
        with contextlib.suppress(OSError):
            while self._wake_r.recv(4096):
                pass

    def _accept(self) -> None:
        for _ in range(64):  # then let the other sockets have their turn
            try:
                sock, peer = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno not in _OUT_OF_FDS:
                    continue  # ECONNABORTED and the like: that client is gone
                if self._evict():
                    continue  # a descriptor is free again
                self._refuse_without_descriptor()
                return
            sock.setblocking(False)
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # one write per response, sent now
            if len(self._conns) >= self.max_connections and not self._evict():
                self._send_and_close(sock, _REFUSE_BUSY)
                continue
            conn = _Conn(sock, peer, time.monotonic() + self.header_timeout)
            self._conns[sock.fileno()] = conn
            assert self._sel is not None
            self._sel.register(sock, selectors.EVENT_READ, conn)
            self._readable(conn)  # its request is often here already: then it is busy, not evictable

    def _evict(self) -> bool:
        """Close the connection idle (or reading a head) the longest, to make room; False if none is."""
        idle = [c for c in self._conns.values() if c.state == _READING]
        if not idle:
            return False
        self._close(min(idle, key=lambda c: c.since))
        return True

    def _refuse_without_descriptor(self) -> None:
        """Out of descriptors and nothing to evict: refuse one client with the reserve, then pause."""
        if self._reserve is not None:
            os.close(self._reserve)
            self._reserve = None
            try:
                sock, _ = self.socket.accept()
                self._send_and_close(sock, _REFUSE_BUSY)
            except OSError:
                pass
            with contextlib.suppress(OSError):
                self._reserve = os.open(os.devnull, os.O_RDONLY)
        self._paused_until = time.monotonic() + 0.25  # no busy loop on EMFILE

    @staticmethod
    def _send_and_close(sock: socket.socket, data: bytes) -> None:
        with contextlib.suppress(OSError):
            sock.setblocking(False)
            sock.send(data)  # one try, never blocks: a client that does not read just loses it
            sock.shutdown(socket.SHUT_WR)
        sock.close()

    def _close(self, conn: _Conn, farewell: bytes = b"") -> None:
        self._conns.pop(conn.sock.fileno(), None)
        if self._sel is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(conn.sock)
        if farewell:
            self._send_and_close(conn.sock, farewell)
        else:
            conn.sock.close()

    def _readable(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        if not data:
            self._close(conn)
            return
        if not conn.buf:
            conn.deadline = time.monotonic() + self.header_timeout  # a request has begun
        conn.buf += data
        self._next_request(conn)

    def _next_request(self, conn: _Conn) -> None:
        """Start the request whose head is complete in ``conn.buf``, if any."""
        found = _HEAD_END.search(conn.buf, 0, MAX_HEAD + 4)
        if found is None:
            if len(conn.buf) > MAX_HEAD:
                self._close(conn, _plain_response(431, "request head too large"))
            return
        head, conn.buf = conn.buf[: found.start()], conn.buf[found.end() :]
        parsed = _parse_head(head)
        if len(parsed) == 2:
            status, problem = parsed
            self._close(conn, _plain_response(status, problem))
            return
        method, target, version, headers = parsed
        tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
        keep = "keep-alive" in tokens if version == "HTTP/1.0" else "close" not in tokens
        if headers.get("content-length", "0").strip() != "0" or "transfer-encoding" in headers:
            # No route takes a body: answer, then close rather than read (and never mis-frame) it.
            keep = False
            conn.buf = b""
        conn.state = _BUSY
        assert self._sel is not None
        self._sel.unregister(conn.sock)
        self._work.put(_Request(conn, method, target, version, headers, keep))

    def _writable(self, conn: _Conn) -> None:
        try:
            sent = conn.sock.send(conn.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        conn.out = conn.out[sent:]
        if not conn.out:
            self._response_sent(conn)

    def _finish_done(self) -> None:
        """Take back the connections whose request a worker has finished."""
        while self._done:
            conn, rest, failed = self._done.popleft()
            if failed:
                self._close(conn)
            elif rest:
                conn.out = rest
                conn.state = _WRITING
                conn.deadline = time.monotonic() + self.write_timeout
                assert self._sel is not None
                self._sel.register(conn.sock, selectors.EVENT_WRITE, conn)
            else:
                assert self._sel is not None
                self._sel.register(conn.sock, selectors.EVENT_READ, conn)
                self._response_sent(conn)

    def _response_sent(self, conn: _Conn) -> None:
        if not conn.keep or self._stop.is_set():
            self._close(conn)
            return
        now = time.monotonic()
        conn.state = _READING
        conn.since = now
        conn.deadline = now + (self.header_timeout if conn.buf else self.idle_timeout)
        assert self._sel is not None
        if conn.out == b"" and self._sel.get_key(conn.sock).events != selectors.EVENT_READ:
            self._sel.modify(conn.sock, selectors.EVENT_READ, conn)
        if conn.buf:
            self._next_request(conn)  # pipelined

    # -- the workers ------------------------------------------------------------------

    def _worker(self) -> None:
        while (req := self._work.get()) is not None:
            conn = req.conn
            rest, failed = b"", False
            try:
                data, keep = self._respond(req)
                conn.keep = keep
                try:
                    sent = conn.sock.send(data)  # headers and body: one write
                except (BlockingIOError, InterruptedError):
                    sent = 0
                rest = data[sent:]
            except Exception:  # noqa: BLE001 - a client that went away, or a bug: drop this connection only
                failed = True
            self._done.append((conn, rest, failed))
            self._wake()

    def _respond(self, req: _Request) -> tuple[bytes, bool]:
        keep = req.keep and not self._stop.is_set()
        if not req.path.startswith("/"):  # absolute-form ("http://...") or "*": not for this server
            resp = _text(400, "bad request target")
        else:
            resp = self.app.handle(req.method, req.path, req.query, req.headers)
        lines = [f"HTTP/1.1 {resp.status} {REASONS.get(resp.status, '')}", "Server: statmap", f"Date: {_http_date()}"]
        lines += [f"{k}: {v}" for k, v in resp.headers]
        lines.append(f"Content-Length: {len(resp.body)}")
        if not keep:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if self.access_log:
            sys.stderr.write(
                f'statmap serve: {req.conn.peer[0]} "{req.method} {req.target} {req.version}" '
                f"{resp.status} {len(resp.body)}\n"
            )
        return (head if req.method == "HEAD" else head + resp.body), keep


_date_cache: tuple[int, str] = (0, "")


def _http_date() -> str:
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, email.utils.formatdate(now, usegmt=True))
    return _date_cache[1]


def make_server(
    directory: str | os.PathLike[str] | None = None,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    token: str | None = None,
    access_log: bool = False,
    check_host: bool = True,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    write_timeout: float = DEFAULT_WRITE_TIMEOUT,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    threads: int = DEFAULT_THREADS,
    **options: Any,
) -> StatmapHTTPServer:
    """A ``StatmapHTTPServer`` for the exporter and dashboard, bound but not serving yet.

    On loopback, requests whose ``Host`` is not a loopback name are refused
    (``check_host``), which stops a web page from reaching it through DNS rebinding.
    The timeouts, ``max_connections`` and ``threads``: see ``StatmapHTTPServer``;
    the other options go to ``StatmapApp``.
    """
    app = StatmapApp(directory, token=token, **options)
    try:
        server = StatmapHTTPServer(
            (host, port),
            app,
            access_log=access_log,
            header_timeout=header_timeout,
            idle_timeout=idle_timeout,
            write_timeout=write_timeout,
            max_connections=max_connections,
            threads=threads,
        )
    except BaseException:
        app.close()
        raise
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
