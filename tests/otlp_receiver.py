"""An OTLP/HTTP metrics receiver for tests: decodes every request with the official protobuf messages."""

from __future__ import annotations

import gzip
import http.server
import threading
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)


class Receiver:
    """Listens on a free loopback port; ``requests`` holds each decoded ExportMetricsServiceRequest.

    ``refuse``: answer 400 with this text instead of accepting.
    """

    def __init__(self, refuse: str = "") -> None:
        self.requests: list[Any] = []
        self.headers: list[dict[str, str]] = []
        self.refuse = refuse
        self.cond = threading.Condition()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if outer.refuse:
                    data = outer.refuse.encode()
                    self.send_response(400)
                    self.send_header("Content-Type", "text/plain")
                else:
                    request = ExportMetricsServiceRequest.FromString(body)
                    with outer.cond:
                        outer.requests.append(request)
                        outer.headers.append({k.lower(): v for k, v in self.headers.items()})
                        outer.cond.notify_all()
                    data = ExportMetricsServiceResponse().SerializeToString()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1/metrics"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def metrics(request: Any) -> dict[tuple[str, str], Any]:
    """(service.name, metric name) -> the decoded Metric message of one request."""
    out = {}
    for rm in request.resource_metrics:
        service = next(a.value.string_value for a in rm.resource.attributes if a.key == "service.name")
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out[(service, m.name)] = m
    return out


def attrs(kvs: Any) -> dict[str, Any]:
    """An attribute list as a dict of plain values."""
    out = {}
    for kv in kvs:
        field = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, field)
    return out
