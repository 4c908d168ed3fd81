"""Prometheus' protobuf exposition: delimited ``io.prometheus.client.MetricFamily`` messages.

The format Prometheus asks for first when its native histograms are on
(``--enable-feature=native-histograms``): exponential histograms go out as
native histograms (schema, zero bucket, spans and deltas), with no classic
buckets (Prometheus 2.42 ingests only the native form of a histogram that
has one; the text formats carry the derived classic buckets for the others).
Every other kind goes out as in the Prometheus text format: counters
(``NAME_total``, with their created time), gauges, classic histograms,
summaries (count and sum), and info, enum and text metrics as gauges.

Names and labels are the text formats' (the ``Exposer``'s plan and label
cache), so one series has one identity whatever the format. Field numbers:
prometheus/client_model, io/prometheus/client/metrics.proto.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, Protocol

from . import _protobuf as pb
from .collect import Collection
from .values import ExpHistogramValue, HistogramValue, SummaryValue

PROTOBUF_CONTENT_TYPE = "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
PROMETHEUS_MAX_SCHEMA = 8  # Prometheus' native histograms: schema -4..8
_SPAN_GAP = 2  # a run of more empty buckets than this starts a new span (as client_golang)

# metrics.proto: MetricType, and the field numbers used below
_TYPES = {"counter": 0, "gauge": 1, "summary": 2, "histogram": 4}
_MF_NAME, _MF_HELP, _MF_TYPE, _MF_METRIC = 1, 2, 3, 4
_M_LABEL, _M_GAUGE, _M_COUNTER, _M_SUMMARY, _M_HISTOGRAM = 1, 2, 3, 4, 7


class _Exposer(Protocol):
    """What is used of ``expose.Exposer`` (not imported: it imports this module)."""

    def plan(self, collection: Collection) -> list[Any]: ...
    def base_labels(self, out: Any, fam: Any, sample: Any) -> tuple[str, dict[str, str]]: ...


def _timestamp(field: int, seconds: float) -> bytes:
    """A google.protobuf.Timestamp (seconds 1, nanos 2)."""
    whole = math.floor(seconds)
    nanos = min(round((seconds - whole) * 1e9), 999_999_999)
    return pb.bytes_field(field, pb.uint_field(1, whole) + (pb.uint_field(2, nanos) if nanos else b""))


def _labels(labels: dict[str, str], extra: Any = None) -> bytes:
    pairs = list(labels.items()) + list(extra or ())
    return b"".join(pb.bytes_field(_M_LABEL, pb.string_field(1, k) + pb.string_field(2, v)) for k, v in pairs)


def _spans(offset: int, counts: tuple[int, ...]) -> tuple[list[tuple[int, int]], list[int]]:
    """Prometheus spans (gap, length) and the counts of the buckets they cover, from statmap's (offset, counts).

    statmap's bucket i is (base**i, base**(i+1)]; Prometheus' bucket i is
    (base**(i-1), base**i]: the same bucket is one index higher there.
    """
    spans: list[tuple[int, int]] = []
    covered: list[int] = []
    end = None  # the Prometheus index after the last span
    start = length = 0
    for j, c in enumerate(counts):
        if not c:
            continue
        index = offset + j + 1
        if end is not None and index - end <= _SPAN_GAP:
            covered += [0] * (index - end) + [c]
            length += index - end + 1
        else:
            if end is not None:
                spans.append((start, length))
            start, length = (index if end is None else index - end), 1
            covered.append(c)
        end = index + 1
    if end is not None:
        spans.append((start, length))
    # the first span's offset is absolute, the others are gaps after the previous span
    return spans, covered


def _deltas(counts: list[int]) -> list[int]:
    out, previous = [], 0
    for c in counts:
        out.append(c - previous)
        previous = c
    return out


def native_histogram(value: ExpHistogramValue, created: float | None) -> bytes:
    """A Histogram message (metrics.proto) holding ``value`` as a native histogram."""
    if value.scale > PROMETHEUS_MAX_SCHEMA:
        value = value.downscaled(PROMETHEUS_MAX_SCHEMA)
    parts = [
        pb.uint_field(1, value.count),
        pb.double_field(2, value.sum),
        pb.sint_field(5, value.scale),
        pb.double_field(6, value.zero_threshold),
        pb.uint_field(7, value.zero_count),
    ]
    any_span = False
    for span_field, delta_field, (offset, counts) in ((9, 10, value.negative), (12, 13, value.positive)):
        spans, covered = _spans(offset, counts)
        if spans:
            any_span = True
            parts += [pb.bytes_field(span_field, pb.sint_field(1, o) + pb.uint_field(2, n)) for o, n in spans]
            parts.append(pb.packed_sint_field(delta_field, _deltas(covered)))
    if not any_span:  # no buckets: a no-op span says "native" to Prometheus (else it reads a classic one)
        parts.append(pb.bytes_field(12, pb.sint_field(1, 0) + pb.uint_field(2, 0)))
    if created:
        parts.append(_timestamp(15, created))
    return b"".join(parts)


def classic_histogram(value: HistogramValue, created: float | None) -> bytes:
    parts = [pb.uint_field(1, value.count), pb.double_field(2, value.sum)]
    for bound, cumulative in value.buckets:
        parts.append(pb.bytes_field(3, pb.uint_field(1, cumulative) + pb.double_field(2, bound)))
    if created:
        parts.append(_timestamp(15, created))
    return b"".join(parts)


def _metric(kind_type: str, value: Any, created: float | None) -> bytes:
    """The typed part of a Metric message."""
    if kind_type == "counter":
        body = pb.double_field(1, float(value)) + (_timestamp(3, created) if created else b"")
        return pb.bytes_field(_M_COUNTER, body)
    if kind_type == "histogram":
        if isinstance(value, ExpHistogramValue):
            return pb.bytes_field(_M_HISTOGRAM, native_histogram(value, created))
        return pb.bytes_field(_M_HISTOGRAM, classic_histogram(value, created))
    if kind_type == "summary":
        assert isinstance(value, SummaryValue)
        body = pb.uint_field(1, value.count) + pb.double_field(2, value.sum)
        return pb.bytes_field(_M_SUMMARY, body + (_timestamp(4, created) if created else b""))
    return pb.bytes_field(_M_GAUGE, pb.double_field(1, float(value)))


def _family(exposer: _Exposer, collection: Collection, out: Any) -> Iterator[bytes]:
    """The Metric messages of one exposed family."""
    kind = out.kind
    ptype = kind.prom_type
    for fam in out.fam:
        created = collection.created.get(fam.publisher)
        if ptype == "gauge":  # gauges, and info, enum and text as the Prometheus text format has them
            expand = kind.expand(out.name, None, fam.states)
            for sample in fam.samples:
                _text, labels = exposer.base_labels(out, fam, sample)
                for _name, extra, number in expand(sample.value, labels):
                    yield _labels(labels, extra) + _metric("gauge", number, None)
            continue
        for sample in fam.samples:
            _text, labels = exposer.base_labels(out, fam, sample)
            yield _labels(labels) + _metric(ptype, sample.value, created)


def render(exposer: _Exposer, collection: Collection) -> bytes:
    """The collection as a stream of delimited MetricFamily messages."""
    parts = []
    for out in exposer.plan(collection):
        kind = out.kind
        head = (
            pb.string_field(_MF_NAME, out.name + kind.head)
            + pb.string_field(_MF_HELP, out.help)
            + pb.uint_field(_MF_TYPE, _TYPES[kind.prom_type])
        )
        metrics = b"".join(pb.bytes_field(_MF_METRIC, m) for m in _family(exposer, collection, out))
        parts.append(pb.delimited(head + metrics))
    return b"".join(parts)
