"""``statmap serve``: routes, content negotiation, gzip, the token, path traversal, shutdown,
the WSGI and ASGI objects and ``statmap demo``: real servers and real publishing processes."""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest

import statmap
from statmap.server import (
    ASSET_DIR,
    WSGIApp,
    load_assets,
    mount_wsgi,
    wants_gzip,
    wants_openmetrics,
)

from .test_server_support import Server, Worker, free_port, raw_request, wait_for

pytestmark = pytest.mark.once  # the server's HTTP side: the values come from the collector, tested under both cells

PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


@pytest.fixture
def workers(statdir: str) -> Iterator[list[Worker]]:
    ws = [Worker(statdir), Worker(statdir)]
    try:
        yield ws
    finally:
        for w in ws:
            w.stop()


@pytest.fixture
def server(statdir: str, workers: list[Worker]) -> Iterator[Server]:
    s = Server(statdir, "--max-age", "0")
    try:
        yield s
    finally:
        s.stop()


# -- routes -------------------------------------------------------------------


def test_healthz_and_processes(server: Server, workers: list[Worker], statdir: str) -> None:
    status, _, body = server.request("/healthz")
    assert (status, body) == (200, b"ok\n")
    doc = server.json("/api/processes")
    pids = {p["pid"]: p for p in doc["processes"]}
    assert set(pids) == {w.pid for w in workers}
    for p in pids.values():
        assert p["name"] == "svc" and p["state"] == "alive"
        assert p["age"] >= 0 and p["series"] >= 3
        assert "/" not in p["file"] and p["file"].endswith(".statmap")
    assert doc["counts"] == {"alive": 2}
    workers[0]("close")
    doc = server.json("/api/processes")
    assert {p["pid"]: p["state"] for p in doc["processes"]} == {workers[0].pid: "closed", workers[1].pid: "alive"}


def test_series_values_rates_percentiles_and_filters(server: Server, workers: list[Worker]) -> None:
    for w in workers:
        w("inc 5")
        w("set 2.5")
        w("observe 0.05")
    doc = server.json("/api/series")
    by_id = {s["id"]: s for s in doc["series"]}
    assert by_id['svc:jobs{queue="high"}']["value"] == 10
    assert by_id["svc:level"]["value"] == 5.0
    hist = by_id["svc:latency"]
    assert hist["count"] == 2 and hist["type"] == "histogram" and hist["unit"] == "seconds"
    assert 0.01 <= hist["p50"] <= 0.1
    # Rates: over about a second, between two collections.
    time.sleep(1.05)
    for w in workers:
        w("inc 50")
        w("observe 0.5")
    doc = server.json("/api/series")
    by_id = {s["id"]: s for s in doc["series"]}
    jobs = by_id['svc:jobs{queue="high"}']
    assert jobs["value"] == 110
    assert 20 <= jobs["rate"] <= 100  # 100 more over a bit more than one second
    hist = by_id["svc:latency"]
    assert hist["rate"] > 0 and 0.1 <= hist["p50"] <= 1.0  # the interval's observations only
    # match (metric names, regex), q (words), pin, limit
    doc = server.json("/api/series?match=^lev")
    assert [s["id"] for s in doc["series"]] == ["svc:level"] and doc["matched"] == 1
    doc = server.json("/api/series?q=JOBS+high")
    assert [s["id"] for s in doc["series"]] == ['svc:jobs{queue="high"}']
    doc = server.json("/api/series?q=nothing-like-this&pin=svc:level")
    assert doc["series"] == [] and [s["id"] for s in doc["pinned"]] == ["svc:level"]
    doc = server.json("/api/series?limit=1")
    assert len(doc["series"]) == 1 and doc["matched"] == 3
    status, _, body = server.request("/api/series?match=(")
    assert status == 400 and b"regular expression" in body
    status, _, _ = server.request("/api/series?limit=x")
    assert status == 400


