"""The WSGI and ASGI middleware attach the active OpenTelemetry span's trace id as an exemplar
(docs/format.md section 15): served by a real wsgiref server, and by the ASGI middleware under asyncio."""

from __future__ import annotations

import asyncio
import http.client
import threading
import wsgiref.simple_server
from typing import Any

import pytest

import statmap
from statmap import expose
from statmap.collect import collect
from statmap.middleware import ASGIMiddleware, WSGIMiddleware

otel_trace = pytest.importorskip("opentelemetry.trace", reason="needs opentelemetry-api")
otel_sdk = pytest.importorskip("opentelemetry.sdk.trace", reason="needs opentelemetry-sdk")
TRACER = otel_sdk.TracerProvider().get_tracer("statmap-tests")


def _hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


class _Quiet(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


def _exemplar_lines(statdir: str) -> dict[str, str]:
    """OpenMetrics sample line head -> its exemplar text, for the lines that have one."""
    out = {}
    for line in expose.openmetrics(collect(statdir)).splitlines():
        if " # {" in line:
            sample, exemplar = line.split(" # ", 1)
            out[sample.rsplit(" ", 1)[0]] = exemplar
    return out


def test_wsgi_middleware_links_requests_to_the_active_trace(statdir: str) -> None:
    pub = statmap.Publisher("web", statdir)
    inner = WSGIMiddleware(_hello, publisher=pub, buckets=(0.5, 10.0))
    traces: list[str] = []

    def traced(environ: dict[str, Any], start_response: Any) -> Any:
        if environ["PATH_INFO"] == "/untraced":
            return inner(environ, start_response)
        # what OpenTelemetry's WSGI instrumentation does: the server span is active while the app runs
        with TRACER.start_as_current_span("GET") as span:
            traces.append(format(span.get_span_context().trace_id, "032x"))
            return inner(environ, start_response)

    server = wsgiref.simple_server.make_server("127.0.0.1", 0, traced, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        for path in ("/untraced", "/a", "/b", "/untraced"):
            conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
            conn.request("GET", path)
            assert conn.getresponse().read() == b"hello"
            conn.close()
    finally:
        server.shutdown()
        server.server_close()
    lines = _exemplar_lines(statdir)
    total = lines['http_requests_total{method="GET",route="other",status="2xx"}']
    bucket = lines['http_request_duration_seconds_bucket{method="GET",route="other",le="0.5"}']
    # the latest traced request's trace (the untraced one after it left the exemplar alone)
    assert total.startswith(f'{{trace_id="{traces[-1]}",span_id="') and " 1.0 " in total
    assert bucket.startswith(f'{{trace_id="{traces[-1]}",')
    assert collect(statdir).value("http_requests", {"method": "GET", "route": "other", "status": "2xx"}) == 4
    pub.remove()


def test_wsgi_without_a_span_records_no_exemplar(statdir: str) -> None:
    pub = statmap.Publisher("web", statdir)
    app = WSGIMiddleware(_hello, publisher=pub)
    server = wsgiref.simple_server.make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
    conn.request("GET", "/")
    assert conn.getresponse().read() == b"hello"
    thread.join(10)
    server.server_close()
    assert _exemplar_lines(statdir) == {}
    assert collect(statdir).exemplars == {}
    pub.remove()


def test_asgi_middleware_links_requests_to_the_active_trace(statdir: str) -> None:
    pub = statmap.Publisher("web", statdir)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"no"})

    mw = ASGIMiddleware(app, publisher=pub, buckets=(0.5, 10.0))
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def request() -> str:
        scope = {"type": "http", "method": "POST", "path": "/x", "headers": [], "root_path": ""}
        with TRACER.start_as_current_span("POST") as span:
            await mw(scope, receive, send)
            return format(span.get_span_context().trace_id, "032x")

    trace = asyncio.run(request())
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    lines = _exemplar_lines(statdir)
    assert lines['http_requests_total{method="POST",route="other",status="4xx"}'].startswith(
        f'{{trace_id="{trace}",span_id="'
    )
    assert lines['http_request_duration_seconds_bucket{method="POST",route="other",le="0.5"}'].startswith(
        f'{{trace_id="{trace}",'
    )
    pub.remove()
