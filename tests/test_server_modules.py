"""The parts of ``statmap serve``: one module per host, the app with its route table, the HTTP helpers.

``statmap.server`` gathers their public names, so existing imports keep
working; the parts import only downward (the hosts import the app, the app
the helpers), which a fresh interpreter checks by what each one loads.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

import statmap.server
from statmap import app, host_asgi, host_stdlib, host_wsgi, httputil, rates

pytestmark = pytest.mark.once  # module structure: nothing here reads a value cell

HOMES = {
    "StatmapApp": app,
    "ROUTES": app,
    "series_id": app,
    "TOKEN_ENV": app,
    "RATE_WINDOW": app,
    "WSGIApp": host_wsgi,
    "mount_wsgi": host_wsgi,
    "ASGIApp": host_asgi,
    "StatmapHTTPServer": host_stdlib,
    "make_server": host_stdlib,
    "start_server": host_stdlib,
    "serve": host_stdlib,
    "DEFAULT_HOST": host_stdlib,
    "DEFAULT_PORT": host_stdlib,
    "DEFAULT_HEADER_TIMEOUT": host_stdlib,
    "DEFAULT_IDLE_TIMEOUT": host_stdlib,
    "DEFAULT_WRITE_TIMEOUT": host_stdlib,
    "DEFAULT_MAX_CONNECTIONS": host_stdlib,
    "DEFAULT_THREADS": host_stdlib,
    "Response": httputil,
    "REASONS": httputil,
    "JSON_TYPE": httputil,
    "TEXT_TYPE": httputil,
    "ASSET_DIR": httputil,
    "MAX_HEAD": httputil,
    "MAX_HEADERS": httputil,
    "load_assets": httputil,
    "wants_gzip": httputil,
    "wants_openmetrics": httputil,
    "is_loopback": httputil,
    "bind_warning": httputil,
    "QUANTILES": rates,
}


def test_statmap_server_re_exports_every_public_name_from_its_home() -> None:
    assert sorted(statmap.server.__all__) == sorted(HOMES)
    for name, home in HOMES.items():
        assert getattr(statmap.server, name) is getattr(home, name), name


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("httputil", ["app", "rates", "server", "host_wsgi", "host_asgi", "host_stdlib"]),
        ("rates", ["app", "server", "httputil", "host_wsgi", "host_asgi", "host_stdlib", "top"]),
        ("app", ["server", "host_wsgi", "host_asgi", "host_stdlib"]),
        ("host_wsgi", ["server", "host_asgi", "host_stdlib"]),
        ("host_asgi", ["server", "host_wsgi", "host_stdlib"]),
        ("host_stdlib", ["server", "host_wsgi", "host_asgi"]),
    ],
)
def test_each_part_imports_only_downward(module: str, forbidden: list[str]) -> None:
    code = f"import sys, statmap.{module}\nprint(' '.join(m for m in {forbidden!r} if 'statmap.' + m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "", f"statmap.{module} loads {out.stdout.strip()}"


def test_the_route_table_answers_its_paths(statdir: str) -> None:
    """Every path of ROUTES reaches its handler; others are 404; /static/NAME is the prefix route."""
    application = app.StatmapApp(statdir, token="", max_age=0)
    try:
        expected_type = {
            "/metrics": "text/plain; version=0.0.4",
            "/api/series": "application/json",
            "/api/processes": "application/json",
            "/api/history": "application/json",
            "/api/knobs": "application/json",
            "/healthz": "text/plain",
            "/": "text/html",
            "/index.html": "text/html",
        }
        assert sorted(app.ROUTES) == sorted(expected_type)
        for path, ctype in expected_type.items():
            resp = application.handle("GET", path, "", {})
            assert resp.status == 200, (path, resp.body)
            assert (resp.header("Content-Type") or "").startswith(ctype), (path, resp.headers)
        name = next(n for n in application.assets if n != "index.html")
        assert application.handle("GET", "/static/" + name, "", {}).status == 200
        for path in ("/nothing", "/metrics/", "/static/", "/static/../server.py", "/api"):
            assert application.handle("GET", path, "", {}).status == 404, path
    finally:
        application.close()