def test_not_found_methods_and_head(server: Server) -> None:
    assert server.request("/nope")[0] == 404
    status, headers, _ = server.request("/metrics", method="POST")
    assert status == 405 and headers["Allow"] == "GET, HEAD"
    status, headers, body = server.request("/metrics", method="HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0


# -- content negotiation and gzip ------------------------------------------------


def test_metrics_content_negotiation(server: Server, workers: list[Worker], tmp_path: Path) -> None:
    workers[0]("inc 7")
    workers[0]("observe 0.2")
    status, headers, text = server.request("/metrics")
    assert status == 200 and headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert b'jobs_total{queue="high"} 7\n' in text and b"# EOF" not in text
    for accept in (PROMETHEUS_ACCEPT, "application/openmetrics-text; version=1.0.0", "application/openmetrics-text"):
        status, headers, om = server.request("/metrics", {"Accept": accept})
        assert headers["Content-Type"] == "application/openmetrics-text; version=1.0.0; charset=utf-8", accept
        assert om.endswith(b"# EOF\n") and b"jobs_created" in om
    for accept in ("text/plain", "text/plain;q=1, application/openmetrics-text;q=0.5", "application/json", "*/*"):
        _, headers, _ = server.request("/metrics", {"Accept": accept})
        assert headers["Content-Type"].startswith("text/plain; version=0.0.4"), accept
    _, headers, _ = server.request("/metrics?format=openmetrics")
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    _, headers, _ = server.request("/metrics?format=prometheus", {"Accept": PROMETHEUS_ACCEPT})
    assert headers["Content-Type"].startswith("text/plain")
    assert server.request("/metrics?format=xml")[0] == 400
    status, _, only = server.request("/metrics?match=^level$")
    assert status == 200 and b"level 0.0" in only and b"jobs" not in only
    # Both formats are valid: prometheus_client's strict OpenMetrics parser, and promtool.
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    names = {f.name for f in text_string_to_metric_families(om.decode())}
    assert {"jobs", "level", "latency_seconds"} <= names
    promtool = shutil.which("promtool")
    if promtool is None and os.environ.get("STATMAP_REQUIRE_DEPS") == "1":
        pytest.fail("needs promtool (Debian package prometheus) for the last check")
    if promtool:
        check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=60)
        assert check.returncode == 0, check.stdout + check.stderr


