"""``statmap serve``: the HTTP exporter and the live dashboard of a statmap directory.

The core, ``StatmapApp`` (``statmap.app``: the routes, the token, one
collection shared between requests), is independent of any server:
``WSGIApp`` and ``ASGIApp`` adapt it to WSGI and ASGI (plain callables, no
framework), so an existing Flask, Django or FastAPI application can mount
the exporter and the dashboard; ``serve()`` runs it in
``StatmapHTTPServer``: one selector thread for every socket plus a fixed
pool of workers, with timeouts and a connection cap (docs/serve.md,
"Limits").
"""

from __future__ import annotations

# This module only gathers the public names of the parts, so `from statmap.server import ...` keeps
# working. Imports go one way, down this list: host_stdlib.py (StatmapHTTPServer, make_server,
# start_server, serve), host_wsgi.py (WSGIApp, mount_wsgi), host_asgi.py (ASGIApp); app.py
# (StatmapApp and its route table); rates.py (rates for /api/series); httputil.py (Response,
# content negotiation, the dashboard's files, HTTP/1.1 on the wire).
from .app import RATE_WINDOW, ROUTES, TOKEN_ENV, StatmapApp, series_id
from .host_asgi import ASGIApp
from .host_stdlib import (
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_HOST,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_PORT,
    DEFAULT_THREADS,
    DEFAULT_WRITE_TIMEOUT,
    StatmapHTTPServer,
    make_server,
    serve,
    start_server,
)
from .host_wsgi import WSGIApp, mount_wsgi
from .httputil import (
    ASSET_DIR,
    JSON_TYPE,
    MAX_HEAD,
    MAX_HEADERS,
    REASONS,
    TEXT_TYPE,
    Response,
    bind_warning,
    is_loopback,
    load_assets,
    wants_gzip,
    wants_openmetrics,
)
from .rates import QUANTILES

__all__ = [
    "ASSET_DIR",
    "DEFAULT_HEADER_TIMEOUT",
    "DEFAULT_HOST",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_PORT",
    "DEFAULT_THREADS",
    "DEFAULT_WRITE_TIMEOUT",
    "JSON_TYPE",
    "MAX_HEAD",
    "MAX_HEADERS",
    "QUANTILES",
    "RATE_WINDOW",
    "REASONS",
    "ROUTES",
    "TEXT_TYPE",
    "TOKEN_ENV",
    "ASGIApp",
    "Response",
    "StatmapApp",
    "StatmapHTTPServer",
    "WSGIApp",
    "bind_warning",
    "is_loopback",
    "load_assets",
    "make_server",
    "mount_wsgi",
    "series_id",
    "serve",
    "start_server",
    "wants_gzip",
    "wants_openmetrics",
]
