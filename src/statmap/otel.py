"""OpenTelemetry: a directory's cross-process aggregate as OTel metrics, pushed with the official OTLP exporter.

Needs the ``otel`` extra (``pip install statmap[otel]``: opentelemetry-sdk
and opentelemetry-exporter-otlp-proto-http), imported only here.

``StatmapMetricProducer(directory).produce()`` gives the SDK's
``MetricsData`` for one collection of the directory; any OTel metric
exporter can ship it (``OTLPMetricExporter().export(data)``). It has the
shape of the SDK's ``MetricProducer`` (``produce(timeout_millis)``) and
subclasses it where the installed SDK defines one. ``export_once`` and
``OtlpPusher`` (a thread, ``statmap serve --otlp``) do the pushing.

The mapping:

* one ``ResourceMetrics`` per publisher name, with ``service.name`` and
  ``statmap.publisher`` (the publisher name), ``process.executable.name``
  (the program), ``host.name``;
* counters: monotonic cumulative ``Sum`` (a trailing ``_total`` dropped);
  their start time is the creation time of the oldest file (process or
  archive) that the totals count, which stays put while workers come and
  go (the archive keeps the dead workers' totals: totals never reset);
* gauges: ``Gauge``, one point per process (``process.pid`` attribute) or
  the aggregate, as the gauge's aggregation mode says;
* histograms: cumulative ``Histogram`` with their explicit bounds;
* exponential histograms: cumulative ``ExponentialHistogram`` with the
  merged scale, offsets and counts, zero count, min and max (statmap's
  scales, -4..20, are inside OTLP's, -10..20; the SDK's data point has no
  zero threshold, so it does not travel: OTLP's default 0 arrives);
* summaries (count and sum): a cumulative ``Histogram`` with no bounds,
  the OTel form of a count and a sum;
* enums: a ``Gauge`` per state (1 for the current one, ``state``
  attribute), info: a ``Gauge`` of 1 with the info as attributes (as
  ``target_info``), both with ``process.pid``; text only with ``include_text``;
* units: ``seconds`` -> ``s``, ``bytes`` -> ``By`` (UCUM), others as given;
* the middleware's OTel-convention metrics (``names="otel"``) get their
  dotted names back (``http.server.request.duration``,
  ``http.request.method``, ``http.response.status_code`` as an integer...).
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from .collect import Collection, Collector, MetricFamily, Sample, match_families
from .values import ExpHistogramValue, HistogramValue, SummaryValue

try:  # the SDK's MetricProducer, where it has one (not in every release)
    from opentelemetry.sdk.metrics.export import MetricProducer as _ProducerBase  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - depends on the installed SDK
    _ProducerBase = object

# statmap names cannot hold dots: the middleware's names="otel" metrics get their dotted names back here
SEMCONV_NAMES = {
    "http_server_request_duration": "http.server.request.duration",
    "http_server_active_requests": "http.server.active_requests",
}
SEMCONV_ATTRIBUTES = {
    "http_request_method": "http.request.method",
    "http_route": "http.route",
    "http_response_status_code": "http.response.status_code",
}
_UNITS = {"seconds": "s", "bytes": "By", "milliseconds": "ms", "ratio": "1"}
INSTALL_HINT = "the OpenTelemetry export needs the otel extra: pip install 'statmap[otel]'"


def _require() -> None:
    try:
        import opentelemetry.sdk.metrics.export  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"{INSTALL_HINT} ({exc})") from None


def _version() -> str:
    from . import __version__

    return __version__


def _attributes(sample: Sample) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in sample.labels.items():
        if k == "pid" and sample.pid is not None:
            out["process.pid"] = int(v) if v.isdigit() else v
        elif k in SEMCONV_ATTRIBUTES:
            out[SEMCONV_ATTRIBUTES[k]] = int(v) if k == "http_response_status_code" and v.isdigit() else v
        else:
            out[k] = v
    return out


def _histogram_point(value: Any, attrs: dict[str, Any], start: int, now: int) -> Any:
    from opentelemetry.sdk.metrics.export import HistogramDataPoint

    if isinstance(value, HistogramValue):
        bounds = [b for b, _ in value.buckets[:-1]]
        counts, previous = [], 0
        for _, cumulative in value.buckets:
            counts.append(cumulative - previous)
            previous = cumulative
        return HistogramDataPoint(attrs, start, now, value.count, value.sum, counts, bounds, None, None)  # type: ignore[arg-type]
    assert isinstance(value, SummaryValue)
    return HistogramDataPoint(attrs, start, now, value.count, value.sum, [value.count], [], None, None)  # type: ignore[arg-type]


OTLP_MAX_SCALE = 20  # OTLP allows -10..20; statmap writes -4..20


def _exp_point(value: ExpHistogramValue, attrs: dict[str, Any], start: int, now: int) -> Any:
    from opentelemetry.sdk.metrics.export import Buckets, ExponentialHistogramDataPoint

    if value.scale > OTLP_MAX_SCALE:  # not from a valid file (the reader checks <= 20); exact if it were
        value = value.downscaled(OTLP_MAX_SCALE)
    # without observations min and max are NaN here; the SDK's own aggregation sends +Inf and -Inf then
    lo, hi = (value.min, value.max) if value.count else (float("inf"), float("-inf"))
    return ExponentialHistogramDataPoint(
        attrs,
        start,
        now,
        value.count,
        value.sum,
        value.scale,
        value.zero_count,
        Buckets(value.positive[0], list(value.positive[1])),
        Buckets(value.negative[0], list(value.negative[1])),
        0,
        lo,
        hi,
    )


class StatmapMetricProducer(_ProducerBase):  # type: ignore[misc, valid-type]
    """The aggregate of a statmap directory as OpenTelemetry ``MetricsData``, one collection per ``produce()``.

    ``publishers``: only these publisher names; ``match``: only metrics whose
    name matches (a statmap pattern); ``include_text``: text metrics as
    info-like gauges; ``process_metrics``: the live writers' /proc metrics;
    ``resource``: more resource attributes for every publisher.
    """

    def __init__(
        self,
        directory: str | None = None,
        *,
        publishers: Iterable[str] | None = None,
        match: str | None = None,
        include_text: bool = False,
        process_metrics: bool = False,
        resource: Mapping[str, Any] | None = None,
        collector: Collector | None = None,
    ) -> None:
        _require()
        from .directory import default_directory

        self._collector = collector or Collector(
            directory or default_directory(), publishers=publishers, process_metrics=process_metrics
        )
        self.match = match
        self.include_text = include_text
        self.resource = dict(resource or {})
        self.host = socket.gethostname()
        self.last: Collection | None = None

    def close(self) -> None:
        self._collector.close()

    def produce(self, timeout_millis: float = 10_000) -> Any:
        collection = self.last = self._collector.collect()
        return self.from_collection(collection)

    def from_collection(self, collection: Collection) -> Any:
        from opentelemetry.sdk.metrics.export import MetricsData, ResourceMetrics, ScopeMetrics
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        now = int(collection.time * 1e9)
        programs: dict[str, str] = {}
        for f in collection.files:
            if f.identity is not None and f.identity.program and f.pid:
                programs.setdefault(f.identity.publisher, f.identity.program)
        by_publisher: dict[str, list[Any]] = {}
        for fam in match_families(collection.families, self.match):
            start = int(collection.created.get(fam.publisher, collection.time) * 1e9)
            metric = self._metric(fam, start, now)
            if metric is not None:
                by_publisher.setdefault(fam.publisher, []).append(metric)
        scope = InstrumentationScope("statmap", _version())
        resources = []
        for publisher, metrics in by_publisher.items():
            attrs: dict[str, Any] = {"service.name": publisher, "statmap.publisher": publisher, "host.name": self.host}
            if publisher in programs:
                attrs["process.executable.name"] = programs[publisher]
            attrs.update(self.resource)
            resources.append(ResourceMetrics(Resource(attrs), [ScopeMetrics(scope, metrics, "")], ""))
        return MetricsData(resources)

    def _metric(self, fam: MetricFamily, start: int, now: int) -> Any:
        from opentelemetry.sdk.metrics.export import (
            AggregationTemporality,
            ExponentialHistogram,
            Gauge,
            Histogram,
            Metric,
            NumberDataPoint,
        )
        from opentelemetry.sdk.metrics.export import Sum as OtelSum

        cumulative = AggregationTemporality.CUMULATIVE
        unit = _UNITS.get(fam.unit, fam.unit)
        name, kind = fam.name, fam.type
        points: list[Any] = []
        data: Any
        if kind == "counter":
            name = name.removesuffix("_total") or name
            points = [NumberDataPoint(_attributes(s), start, now, s.value) for s in fam.samples]
            data = OtelSum(points, cumulative, True)
        elif kind == "gauge":
            points = [NumberDataPoint(_attributes(s), 0, now, s.value) for s in fam.samples]
            data = Gauge(points)
        elif kind == "exphistogram":
            points = [_exp_point(s.value, _attributes(s), start, now) for s in fam.samples]
            data = ExponentialHistogram(points, cumulative)
        elif kind in ("histogram", "summary"):
            points = [_histogram_point(s.value, _attributes(s), start, now) for s in fam.samples]
            data = Histogram(points, cumulative)
        elif kind == "enum":
            for s in fam.samples:
                attrs = _attributes(s)
                for state in fam.states:
                    points.append(NumberDataPoint({**attrs, "state": state}, 0, now, int(s.value == state)))
            data = Gauge(points)
        elif kind == "info" or (kind == "text" and self.include_text):
            for s in fam.samples:
                extra = s.value if isinstance(s.value, dict) else {"value": str(s.value)}
                points.append(NumberDataPoint({**_attributes(s), **extra}, 0, now, 1))
            data = Gauge(points)
            name = name.removesuffix("_info") or name
        else:
            return None  # text, unless asked for; a kind added later, until it is mapped here
        return Metric(SEMCONV_NAMES.get(name, name), fam.help, unit, data)


class ExportError(Exception):
    """The OTLP endpoint refused the metrics or could not be reached (the message says what the exporter saw)."""


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def make_exporter(endpoint: str, headers: Mapping[str, str] | None = None, timeout: float = 10.0) -> Any:
    """The official OTLP/HTTP metric exporter for ``endpoint`` (the full URL, e.g. http://host:4318/v1/metrics)."""
    _require()
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    return OTLPMetricExporter(endpoint=endpoint, headers=dict(headers or {}), timeout=timeout)


def export_once(producer: StatmapMetricProducer, exporter: Any) -> int:
    """Collect once and export; the number of data points sent, or ExportError with the exporter's reason."""
    from opentelemetry.sdk.metrics.export import MetricExportResult

    data = producer.produce()
    points = sum(len(m.data.data_points) for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics)
    capture = _Capture()
    log = logging.getLogger("opentelemetry.exporter.otlp.proto.http")
    log.addHandler(capture)
    try:
        result = exporter.export(data)
    finally:
        log.removeHandler(capture)
    if result is not MetricExportResult.SUCCESS:
        why = "; ".join(dict.fromkeys(capture.messages)) or "the exporter reported a failure"
        raise ExportError(f"OTLP export to {getattr(exporter, '_endpoint', '?')} failed: {why}")
    return points


def push_otlp(
    endpoint: str,
    *,
    directory: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
    **producer_options: Any,
) -> int:
    """One push of a directory's aggregate to an OTLP/HTTP endpoint (``statmap push --otlp``); data points sent."""
    producer = StatmapMetricProducer(directory, **producer_options)
    exporter = make_exporter(endpoint, headers, timeout)
    try:
        return export_once(producer, exporter)
    finally:
        producer.close()
        exporter.shutdown()


class OtlpPusher:
    """Pushes a directory's aggregate every ``interval`` seconds from a thread (``statmap serve --otlp``).

    A failed push is logged (``statmap.otel`` logger) and tried again at the
    next interval: the totals are cumulative, so nothing is lost by a missed push.
    """

    def __init__(
        self,
        endpoint: str,
        directory: str,
        *,
        interval: float = 10.0,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **producer_options: Any,
    ) -> None:
        self.producer = StatmapMetricProducer(directory, **producer_options)
        self.exporter = make_exporter(endpoint, headers, timeout if timeout is not None else min(10.0, interval))
        self.interval = interval
        self.pushes = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="statmap-otlp", daemon=True)
        self._log = logging.getLogger("statmap.otel")

    def start(self) -> OtlpPusher:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.push()

    def push(self) -> None:
        try:
            export_once(self.producer, self.exporter)
            self.pushes += 1
        except Exception as exc:  # noqa: BLE001 - a push thread must outlive any one failure
            self.failures += 1
            self._log.warning("statmap: %s", exc)

    def stop(self) -> None:
        """Stop, after one last push (what changed since the last interval is not lost)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval + 30)
        self.push()
        self.exporter.shutdown()
        self.producer.close()
