"""HTTP helpers shared by statmap's web app and its hosts: responses, content negotiation, the dashboard's files.

``Response`` is what ``StatmapApp`` returns and every host (WSGI, ASGI, the
standard-library server) sends; ``wants_openmetrics`` and ``wants_gzip``
read ``Accept`` and ``Accept-Encoding``; ``load_assets`` reads the
dashboard's files once; ``is_loopback`` and ``bind_warning`` judge a listen
address; the last section is HTTP/1.1 on the wire (request heads, complete
plain responses, the ``Date`` header) for the standard-library server.
Imports nothing of statmap's.
"""

from __future__ import annotations

import email.utils
import functools
import gzip
import hashlib
import ipaddress
import json
import mimetypes
import os
import re
import socket
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

ASSET_DIR = Path(__file__).resolve().parent / "dashboard"
JSON_TYPE = "application/json; charset=utf-8"
TEXT_TYPE = "text/plain; charset=utf-8"


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


_METRIC_FAMILY = "io.prometheus.client.metricfamily"  # the protobuf exposition (expose_proto.py)


@functools.lru_cache(maxsize=256)
def wants_protobuf(accept: str | None) -> bool:
    """True if ``Accept`` prefers delimited MetricFamily protobuf to every text format (as Prometheus does)."""
    if not accept:
        return False
    proto = text = 0.0
    for media, params, q in _media_ranges(accept):
        if media == "application/vnd.google.protobuf":
            if params.get("proto", "").lower() == _METRIC_FAMILY and params.get("encoding", "").lower() == "delimited":
                proto = max(proto, q)
        elif media in ("application/openmetrics-text", "text/plain", "text/*", "*/*"):
            text = max(text, q)
    return proto > 0 and proto >= text


@functools.lru_cache(maxsize=256)  # a scraper sends the same header every time: parse it once (~10 us)
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


@functools.lru_cache(maxsize=256)
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


# -- the listen address -------------------------------------------------------------


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


def bind_warning(host: str, token: bool) -> str | None:
    if is_loopback(host):
        return None
    guard = "a token protects it" if token else "anyone who can reach it can read your metrics (see --token)"
    return f"statmap serve: warning: listening on {host}, beyond loopback: {guard}"


# -- HTTP/1.1 on the wire (the standard-library server) ---------------------------------

MAX_HEAD = 64 * 1024  # bytes of request line + headers
MAX_HEADERS = 100
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VERSION = re.compile(r"HTTP/1\.[0-9]")


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


_date_cache: tuple[int, str] = (0, "")


def _http_date() -> str:
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, email.utils.formatdate(now, usegmt=True))
    return _date_cache[1]
