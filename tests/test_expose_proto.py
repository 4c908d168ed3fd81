"""Prometheus' protobuf exposition (delimited MetricFamily): every kind, native histograms, negotiation.

The messages are read back with a wire-format reader written here from the
protobuf encoding spec (independent of statmap's encoder); a real Prometheus
reads them in tests/test_prometheus.py.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import statmap
from statmap import expose
from statmap.collect import Collector
from statmap.expose_proto import PROTOBUF_CONTENT_TYPE
from statmap.httputil import wants_protobuf
from statmap.values import ExpHistogramValue

from .test_server_support import Server

PROMETHEUS_242_ACCEPT = (
    "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,"
    "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,"
    "text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)


def _varint(data: bytes, at: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        b = data[at]
        at += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, at


def _fields(data: bytes) -> dict[int, list[Any]]:
    """field number -> values (ints for varints, bytes for 64-bit and length-delimited)."""
    out: dict[int, list[Any]] = {}
    at = 0
    while at < len(data):
        key, at = _varint(data, at)
        field, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, at = _varint(data, at)
        elif wire == 1:
            value, at = data[at : at + 8], at + 8
        elif wire == 2:
            n, at = _varint(data, at)
            value, at = data[at : at + n], at + n
        else:
            raise AssertionError(f"wire type {wire}")
        out.setdefault(field, []).append(value)
    assert at == len(data)
    return out


def _double(raw: bytes) -> float:
    return float(struct.unpack("<d", raw)[0])


def _unzig(n: int) -> int:
    return (n >> 1) ^ -(n & 1)


def _families(stream: bytes) -> dict[str, tuple[int, list[dict[int, list[Any]]]]]:
    """name -> (type, [metric fields])."""
    out = {}
    at = 0
    while at < len(stream):
        n, at = _varint(stream, at)
        f = _fields(stream[at : at + n])
        at += n
        out[f[1][0].decode()] = (f.get(3, [0])[0], [_fields(m) for m in f.get(4, [])])
    return out


def _labels(metric: dict[int, list[Any]]) -> dict[str, str]:
    pairs = [_fields(p) for p in metric.get(1, [])]
    return {p[1][0].decode(): p[2][0].decode() for p in pairs}


def _native(h: dict[int, list[Any]], spans_field: int, deltas_field: int) -> dict[int, int]:
    """Prometheus bucket index -> count, from spans and deltas."""
    deltas: list[int] = []
    for packed in h.get(deltas_field, []):
        at = 0
        while at < len(packed):
            v, at = _varint(packed, at)
            deltas.append(_unzig(v))
    counts, running, index, k = {}, 0, 0, 0
    for i, raw in enumerate(h.get(spans_field, [])):
        span = _fields(raw)
        offset, length = _unzig(span.get(1, [0])[0]), span.get(2, [0])[0]
        index = offset if i == 0 else index + offset
        for _ in range(length):
            running += deltas[k]
            k += 1
            if running:
                counts[index] = running
            index += 1
    assert k == len(deltas)
    return counts


def _statmap_buckets(side: tuple[int, tuple[int, ...]]) -> dict[int, int]:
    """statmap bucket i is Prometheus bucket i + 1 (upper bound base**(i+1))."""
    return {side[0] + j + 1: c for j, c in enumerate(side[1]) if c}


def _only_histogram(statdir: str, name: str) -> dict[int, list[Any]]:
    """The Histogram message of the one series of family ``name``."""
    body = expose.Exposer().render_bytes(Collector(statdir).collect(), "protobuf")
    (metric,) = _families(body)[name][1]
    return _fields(metric[7][0])


def _publish(statdir: str) -> statmap.Publisher:
    p = statmap.Publisher("app", statdir)
    p.counter("requests", "Requests served", labels=("method",)).labels("GET").inc(7)
    p.gauge("temperature", "Temperature", unit="celsius").set(-12.5)
    h = p.histogram("size", "Sizes", unit="bytes", buckets=(10, 100))
    for v in (5, 50, 500):
        h.observe(v)
    p.summary("work", "Work", unit="seconds").observe(2.5)
    p.enum("state", "State", states=("starting", "serving")).state("serving")
    p.info("build", "Build").info({"version": "1.2"})
    e = p.histogram("lat", "Latency", unit="seconds", buckets=statmap.Exponential(40, zero_threshold=1e-9))
    for i in range(1, 200):
        e.observe(i * 0.37)
        e.observe(-i * 1e-3)
    e.observe(0.0)
    e.observe(1e6)  # far out: spans with gaps
    return p


def test_every_kind_as_metric_families(statdir: str) -> None:
    p = _publish(statdir)
    try:
        collection = Collector(statdir).collect()
        body = expose.Exposer().render_bytes(collection, "protobuf")
    finally:
        p.close()
    fams = _families(body)
    assert fams["requests_total"][0] == 0  # COUNTER, named as its sample
    (m,) = fams["requests_total"][1]
    assert _labels(m) == {"method": "GET"} and _double(_fields(m[3][0])[1][0]) == 7.0
    assert 3 in _fields(m[3][0])  # created timestamp
    t, (g,) = fams["temperature_celsius"]
    assert t == 1 and _double(_fields(g[2][0])[1][0]) == -12.5
    t, (h,) = fams["size_bytes"]
    hist = _fields(h[7][0])
    buckets = [(_double(_fields(b)[2][0]), _fields(b)[1][0]) for b in hist[3]]
    assert t == 4 and hist[1] == [3] and _double(hist[2][0]) == 555.0
    assert buckets == [(10.0, 1), (100.0, 2), (math.inf, 3)] and 5 not in hist  # classic: no schema
    t, (s,) = fams["work_seconds"]
    summ = _fields(s[4][0])
    assert t == 2 and summ[1] == [1] and _double(summ[2][0]) == 2.5
    t, states = fams["state"]
    assert t == 1 and {_labels(x)["state"]: _double(_fields(x[2][0])[1][0]) for x in states} == {
        "starting": 0.0,
        "serving": 1.0,
    }
    t, (info,) = fams["build_info"]
    assert t == 1 and _labels(info) == {"pid": str(p.identity.pid), "version": "1.2"}  # per process

    # the exponential histogram: a native histogram, bucket for bucket
    value = next(f for f in collection.families if f.name == "lat").samples[0].value
    assert isinstance(value, ExpHistogramValue)
    t, (n,) = fams["lat_seconds"]
    nh = _fields(n[7][0])
    assert t == 4 and 3 not in nh  # no classic buckets
    assert nh[1] == [value.count] == [400] and _double(nh[2][0]) == value.sum
    assert _unzig(nh[5][0]) == value.scale <= 8 and _double(nh[6][0]) == 1e-9 and nh[7] == [1]
    assert _native(nh, 12, 13) == _statmap_buckets(value.positive)
    assert _native(nh, 9, 10) == _statmap_buckets(value.negative)
    assert len(nh[12]) >= 2  # 1e6 is far from the rest: a second span, not thousands of zeros


def test_fine_scales_are_downscaled_to_prometheus_schema_8(statdir: str) -> None:
    with statmap.Publisher("fine", statdir) as p:
        h = p.histogram("x", "X", buckets=statmap.Exponential(160, max_scale=12))
        for v in (1.001, 1.002, 1.003):
            h.observe(v)
        (fam,) = [f for f in Collector(statdir).collect().families if f.name == "x"]
        value = fam.samples[0].value
        assert value.scale == 12
        nh = _only_histogram(statdir, "x")
    assert _unzig(nh[5][0]) == 8
    assert _native(nh, 12, 13) == _statmap_buckets(value.downscaled(8).positive)


def test_empty_native_histogram_has_a_no_op_span(statdir: str) -> None:
    with statmap.Publisher("empty", statdir) as p:
        p.histogram("x", "X", buckets=statmap.Exponential(8))
        nh = _only_histogram(statdir, "x")
    assert nh[1] == [0] and len(nh[12]) == 1 and _fields(nh[12][0]).get(2, [0]) == [0]


def test_negotiation() -> None:
    assert wants_protobuf(PROMETHEUS_242_ACCEPT)
    assert not wants_protobuf(None) and not wants_protobuf("text/plain")
    assert not wants_protobuf("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text")
    assert not wants_protobuf(
        "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.2,"
        "application/openmetrics-text;version=1.0.0;q=0.5"
    )


def test_serve_answers_prometheus_accept_with_protobuf(statdir: str) -> None:
    p = _publish(statdir)
    server = Server(statdir)
    try:
        status, headers, body = server.request("/metrics", {"Accept": PROMETHEUS_242_ACCEPT})
        assert status == 200 and headers["Content-Type"] == PROTOBUF_CONTENT_TYPE
        assert "lat_seconds" in _families(body)
        status, headers, body = server.request("/metrics?format=protobuf&match=lat")
        assert status == 200 and headers["Content-Type"] == PROTOBUF_CONTENT_TYPE
        assert list(_families(body)) == ["lat_seconds"]
        status, headers, _ = server.request("/metrics", {"Accept": "text/plain"})
        assert headers["Content-Type"].startswith("text/plain")
    finally:
        p.close()
        code, _, err = server.stop()
        assert code == 0, err
