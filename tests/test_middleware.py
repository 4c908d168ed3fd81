"""statmap.middleware with real frameworks and servers.

WSGI: Flask's and Werkzeug's test clients (real request handling, routing
and response iteration) and wsgiref's server over a socket. ASGI: a real
uvicorn server in a thread in front of Starlette, FastAPI and plain ASGI
applications. Values are read back with statmap.collect, like any reader.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import subprocess
import sys
import threading
import time
import warnings
import wsgiref.simple_server
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import statmap
from statmap.collect import collect
from statmap.middleware import DEFAULT_LATENCY_BUCKETS, ASGIMiddleware, HTTPMetrics, WSGIMiddleware

if TYPE_CHECKING:
    import flask
else:
    flask = pytest.importorskip("flask")
werkzeug_test = pytest.importorskip("werkzeug.test")


class BufferedClient(werkzeug_test.Client):  # type: ignore[misc,name-defined]
    """Werkzeug's client reading each response whole and closing it, as a server does."""

    def open(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("buffered", True)
        return super().open(*args, **kwargs)


@pytest.fixture
def pub(statdir: str) -> Iterator[statmap.Publisher]:
    p = statmap.Publisher("web", statdir)
    yield p
    p.close()


def requests_by_labels(statdir: str, name: str = "http_requests") -> dict[tuple[str, str, str], int]:
    fam = collect(statdir).family(name)
    if fam is None:
        return {}
    return {(s.labels["method"], s.labels["route"], s.labels["status"]): s.value for s in fam.samples}


def durations(statdir: str, name: str = "http_request_duration") -> dict[tuple[str, str], Any]:
    fam = collect(statdir).family(name)
    assert fam is not None
    return {(s.labels["method"], s.labels["route"]): s.value for s in fam.samples}


def in_flight(statdir: str, name: str = "http_requests_in_flight") -> float:
    return float(collect(statdir).value(name))


# -- WSGI ----------------------------------------------------------------------


def flask_app(pub: statmap.Publisher, **options: Any) -> Any:
    app = flask.Flask("t")
    gate = threading.Event()

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> str:
        if item_id > 100:
            flask.abort(404)
        return "item"

    @app.route("/items", methods=["POST", "PUT"])
    def items() -> tuple[str, int]:
        return "made", 201

    @app.get("/fail")
    def fail() -> str:
        raise RuntimeError("boom")

    @app.get("/gone")
    def gone() -> Any:
        return flask.redirect("/items/1")

    @app.get("/stream")
    def stream() -> Any:
        def generate() -> Iterator[str]:
            yield "one\n"
            gate.wait(10)
            yield "two\n"

        return flask.Response(generate())

    @app.get("/stream-fails")
    def stream_fails() -> Any:
        def generate() -> Iterator[str]:
            yield "one\n"
            raise RuntimeError("broken stream")

        return flask.Response(generate())

    bp = flask.Blueprint("api", "t", url_prefix="/api")

    @bp.get("/users/<name>")
    def user(name: str) -> str:
        return name

    app.register_blueprint(bp)
    app.wsgi_app = WSGIMiddleware(app.wsgi_app, publisher=pub, **options)  # type: ignore[method-assign]
    app.gate = gate  # type: ignore[attr-defined]
    return app


def test_flask_routes_methods_statuses(pub: statmap.Publisher, statdir: str) -> None:
    app = flask_app(pub)
    client = app.test_client()
    for method, path, status in [
        ("GET", "/items/1", 200),
        ("GET", "/items/2", 200),
        ("GET", "/items/200", 404),
        ("HEAD", "/items/3", 200),
        ("POST", "/items", 201),
        ("PUT", "/items", 201),
        ("DELETE", "/items", 405),
        ("GET", "/gone", 302),
        ("GET", "/fail", 500),
        ("GET", "/nowhere/1", 404),
        ("GET", "/nowhere/2", 404),
        ("BREW", "/items/1", 405),
        ("GET", "/api/users/ann", 200),
        ("GET", "/api/users/bob", 200),
    ]:
        with client.open(path, method=method) as response:
            assert response.status_code == status, (method, path)
    assert requests_by_labels(statdir) == {
        ("GET", "/items/<int:item_id>", "2xx"): 2,
        ("GET", "/items/<int:item_id>", "4xx"): 1,
        ("HEAD", "/items/<int:item_id>", "2xx"): 1,
        ("POST", "/items", "2xx"): 1,
        ("PUT", "/items", "2xx"): 1,
        ("DELETE", "other", "4xx"): 1,
        ("GET", "/gone", "3xx"): 1,
        ("GET", "/fail", "5xx"): 1,
        ("GET", "other", "4xx"): 2,
        ("other", "other", "4xx"): 1,
        ("GET", "/api/users/<name>", "2xx"): 2,
    }
    latency = durations(statdir)
    assert latency[("GET", "/items/<int:item_id>")].count == 3
    assert sum(v.count for v in latency.values()) == 14
    assert latency[("GET", "/fail")].sum > 0
    assert in_flight(statdir) == 0
    fam = collect(statdir).family("http_request_duration")
    assert fam is not None and fam.unit == "seconds"


def test_flask_streaming_in_flight_until_closed(pub: statmap.Publisher, statdir: str) -> None:
    app = flask_app(pub)
    client = app.test_client()
    response = client.get("/stream", buffered=False)
    chunks = iter(response.response)
    assert next(chunks) == b"one\n"
    assert in_flight(statdir) == 1  # the body is still being produced
    assert requests_by_labels(statdir) == {}
    time.sleep(0.05)
    app.gate.set()
    assert b"".join(chunks) == b"two\n"
    response.close()
    assert in_flight(statdir) == 0
    assert requests_by_labels(statdir) == {("GET", "/stream", "2xx"): 1}
    assert durations(statdir)[("GET", "/stream")].sum >= 0.05  # latency covers the stream


def test_flask_exception_while_streaming_is_5xx(pub: statmap.Publisher, statdir: str) -> None:
    client = flask_app(pub).test_client()
    with pytest.raises(RuntimeError, match="broken stream"):
        client.get("/stream-fails", buffered=True)  # headers said 200; the body failed
    assert requests_by_labels(statdir) == {("GET", "/stream-fails", "5xx"): 1}
    assert in_flight(statdir) == 0


def test_flask_propagated_exception_is_5xx(pub: statmap.Publisher, statdir: str) -> None:
    app = flask_app(pub)
    app.config["PROPAGATE_EXCEPTIONS"] = True  # the exception leaves Flask and goes through the middleware
    with pytest.raises(RuntimeError, match="boom"):
        app.test_client().get("/fail")
    # No response was started, so Flask's rule was not seen: route is "other" (route= or
    # environ["statmap.route"] name it; see docs/integrations.md).
    assert requests_by_labels(statdir) == {("GET", "other", "5xx"): 1}
    assert in_flight(statdir) == 0


def plain_app(environ: dict[str, Any], start_response: Any) -> Any:
    """A framework-free WSGI app: a generator that starts the response lazily."""
    path = environ["PATH_INFO"]
    if path == "/raise":
        raise ValueError("before the response")
    if path.startswith("/named/"):
        environ["statmap.route"] = "/named/{id}"

    def body() -> Iterator[bytes]:
        code = path.rsplit("/", 1)[-1]
        start_response(f"{code} X" if len(code) == 3 and code.isdigit() else "200 OK", [("Content-Type", "text/plain")])
        yield b"a"
        if path == "/fail-late":
            raise KeyError("late")
        yield b"b"

    return body()


def test_plain_wsgi_app(pub: statmap.Publisher, statdir: str) -> None:
    client = BufferedClient(WSGIMiddleware(plain_app, publisher=pub))
    assert client.get("/x/201").status_code == 201
    assert client.get("/x/302").status_code == 302
    assert client.get("/named/7").status_code == 200
    assert client.get("/named/8").status_code == 200
    with pytest.raises(ValueError, match="before the response"):
        client.get("/raise")
    with pytest.raises(KeyError):
        client.get("/fail-late")
    assert requests_by_labels(statdir) == {
        ("GET", "other", "2xx"): 1,  # no framework, no route=: a fixed "other"
        ("GET", "other", "3xx"): 1,
        ("GET", "/named/{id}", "2xx"): 2,  # environ["statmap.route"]
        ("GET", "other", "5xx"): 2,
    }
    assert in_flight(statdir) == 0


def test_route_callable_and_max_routes(pub: statmap.Publisher, statdir: str) -> None:
    def route(environ: dict[str, Any]) -> str | None:
        path = environ["PATH_INFO"]
        if path == "/broken":
            raise RuntimeError("a broken route= callable never fails the request")
        return None if path == "/none" else path

    mw = WSGIMiddleware(plain_app, publisher=pub, route=route, max_routes=3, methods=("GET",))
    client = BufferedClient(mw)
    for path in ["/a", "/b", "/a", "/c", "/d", "/e", "/none", "/broken"]:
        assert client.get(path).status_code == 200
    assert client.post("/a").status_code == 200
    assert requests_by_labels(statdir) == {
        ("GET", "/a", "2xx"): 2,
        ("GET", "/b", "2xx"): 1,
        ("GET", "/c", "2xx"): 1,
        ("GET", "other", "2xx"): 4,  # /d, /e beyond max_routes; None; the broken callable
        ("other", "/a", "2xx"): 1,  # POST is not in methods=
    }
    assert mw.metrics.route_value("x" * 5000) == "other"


def test_prefix_shared_metrics_and_buckets(pub: statmap.Publisher, statdir: str) -> None:
    metrics = HTTPMetrics(pub, prefix="front", buckets=statmap.LogBuckets(1e-4, 10, 0.1))
    a = BufferedClient(WSGIMiddleware(plain_app, metrics=metrics))
    b = BufferedClient(WSGIMiddleware(plain_app, metrics=metrics))
    a.get("/x")
    b.get("/x")
    assert requests_by_labels(statdir, "front_requests") == {("GET", "other", "2xx"): 2}
    assert durations(statdir, "front_request_duration")[("GET", "other")].count == 2
    assert in_flight(statdir, "front_requests_in_flight") == 0
    with pytest.raises(TypeError):
        WSGIMiddleware(plain_app, metrics=metrics, prefix="x")
    with pytest.raises(ValueError):
        HTTPMetrics(pub)  # "http_requests" is not yet taken... but
        HTTPMetrics(pub)  # twice in one publisher is


def test_publisher_by_name_and_default_buckets(statdir: str) -> None:
    mw = WSGIMiddleware(plain_app, publisher="named", directory=statdir)
    BufferedClient(mw).get("/x")
    assert mw.metrics.publisher.name == "named"
    value = collect(statdir).value("http_request_duration", {"method": "GET", "route": "other"})
    assert value.count == 1
    assert tuple(b for b, _ in value.buckets[:-1]) == DEFAULT_LATENCY_BUCKETS
    mw.metrics.publisher.close()


def test_wsgiref_server_and_file_wrapper(pub: statmap.Publisher, statdir: str, tmp_path: Path) -> None:
    data = tmp_path / "file.bin"
    data.write_bytes(b"x" * 10000)
    closed = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Length", "10000")])
        handle = open(data, "rb")
        wrapper = environ["wsgi.file_wrapper"](handle)
        original = wrapper.close

        def close() -> None:
            closed.append(1)
            original()

        wrapper.close = close
        return wrapper

    server = wsgiref.simple_server.make_server(
        "127.0.0.1", 0, WSGIMiddleware(app, publisher=pub), handler_class=QuietHandler
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        for _ in range(3):
            conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
            conn.request("GET", "/file")
            response = conn.getresponse()
            assert response.status == 200 and response.read() == b"x" * 10000
            conn.close()
    finally:
        server.shutdown()
        server.server_close()
    assert closed == [1, 1, 1]  # the server's own file wrapper was passed through and closed
    assert requests_by_labels(statdir) == {("GET", "other", "2xx"): 3}
    assert in_flight(statdir) == 0


class QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


def test_record_failure_warns_once(statdir: str) -> None:
    pub = statmap.Publisher("full", statdir)
    metrics = HTTPMetrics(pub)
    client = BufferedClient(WSGIMiddleware(plain_app, metrics=metrics))
    pub.close()  # the publisher is gone: recording fails, requests do not
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for path in ("/a", "/b"):
            try:
                assert client.get(path).status_code == 200
            except Exception as exc:  # noqa: BLE001 - shows what broke
                pytest.fail(f"request failed because of metrics: {exc!r}")
    assert len([w for w in caught if "statmap middleware" in str(w.message)]) == 1  # once, not per request


# -- ASGI ----------------------------------------------------------------------

uvicorn = pytest.importorskip("uvicorn")


@contextlib.contextmanager
def serving(app: Any, lifespan: str = "auto") -> Iterator[int]:
    """A real uvicorn server for ``app`` on a free loopback port, in a thread."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical", lifespan=lifespan)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(20)


def call(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def starlette_app(gate: threading.Event, streaming: threading.Event | None = None) -> Any:
    streaming = streaming or threading.Event()
    starlette = pytest.importorskip("starlette")
    del starlette
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse, StreamingResponse
    from starlette.routing import Mount, Route

    async def item(request: Any) -> Any:
        return PlainTextResponse("x", status_code=404 if request.path_params["item_id"] > 100 else 200)

    async def fail(request: Any) -> Any:
        raise RuntimeError("boom")

    async def stream(request: Any) -> Any:
        import asyncio

        async def generate() -> Any:
            yield "one\n"
            streaming.set()
            while not gate.is_set():
                await asyncio.sleep(0.01)
            yield "two\n"

        return StreamingResponse(generate())

    async def user(request: Any) -> Any:
        return PlainTextResponse(request.path_params["name"])

    async def static(scope: Any, receive: Any, send: Any) -> None:
        response = PlainTextResponse("static", status_code=200)
        await response(scope, receive, send)

    return Starlette(
        routes=[
            Route("/items/{item_id:int}", item, methods=["GET", "POST"]),
            Route("/fail", fail),
            Route("/stream", stream),
            Mount("/api/v1", routes=[Route("/users/{name}", user)]),
            Mount("/static", app=static),
        ]
    )


def test_asgi_starlette_under_uvicorn(pub: statmap.Publisher, statdir: str) -> None:
    gate, streaming = threading.Event(), threading.Event()
    app = ASGIMiddleware(starlette_app(gate, streaming), publisher=pub)
    with serving(app) as port:  # lifespan passes through the middleware to Starlette
        assert call(port, "GET", "/items/1")[0] == 200
        assert call(port, "POST", "/items/2")[0] == 200
        assert call(port, "GET", "/items/101")[0] == 404
        assert call(port, "DELETE", "/items/1")[0] == 405  # partial match: still the template
        assert call(port, "GET", "/fail")[0] == 500
        assert call(port, "GET", "/nowhere")[0] == 404
        assert call(port, "GET", "/api/v1/users/ann")[0] == 200
        assert call(port, "GET", "/api/v1/users/bob")[0] == 200
        assert call(port, "GET", "/static/css/site.css")[0] == 200
        assert call(port, "PROPFIND", "/items/1")[0] == 405

        # streaming: in flight until the last chunk
        deadline = time.monotonic() + 10
        while in_flight(statdir) != 0:  # the server answers before the application returns: let it settle
            assert time.monotonic() < deadline
            time.sleep(0.01)
        result: dict[str, Any] = {}
        thread = threading.Thread(target=lambda: result.update(answer=call(port, "GET", "/stream")))
        thread.start()
        assert streaming.wait(10)
        assert in_flight(statdir) == 1
        time.sleep(0.05)
        gate.set()
        thread.join(10)
        assert result["answer"] == (200, b"one\ntwo\n")

    assert requests_by_labels(statdir) == {
        ("GET", "/items/{item_id}", "2xx"): 1,
        ("POST", "/items/{item_id}", "2xx"): 1,
        ("GET", "/items/{item_id}", "4xx"): 1,
        ("DELETE", "/items/{item_id}", "4xx"): 1,
        ("GET", "/fail", "5xx"): 1,
        ("GET", "other", "4xx"): 1,
        ("GET", "/api/v1/users/{name}", "2xx"): 2,
        ("GET", "/static/{path}", "2xx"): 1,
        ("other", "/items/{item_id}", "4xx"): 1,
        ("GET", "/stream", "2xx"): 1,
    }
    assert durations(statdir)[("GET", "/stream")].sum >= 0.05
    assert in_flight(statdir) == 0


def test_asgi_inside_starlette_middleware_stack(pub: statmap.Publisher, statdir: str) -> None:
    from starlette.middleware import Middleware

    app = starlette_app(threading.Event())
    app.user_middleware.insert(0, Middleware(ASGIMiddleware, metrics=HTTPMetrics(pub)))
    with serving(app) as port:
        assert call(port, "GET", "/items/5")[0] == 200
        assert call(port, "GET", "/fail")[0] == 500
    assert requests_by_labels(statdir) == {("GET", "/items/{item_id}", "2xx"): 1, ("GET", "/fail", "5xx"): 1}


def test_asgi_fastapi_route_templates(pub: statmap.Publisher, statdir: str) -> None:
    pytest.importorskip("fastapi")
    import fastapi

    api = fastapi.FastAPI()

    @api.get("/orders/{order_id}")
    async def order(order_id: int) -> dict[str, int]:
        return {"id": order_id}

    router = fastapi.APIRouter(prefix="/v2")

    @router.post("/carts/{cart_id}/items", status_code=201)
    async def add(cart_id: str) -> dict[str, str]:
        return {"cart": cart_id}

    api.include_router(router)
    api.add_middleware(ASGIMiddleware, metrics=HTTPMetrics(pub))
    with serving(api) as port:
        for i in range(3):
            assert call(port, "GET", f"/orders/{i}")[0] == 200
        assert call(port, "GET", "/orders/not-a-number")[0] == 422
        assert call(port, "POST", "/v2/carts/c1/items")[0] == 201
    assert requests_by_labels(statdir) == {
        ("GET", "/orders/{order_id}", "2xx"): 3,
        ("GET", "/orders/{order_id}", "4xx"): 1,
        ("POST", "/v2/carts/{cart_id}/items", "2xx"): 1,
    }


async def raw_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A framework-free ASGI app exercising the edge cases."""
    path = scope["path"]
    if path == "/raise-before":
        raise RuntimeError("before the response")
    if path == "/no-response":
        return
    if path.startswith("/named/"):
        scope["statmap.route"] = "/named/{n}"
    last = path.rsplit("/", 1)[-1]
    code = int(last) if len(last) == 3 and last.isdigit() else 200
    await send({"type": "http.response.start", "status": code, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"a", "more_body": True})
    if path == "/raise-after":
        raise RuntimeError("after the response started")
    await send({"type": "http.response.body", "body": b"b"})


def test_asgi_plain_app_edge_cases(pub: statmap.Publisher, statdir: str) -> None:
    app = ASGIMiddleware(raw_asgi, publisher=pub)
    with serving(app, lifespan="off") as port:
        assert call(port, "GET", "/x/202")[0] == 202
        assert call(port, "GET", "/x/301")[0] == 301
        assert call(port, "GET", "/x/418")[0] == 418
        assert call(port, "GET", "/named/1") == (200, b"ab")
        assert call(port, "GET", "/named/2") == (200, b"ab")
        assert call(port, "GET", "/raise-before")[0] == 500
        assert call(port, "GET", "/no-response")[0] == 500
        with contextlib.suppress(http.client.HTTPException, ConnectionError):
            call(port, "GET", "/raise-after")  # 200 sent, then the connection is dropped
    assert requests_by_labels(statdir) == {
        ("GET", "other", "2xx"): 1,
        ("GET", "other", "3xx"): 1,
        ("GET", "other", "4xx"): 1,
        ("GET", "/named/{n}", "2xx"): 2,
        ("GET", "other", "5xx"): 3,  # raised before, no response at all, raised after the start
    }
    assert in_flight(statdir) == 0


def test_asgi_route_callable_and_other_scopes(pub: statmap.Publisher, statdir: str) -> None:
    seen = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope["type"])
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await raw_asgi(scope, receive, send)

    mw = ASGIMiddleware(app, publisher=pub, route=lambda scope: scope["path"][:2], max_routes=2)
    with serving(mw, lifespan="on") as port:
        for path in ["/a1", "/a2", "/b1", "/c1", "/d1"]:
            assert call(port, "GET", path)[0] == 200
    assert "lifespan" in seen
    assert requests_by_labels(statdir) == {("GET", "/a", "2xx"): 2, ("GET", "/b", "2xx"): 1, ("GET", "other", "2xx"): 2}


# -- Django (in its own process: its settings are process-wide) ------------------

DJANGO_SITE = """
import sys, wsgiref.simple_server
import django
from django.conf import settings

settings.configure(
    DEBUG=False, ROOT_URLCONF="__main__", ALLOWED_HOSTS=["*"], SECRET_KEY="test",
    MIDDLEWARE=["statmap.middleware.django_route"], LOGGING_CONFIG=None,
)
django.setup()
from django.core.wsgi import get_wsgi_application
from django.http import JsonResponse
from django.urls import path

import statmap
from statmap.middleware import WSGIMiddleware


def item(request, pk):
    return JsonResponse({"pk": pk})


def boom(request):
    raise ValueError("boom")


urlpatterns = [path("items/<int:pk>/", item), path("boom/", boom)]


class Quiet(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, *args):
        pass


app = WSGIMiddleware(get_wsgi_application(), publisher=statmap.Publisher("django", sys.argv[1]))
server = wsgiref.simple_server.make_server("127.0.0.1", 0, app, handler_class=Quiet)
print(server.server_port, flush=True)
server.serve_forever()
"""


def test_django_route_templates(statdir: str) -> None:
    pytest.importorskip("django", reason="Django is not installed (pip install django)")
    site = subprocess.Popen(
        [sys.executable, "-c", DJANGO_SITE, statdir], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert site.stdout is not None
        line = site.stdout.readline()
        errors = site.stderr.read() if site.stderr and not line.strip().isdigit() else ""
        assert line.strip().isdigit(), f"the Django site did not start: {line}{errors}"
        port = int(line)
        sent = [("GET", "/items/1/")] * 3 + [("GET", "/items/2/")] * 2 + [("POST", "/items/3/")]
        sent += [("GET", "/nope/")] * 2 + [("GET", "/boom/")]
        for method, target in sent:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request(method, target)
            status = conn.getresponse().status
            conn.close()
            assert status == {"/nope/": 404, "/boom/": 500}.get(target, 200), (method, target, status)
        expected = {
            ("GET", "/items/<int:pk>/", "2xx"): 5,
            ("POST", "/items/<int:pk>/", "2xx"): 1,
            ("GET", "other", "4xx"): 2,  # no route matched: not the raw path
            ("GET", "/boom/", "5xx"): 1,
        }
        # The WSGI server sends the response before it closes the body, which is when a
        # request is recorded: the last request may be recorded just after the client has it.
        deadline = time.monotonic() + 30
        while requests_by_labels(statdir) != expected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert requests_by_labels(statdir) == expected
        assert in_flight(statdir) == 0
    finally:
        site.terminate()
        site.wait(timeout=30)
