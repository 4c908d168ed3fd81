"""WSGI and ASGI middleware that publish HTTP request metrics with statmap.

::

    from statmap.middleware import WSGIMiddleware, ASGIMiddleware

    flask_app.wsgi_app = WSGIMiddleware(flask_app.wsgi_app, publisher="web")
    starlette_app = ASGIMiddleware(starlette_app, publisher="web")

Each middleware creates three metrics (``prefix`` defaults to ``http``):

* ``http_requests`` (counter; exposed as ``http_requests_total``), labels
  ``method``, ``route``, ``status`` (``1xx`` ... ``5xx``);
* ``http_requests_in_flight`` (gauge summed over live processes);
* ``http_request_duration`` (histogram, seconds; exposed as
  ``http_request_duration_seconds``), labels ``method``, ``route``.

Label values are bounded: methods outside ``methods`` become ``other``,
routes are framework route templates (Flask's ``url_rule``, Starlette's and
FastAPI's ``path_format``), a ``route=`` callable's answer, or the value an
application stores under ``environ["statmap.route"]`` / ``scope["statmap.route"]``;
anything else, and any route beyond the first ``max_routes``, is ``other``.
A request that raises is a ``5xx``. See docs/integrations.md.

``names="otel"`` follows the OpenTelemetry HTTP semantic conventions
instead: ``http_server_request_duration`` (histogram, seconds, the
conventions' buckets), labels ``http_request_method``, ``http_route``,
``http_response_status_code`` (the code itself, at most 20 distinct, then
``other``), and ``http_server_active_requests``; no separate counter (the
histogram's count is it). statmap names cannot hold dots; the OTLP export
(otel.py) gives them their dotted names back, and Prometheus sees the names
the OTel Collector would give them.

Only the standard library and statmap are imported; no framework is needed.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from time import perf_counter
from typing import Any

from .errors import StatmapError
from .metrics import MAX_LABEL_VALUE, HistogramSeries, LogBuckets
from .publisher import Publisher, close_all
from .trace_context import current_exemplar

__all__ = [
    "DEFAULT_LATENCY_BUCKETS",
    "DEFAULT_METHODS",
    "OTHER",
    "ASGIMiddleware",
    "HTTPMetrics",
    "WSGIMiddleware",
    "django_route",
]

#: The label value for anything outside the bounded sets (methods, routes, statuses).
OTHER = "other"

#: Methods kept as label values; any other method is counted as ``other``.
DEFAULT_METHODS: tuple[str, ...] = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

#: Request latency buckets, in seconds: 1-2.5-5 steps from 0.5 ms to 60 s.
#: Pass ``buckets=statmap.LogBuckets(1e-4, 60, 0.05)`` for percentiles within 5%.
DEFAULT_LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip

#: Key under which an application (or a framework hook) can name the route of a request.
ROUTE_KEY = "statmap.route"

# "404 Not Found"[0] -> "4xx" (WSGI), 404 // 100 -> "4xx" (ASGI)
_WSGI_CLASSES = {str(i): f"{i}xx" for i in range(1, 6)}
_ASGI_CLASSES = (OTHER, "1xx", "2xx", "3xx", "4xx", "5xx")
_STATUS_CLASSES = 6  # 1xx..5xx and other
_MAX_CODES = 20  # names="otel": distinct status codes kept as label values

#: The OpenTelemetry HTTP semantic conventions' advised buckets for http.server.request.duration (seconds).
OTEL_DURATION_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip


class HTTPMetrics:
    """The request metrics one middleware (or several sharing them) record into.

    ``publisher``: a :class:`statmap.Publisher`, a publisher name (a new
    Publisher in ``directory``, default ``$STATMAP_DIR`` or the per-user
    directory), or None for ``statmap.default_publisher()``.
    ``prefix``: the start of every metric name. ``methods``: the methods kept
    as label values. ``max_routes``: how many distinct route values are kept
    (then ``other``). ``buckets``: latency bounds in seconds or a LogBuckets.
    """

    def __init__(
        self,
        publisher: Publisher | str | None = None,
        *,
        prefix: str = "http",
        methods: Sequence[str] = DEFAULT_METHODS,
        max_routes: int = 100,
        buckets: Iterable[float] | LogBuckets = DEFAULT_LATENCY_BUCKETS,
        directory: str | None = None,
        names: str = "statmap",
    ) -> None:
        if names not in ("statmap", "otel"):
            raise ValueError("names must be 'statmap' or 'otel' (the OpenTelemetry HTTP semantic conventions)")
        if isinstance(publisher, str):
            publisher = Publisher(publisher, directory)
        elif publisher is None:
            if directory is not None:
                raise ValueError("directory= goes with a publisher name")
            from . import default_publisher

            publisher = default_publisher()
        if max_routes < 1:
            raise ValueError("max_routes must be at least 1")
        self.publisher = publisher
        self.prefix = prefix
        self.max_routes = max_routes
        self.methods: dict[str, str] = {m: m for m in methods}
        if len(self.methods) != len(methods) or not all(isinstance(m, str) and m for m in methods):
            raise ValueError("methods must be distinct non-empty strings")
        self._routes: dict[str, str] = {OTHER: OTHER}
        route_sets = max_routes + 1
        method_sets = len(self.methods) + 1
        # (method, route, status) -> (counter series or None, histogram series): one lookup per request
        self._series: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self._warned = False
        self.otel = names == "otel"
        if self.otel:
            self._codes: dict[Any, str] = {}
            self.requests = None
            self.in_flight = publisher.gauge(
                "http_server_active_requests", "Number of active HTTP server requests", aggregate="sum", live_only=True
            )
            self.duration = publisher.histogram(
                "http_server_request_duration",
                "Duration of HTTP server requests",
                unit="seconds",
                labels=("http_request_method", "http_route", "http_response_status_code"),
                buckets=OTEL_DURATION_BUCKETS if buckets is DEFAULT_LATENCY_BUCKETS else buckets,
                max_series=route_sets * method_sets * (_MAX_CODES + 1),
            )
            return
        self.requests = publisher.counter(
            f"{prefix}_requests",
            "HTTP requests answered, by method, route template and status class",
            labels=("method", "route", "status"),
            max_series=route_sets * method_sets * _STATUS_CLASSES,
        )
        self.in_flight = publisher.gauge(
            f"{prefix}_requests_in_flight",
            "HTTP requests being served",
            aggregate="sum",
            live_only=True,
        )
        self.duration = publisher.histogram(
            f"{prefix}_request_duration",
            "Time from receiving an HTTP request to the end of its response",
            unit="seconds",
            labels=("method", "route"),
            buckets=buckets,
            max_series=route_sets * method_sets,
        )

    def route_value(self, route: Any) -> str:
        """The label value for ``route``: itself while fewer than ``max_routes`` are known, else ``other``."""
        known = self._routes.get(route) if isinstance(route, str) else None
        if known is not None:
            return known
        if not isinstance(route, str) or not route or len(route) > MAX_LABEL_VALUE:
            return OTHER
        if len(self._routes) > self.max_routes:  # "other" is in the table too
            return OTHER
        # Two threads may admit at once and pass max_routes by a few; the
        # metrics' max_series leaves room for that, and the record is never lost.
        self._routes[route] = route
        return route

    def code_value(self, code: Any) -> str:
        """``names="otel"``: the status code label, ``other`` past ``_MAX_CODES`` distinct codes."""
        found = self._codes.get(code)
        if found is None:
            found = str(code) if len(self._codes) < _MAX_CODES and isinstance(code, int) else OTHER
            self._codes[code] = found
        return found

    def record(
        self, method: Any, route: Any, status: str, elapsed: float, code: Any = None, exemplar: Any = None
    ) -> None:
        """Count one finished request and take it out of flight.

        ``method`` and ``route`` are raw (bounded here); ``status`` is a class
        (``2xx``); ``code`` the status code (``names="otel"``; 500 if None). The
        in-flight gauge is decremented last, so a reader that
        sees 0 in flight knows every finished request is counted. ``exemplar``
        (the request's OpenTelemetry trace, trace_context.py) goes with both updates.
        """
        method = self.methods.get(method, OTHER)
        known = self._routes.get(route) if type(route) is str else None
        if self.otel:
            status = self.code_value(code if code is not None else 500)
        key = (method, known if known is not None else self.route_value(route), status)
        series = self._series.get(key)
        try:
            if series is None:
                if self.requests is None:
                    series = self._series[key] = (None, self.duration.labels(*key))
                else:
                    series = self._series[key] = (self.requests.labels(*key), self.duration.labels(*key[:2]))
            if exemplar is None:
                if series[0] is not None:
                    series[0].inc()
                series[1].observe(elapsed)
            else:  # classic buckets keep exemplars; exponential ones (a buckets= choice) do not
                if series[0] is not None:
                    series[0].inc(exemplar=exemplar)
                if type(series[1]) is HistogramSeries:
                    series[1].observe(elapsed, exemplar=exemplar)
                else:
                    series[1].observe(elapsed)
        except (StatmapError, ValueError, OSError) as exc:  # never fail a request for its metrics
            if not self._warned:
                self._warned = True
                warnings.warn(f"statmap middleware: request not recorded: {exc}", RuntimeWarning, stacklevel=2)
        self.in_flight.dec()


def _metrics(metrics: HTTPMetrics | None, options: dict[str, Any]) -> HTTPMetrics:
    if metrics is None:
        return HTTPMetrics(**options)
    if options:
        raise TypeError(f"pass either metrics= or options for new metrics, not both: {sorted(options)}")
    return metrics


def _call_finder(finder: Callable[[dict[str, Any]], str | None], env: dict[str, Any]) -> Any:
    try:
        return finder(env)
    except Exception:  # noqa: BLE001 - a broken route= callable must not fail the request
        return None


def _flask_rule(environ: dict[str, Any]) -> str | None:
    # Werkzeug stores the request under this key while Flask handles it; Flask
    # has matched the URL rule by the time the response starts.
    request = environ.get("werkzeug.request")
    rule = getattr(request, "url_rule", None)
    return getattr(rule, "rule", None)


def django_route(get_response: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A Django middleware that names each request's route for ``WSGIMiddleware``.

    Add ``"statmap.middleware.django_route"`` to ``MIDDLEWARE``: the route is
    the resolver's pattern ("/items/<int:pk>/"); unmatched requests count as
    "other". Django's ``request.META`` is the WSGI environ, which is where
    ``WSGIMiddleware`` looks (Django under ASGI has no such shared dict).
    """

    def middleware(request: Any) -> Any:
        response = get_response(request)
        match = getattr(request, "resolver_match", None)
        route = getattr(match, "route", None)
        if route:
            request.META[ROUTE_KEY] = "/" + route
        return response

    return middleware


class _Middleware:
    """What both middlewares hold: the wrapped app, the route finder and the metrics."""

    def __init__(
        self,
        app: Callable[..., Any],
        /,  # positional-only, as Starlette's middleware factory protocol expects
        *,
        route: Callable[[dict[str, Any]], str | None] | None = None,
        metrics: HTTPMetrics | None = None,
        **options: Any,
    ) -> None:
        self.app = app
        self.route = route
        self.metrics = _metrics(metrics, options)


class WSGIMiddleware(_Middleware):
    """Records every request through a WSGI application.

    ``route``: optional ``route(environ) -> str | None`` called when the
    response starts, naming the route template (None: ``other``). Without it,
    ``environ["statmap.route"]`` or Flask's matched URL rule is used.
    ``metrics``: an :class:`HTTPMetrics` to share; otherwise the remaining
    keyword arguments (``publisher``, ``prefix``, ``methods``, ``max_routes``,
    ``buckets``, ``directory``) make a new one.

    Latency runs from the call to the server's ``close()`` of the response, so
    it includes streaming the body; a list body finishes when the
    application returns. An exception from the application, or while the
    body is produced, is counted as a 5xx and re-raised.
    """

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = _WSGIRequest(self, environ, start_response)
        try:
            result = self.app(environ, request)
        except BaseException:
            request.finish(True)
            raise
        if type(result) is list or type(result) is tuple:
            request.finish(False)  # nothing left to run: the body is built
            return result
        wrapper = environ.get("wsgi.file_wrapper")
        if wrapper is not None and isinstance(wrapper, type) and isinstance(result, wrapper):
            request.finish(False)  # keep the server's sendfile path
            return result
        request.result = result
        return request


class _WSGIRequest:
    """One request: the start_response the application calls, and the body iterable the server reads."""

    __slots__ = ("environ", "exemplar", "finder", "iterator", "metrics", "result", "route", "start_response", "started",
                 "status")  # fmt: skip

    def __init__(self, mw: WSGIMiddleware, environ: dict[str, Any], start_response: Callable[..., Any]) -> None:
        self.metrics = metrics = mw.metrics
        self.finder = mw.route
        self.environ = environ
        self.start_response = start_response
        self.status = ""
        self.route: Any = None
        self.result: Any = None
        self.iterator: Any = None
        self.exemplar = current_exemplar()  # the server span, active now under OpenTelemetry's middleware
        metrics.in_flight.inc()
        self.started = perf_counter()

    def __call__(self, status: str, headers: Any, exc_info: Any = None) -> Any:
        self.status = status
        environ = self.environ
        finder = self.finder
        if finder is not None:
            self.route = _call_finder(finder, environ)
        else:
            route = environ.get(ROUTE_KEY)
            self.route = route if route is not None else _flask_rule(environ)
        if exc_info is None:
            return self.start_response(status, headers)
        return self.start_response(status, headers, exc_info)

    def __iter__(self) -> Iterator[bytes]:
        self.iterator = iter(self.result)
        return self

    def __next__(self) -> bytes:
        if self.iterator is None:
            self.iterator = iter(self.result)
        try:
            return next(self.iterator)  # type: ignore[no-any-return]
        except StopIteration:
            raise
        except BaseException:
            self.finish(True)
            raise

    def close(self) -> None:
        try:
            close = getattr(self.result, "close", None)
            if close is not None:
                close()
        except BaseException:
            self.finish(True)
            raise
        self.finish(False)

    def finish(self, failed: bool) -> None:
        started = self.started
        if started < 0:
            return
        elapsed = perf_counter() - started
        self.started = -1.0
        self.metrics.record(
            self.environ.get("REQUEST_METHOD"),
            self.route,
            "5xx" if failed else _WSGI_CLASSES.get(self.status[:1], OTHER),
            elapsed,
            None if failed or not self.status[:3].isdigit() else int(self.status[:3]),
            self.exemplar,
        )


def _starlette_route(scope: dict[str, Any], root_path: str) -> str | None:
    # Starlette (and FastAPI) routers store the matched route in the scope
    # they pass down; a Mount adds its matched prefix to root_path.
    route = scope.get("route")
    if route is None:
        return None
    prefix = scope.get("root_path", "")
    prefix = prefix[len(root_path) :] if prefix.startswith(root_path) else ""
    if hasattr(route, "routes"):  # a Mount whose app is not a router (static files, a sub-application)
        return prefix + "/{path}"
    path_format = getattr(route, "path_format", None)
    return prefix + path_format if isinstance(path_format, str) else None


class ASGIMiddleware(_Middleware):
    """Records every HTTP request through an ASGI application (other scopes pass through).

    ``route``: optional ``route(scope) -> str | None`` called when the
    application has finished, naming the route template (None: ``other``).
    Without it, ``scope["statmap.route"]`` or the route Starlette or FastAPI
    matched (its ``path_format``, with the prefix of any Mount) is used.
    Other options as for :class:`WSGIMiddleware`.

    ``close_at_shutdown`` (default True): when the application has finished
    its ASGI lifespan shutdown, every publisher of this process is closed
    (``statmap.close_all()``), so that servers whose workers end by a signal
    after a graceful shutdown (uvicorn ``--workers``) leave files that read
    *closed*, not *dead*. Updates after that go to private memory.

    Latency runs until the application returns, so it includes streaming the
    body. An exception is counted as a 5xx and re-raised; an application
    that returns without starting a response is counted as a 5xx (the server
    answers 500).
    """

    def __init__(
        self,
        app: Callable[..., Any],
        /,
        *,
        route: Callable[[dict[str, Any]], str | None] | None = None,
        metrics: HTTPMetrics | None = None,
        close_at_shutdown: bool = True,
        **options: Any,
    ) -> None:
        super().__init__(app, route=route, metrics=metrics, **options)
        self.close_at_shutdown = close_at_shutdown

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan" and self.close_at_shutdown:
                send = _ClosingAtShutdown(send)
            await self.app(scope, receive, send)
            return
        metrics = self.metrics
        root_path = scope.get("root_path", "")
        sender = _ASGISend(send)
        failed = True
        exemplar = current_exemplar()
        metrics.in_flight.inc()
        started = perf_counter()
        try:
            await self.app(scope, receive, sender)
            failed = False
        finally:
            elapsed = perf_counter() - started
            finder = self.route
            if finder is not None:
                route = _call_finder(finder, scope)
            else:
                route = scope.get(ROUTE_KEY)
                if route is None:
                    route = _starlette_route(scope, root_path)
            code = sender.status
            status = "5xx" if failed or not code else _ASGI_CLASSES[code // 100] if 100 <= code < 600 else OTHER
            metrics.record(scope.get("method"), route, status, elapsed, None if failed or not code else code, exemplar)


class _ClosingAtShutdown:
    """Wraps a lifespan ``send``: once the application has finished its shutdown, close every publisher.

    The server is ending the process. uvicorn's ``--workers`` then re-raise
    the SIGTERM they caught, with its default action, so neither atexit nor
    any finalizer runs: without this their files would read *dead* after every
    clean restart.
    """

    __slots__ = ("send",)

    def __init__(self, send: Callable[..., Any]) -> None:
        self.send = send

    async def __call__(self, message: dict[str, Any]) -> None:
        await self.send(message)
        if message.get("type") in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            close_all()


class _ASGISend:
    """Wraps ``send`` to see the response status."""

    __slots__ = ("send", "status")

    def __init__(self, send: Callable[..., Any]) -> None:
        self.send = send
        self.status = 0

    async def __call__(self, message: dict[str, Any]) -> None:
        if not self.status and message["type"] == "http.response.start":
            self.status = message["status"]
        await self.send(message)