def test_metrics_gzip(server: Server, workers: list[Worker]) -> None:
    workers[1]("inc 3")
    _, _, plain = server.request("/metrics")
    status, headers, body = server.request("/metrics", {"Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip" and "Accept-Encoding" in headers["Vary"]
    assert gzip.decompress(body) == plain
    _, headers, body = server.request("/metrics", {"Accept-Encoding": "gzip;q=0, identity"})
    assert headers["Content-Encoding"] is None and body == plain
    _, headers, body = server.request("/metrics", {"Accept-Encoding": "br, gzip;q=0.5", "Accept": PROMETHEUS_ACCEPT})
    assert headers["Content-Encoding"] == "gzip" and gzip.decompress(body).endswith(b"# EOF\n")
    _, headers, body = server.request("/static/app.js", {"Accept-Encoding": "gzip"})
    assert headers["Content-Encoding"] == "gzip" and gzip.decompress(body) == (ASSET_DIR / "app.js").read_bytes()


def test_negotiation_functions() -> None:
    assert wants_openmetrics(PROMETHEUS_ACCEPT)
    assert not wants_openmetrics(None) and not wants_openmetrics("")
    assert not wants_openmetrics("application/openmetrics-text;q=0, text/plain")
    assert not wants_openmetrics("text/plain;q=0.9, application/openmetrics-text;q=0.1")
    assert wants_openmetrics("application/openmetrics-text;q=0.9, text/plain;q=0.9")
    assert wants_gzip("gzip") and wants_gzip("deflate, gzip;q=1.0, *;q=0.5") and wants_gzip("*")
    assert not wants_gzip("gzip;q=0") and not wants_gzip("identity") and not wants_gzip(None)
    assert not wants_gzip("gzip;q=0, *")


# -- the token --------------------------------------------------------------------

ROUTES = (
    "/",
    "/index.html",
    "/static/app.js",
    "/static/style.css",
    "/metrics",
    "/api/series",
    "/api/processes",
    "/healthz",
    "/nope",
    "/static/../../etc/passwd",
)


@pytest.mark.parametrize("via", ["option", "environment"])
def test_token_protects_every_route(statdir: str, workers: list[Worker], via: str) -> None:
    token = "s3cret-token-123"
    if via == "option":
        server = Server(statdir, "--token", token)
    else:
        server = Server(statdir, env=dict(os.environ, STATMAP_TOKEN=token))
    try:
        assert "token required" in server.first_line
        for path in ROUTES:
            status, headers, body = server.request(path)
            assert status == 401, path
            assert "Bearer" in str(headers) and 'Basic realm="statmap"' in str(headers)
            assert b"svc" not in body
            for bad in (
                "Bearer wrong",
                f"Bearer {token}x",
                f"Bearer {token[:-1]}",
                "Bearer",
                token,
                f"Token {token}",
                "Basic !!!",
                "Basic " + base64.b64encode(b"user:nope").decode(),
            ):
                assert server.request(path, {"Authorization": bad})[0] == 401, (path, bad)
        good = {"Authorization": f"Bearer {token}"}
        assert server.request("/metrics", good)[0] == 200
        assert server.request("/", good)[0] == 200
        assert server.request("/nope", good)[0] == 404
        basic = {"Authorization": "Basic " + base64.b64encode(f"anyone:{token}".encode()).decode()}
        assert server.request("/api/processes", basic)[0] == 200
        assert server.request("/metrics", {"Authorization": f"bearer {token}"})[0] == 200  # the scheme is case-blind
    finally:
        server.stop()


# -- never a file outside the assets, never a path outside the directory --------------

TRAVERSALS = [
    "/static/../server.py",
    "/static/../../../../../../etc/passwd",
    "/static/..%2f..%2f..%2fetc%2fpasswd",
    "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/static/%2e%2e%2fserver.py",
    "/static//etc/passwd",
    "/static/%2fetc%2fpasswd",
    "/static/app.js/../../server.py",
    "/static/..\\..\\server.py",
    "/static/",
    "/static/.",
    "/static/..",
    "/static/__init__.py",
    "/static/../__init__.py",
    "/../../../../etc/passwd",
    "//etc/passwd",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/static/app.js%00.html",
    "/static/app.js?/../../server.py",
    "/dashboard/app.js",
    "/static/APP.JS",
]


def test_path_traversal(server: Server, statdir: str) -> None:
    passwd = Path("/etc/passwd").read_bytes()[:40]
    source = (Path(ASSET_DIR).parent / "server.py").read_bytes()[:60]
    for path in TRAVERSALS:
        status, body = raw_request(server.port, f"GET {path} HTTP/1.1")
        if path.startswith("/static/app.js?"):
            assert status == 200 and body == (ASSET_DIR / "app.js").read_bytes()  # the query is not part of the name
            continue
        assert status in (400, 404), (path, status)
        assert passwd not in body and source not in body, path
    for line in ("GET http://127.0.0.1/../../etc/passwd HTTP/1.1", "GET * HTTP/1.1", "GET ../../etc/passwd HTTP/1.1"):
        status, body = raw_request(server.port, line)
        assert status in (400, 404) and passwd not in body, line


def test_assets_are_only_the_dashboard_files(tmp_path: Path) -> None:
    served = set(load_assets())
    on_disk = {p.name for p in ASSET_DIR.iterdir() if p.is_file() and not p.name.startswith(".")}
    assert served == on_disk and {"index.html", "app.js", "style.css"} <= served
    # A symbolic link or a subdirectory in an asset directory is not served.
    d = tmp_path / "assets"
    (d / "sub").mkdir(parents=True)
    (d / "ok.js").write_text("1")
    (d / "sub" / "inner.js").write_text("2")
    (d / "link.txt").symlink_to("/etc/passwd")
    (d / ".hidden").write_text("3")
    assert set(load_assets(d)) == {"ok.js"}


def test_dashboard_is_self_contained(server: Server) -> None:
    status, headers, html = server.request("/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
    refs = re.findall(rb'(?:src|href)="([^"]+)"', html)
    assert refs and all(not r.startswith((b"http:", b"https:", b"//", b"/")) for r in refs), refs
    for name in ("app.js", "style.css"):
        body = (ASSET_DIR / name).read_bytes()
        assert not re.search(rb"https?://(?!www\.w3\.org/2000/svg)", body), name  # no CDN, no remote asset
    etag = headers["ETag"]
    assert server.request("/", {"If-None-Match": etag})[0] == 304


def test_no_path_outside_the_directory_is_exposed(server: Server, statdir: str, workers: list[Worker]) -> None:
    Path(statdir, "svc.99999.0123456789abcdef.statmap").write_bytes(b"not a statmap file at all " * 200)
    for path in ("/api/processes", "/api/series", "/metrics", "/healthz"):
        status, _, body = server.request(path)
        assert status == 200
        assert statdir.encode() not in body, path
        assert os.path.dirname(statdir).encode() not in body, path
    doc = server.json("/api/processes")
    corrupt = [p for p in doc["processes"] if p["state"] == "corrupt"]
    assert [p["file"] for p in corrupt] == ["svc.99999.0123456789abcdef.statmap"] and corrupt[0]["error"]
    assert doc["errors"] and all("/" not in e["file"] for e in doc["errors"])
    assert doc["directory"] == os.path.basename(statdir)


def test_loopback_server_refuses_foreign_host_names(server: Server) -> None:
    """DNS rebinding: a page from another site must not read a loopback server."""
    assert raw_request(server.port, "GET /metrics HTTP/1.1")[0] == 200
    import socket

    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"GET /api/processes HTTP/1.1\r\nHost: attacker.example\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 403"), data[:100]
    for host in (f"localhost:{server.port}", f"127.0.0.1:{server.port}", "localhost"):
        assert server.request("/healthz", {"Host": host})[0] == 200, host


# -- starting and stopping ----------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stops_cleanly_on_signal(statdir: str, workers: list[Worker], sig: int) -> None:
    import http.client

    server = Server(statdir)
    assert server.first_line.startswith("statmap serve: ") and server.url in server.first_line
    # An idle keep-alive connection and a request in progress must not delay the stop.
    idle = http.client.HTTPConnection(server.host, server.port, timeout=10)
    idle.request("GET", "/healthz")
    assert idle.getresponse().read() == b"ok\n"
    started = time.monotonic()
    code, out, err = server.stop(sig)
    assert code == 0, err
    assert time.monotonic() - started < 5
    assert out.rstrip().endswith("statmap serve: stopped") and "Traceback" not in err
    idle.close()


def test_warns_when_binding_beyond_loopback(statdir: str) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from statmap.server import bind_warning as w; "
            "print(w('0.0.0.0', False)); print(w('0.0.0.0', True)); print(w('127.0.0.1', False));"
            "print(w('::1', False));"
            "print(w('localhost', False))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = proc.stdout.splitlines()
    assert "beyond loopback" in lines[0] and "--token" in lines[0]
    assert "token protects it" in lines[1]
    assert lines[2:] == ["None", "None", "None"]
    # The real command: listening on every address prints the warning (the test only talks to loopback).
    server = Server(statdir, "--host", "0.0.0.0")
    try:
        assert server.request("/healthz")[0] == 200
    finally:
        code, _, err = server.stop()
    assert code == 0 and "warning: listening on 0.0.0.0, beyond loopback" in err


def test_port_in_use_is_a_clear_error(statdir: str) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "statmap", "serve", "--dir", statdir, "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode != 0 and "Address already in use" in proc.stderr


# -- WSGI and ASGI --------------------------------------------------------------------


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def test_wsgi_app_mounted_beside_an_application(statdir: str, workers: list[Worker]) -> None:
    def hello(environ: dict, start_response: object) -> list[bytes]:  # type: ignore[type-arg]
        start_response("200 OK", [("Content-Type", "text/plain")])  # type: ignore[operator]
        return [b"hello from the app at " + environ["PATH_INFO"].encode()]

    workers[0]("inc 4")
    app = mount_wsgi(hello, "/statmap", directory=statdir)
    httpd = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    import http.client

    def get(path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", httpd.server_port, timeout=30)
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        out = (r.status, dict(r.getheaders()), r.read())
        conn.close()
        return out

    try:
        assert get("/other")[2] == b"hello from the app at /other"
        assert get("/statmapper")[2] == b"hello from the app at /statmapper"
        status, headers, _ = get("/statmap")
        assert status == 301 and headers["Location"] == "/statmap/"
        status, headers, html = get("/statmap/")
        assert status == 200 and b"static/app.js" in html
        status, headers, text = get("/statmap/metrics", {"Accept": PROMETHEUS_ACCEPT})
        assert status == 200 and b'jobs_total{queue="high"} 4' in text and text.endswith(b"# EOF\n")
        assert json.loads(get("/statmap/api/processes")[2])["counts"] == {"alive": 2}
        assert get("/statmap/static/app.js")[0] == 200
        assert get("/statmap/static/../../etc/passwd")[0] == 404
    finally:
        httpd.shutdown()
        httpd.server_close()
    # A token applies under WSGI too.
    protected = WSGIApp(statdir, token="t0k")
    seen: list[str] = []
    body = protected({"PATH_INFO": "/metrics", "REQUEST_METHOD": "GET"}, lambda s, h: seen.append(s))
    assert seen == ["401 Unauthorized"] and b"token" in b"".join(body)


ASGI_APP = """
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from statmap.server import ASGIApp

async def home(request):
    return PlainTextResponse("hello from starlette")

app = Starlette(routes=[Route("/", home), Mount("/statmap", app=ASGIApp())])
bare = ASGIApp(token="t0k")
"""


def test_asgi_app_under_uvicorn_and_starlette(statdir: str, workers: list[Worker], tmp_path: Path) -> None:
    pytest.importorskip("uvicorn")
    pytest.importorskip("starlette")
    (tmp_path / "asgi_test_app.py").write_text(ASGI_APP)
    workers[1]("inc 9")
    import http.client

    for target, token in (("asgi_test_app:app", None), ("asgi_test_app:bare", "t0k")):
        port = free_port()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--app-dir",
                str(tmp_path),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
                target,
            ],
            env=dict(os.environ, STATMAP_DIR=statdir),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        prefix = "/statmap" if token is None else ""
        auth = {"Authorization": f"Bearer {token}"} if token else {}

        def get(path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)  # noqa: B023
            conn.request("GET", path, headers={**auth, **(headers or {})})  # noqa: B023
            r = conn.getresponse()
            out = (r.status, dict(r.getheaders()), r.read())
            conn.close()
            return out

        try:
            wait_for(lambda: _up(port), what="uvicorn")  # noqa: B023
            status, headers, text = get(prefix + "/metrics", {"Accept-Encoding": "gzip"})
            assert status == 200 and headers["content-encoding"] == "gzip"
            assert b'jobs_total{queue="high"} 9' in gzip.decompress(text)
            status, _, html = get(prefix + "/")
            assert status == 200 and b"static/app.js" in html
            assert get(prefix + "/static/style.css")[0] == 200
            doc = json.loads(get(prefix + "/api/series?q=jobs")[2])
            assert doc["series"][0]["value"] == 9
            assert get(prefix + "/static/../../../etc/passwd")[0] == 404
            if token is None:
                assert get("/")[2] == b"hello from starlette"
            else:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conn.request("GET", "/metrics")
                assert conn.getresponse().status == 401
                conn.close()
        finally:
            proc.terminate()
            proc.wait(timeout=20)


def _up(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


# -- statmap demo ------------------------------------------------------------------------


def test_demo_serves_the_dashboard(tmp_path: Path) -> None:
    demo_dir = tmp_path / "demo"
    demo_dir.mkdir(mode=0o700)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "statmap",
            "demo",
            "--seconds",
            "6",
            "--workers",
            "2",
            "--port",
            "0",
            "--dir",
            str(demo_dir),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    url = None
    for _ in range(5):
        line = proc.stdout.readline()
        found = re.search(r"dashboard at (http://127\.0\.0\.1:\d+/)", line)
        if found:
            url = found.group(1)
            break
    assert url, "the demo did not print the dashboard's URL"
    import urllib.request

    def alive() -> int:
        with urllib.request.urlopen(url + "api/processes", timeout=10) as r:
            return int(json.load(r)["counts"].get("alive", 0))

    wait_for(lambda: alive() == 2, what="two demo workers")
    with urllib.request.urlopen(url, timeout=10) as r:
        assert b"statmap" in r.read()
    proc.stdout.read()
    assert proc.wait(timeout=30) == 0, proc.stderr.read()  # type: ignore[union-attr]


def test_demo_stops_quietly_on_ctrl_c(tmp_path: Path) -> None:
    """Ctrl-C in a terminal sends SIGINT to the whole foreground process group:
    the demo and its workers stop without a traceback, and the workers close their files."""
    demo_dir = tmp_path / "demo"
    demo_dir.mkdir(mode=0o700)
    cmd = [sys.executable, "-m", "statmap", "demo", "--workers", "2", "--port", "0", "--dir", str(demo_dir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for(lambda: len(list(demo_dir.glob("*.statmap"))) == 2, what="two demo workers")
        time.sleep(1.0)  # inside their update loops
        os.killpg(proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    states = []
    for path in demo_dir.glob("*.statmap"):
        with statmap.open(str(path)) as reader:
            states.append(reader.snapshot().status)
    assert states == ["closed", "closed"], states
