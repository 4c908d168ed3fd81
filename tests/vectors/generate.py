"""Writes the golden files: `python tests/vectors/generate.py` rewrites tests/vectors/.

Each vector NAME has NAME.statmap (written by the reference writer with fixed
identity fields) and NAME.json: what `statmap show --json NAME.statmap`
prints for it, with "path" reduced to the file name. tests/test_vectors.py
checks that the writer reproduces every file byte for byte and that the
reader reads the values in the JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable

import statmap
from statmap import _layout as L
from statmap.knob_state import file_knobs_json
from statmap.publisher import Publisher

HERE = os.path.dirname(os.path.abspath(__file__))
CREATED_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
CLOSED_NS = CREATED_NS + 90_000_000_000


def identity(name: str, index: int) -> L.Identity:
    return L.Identity(
        pid=4242 + index,
        start_time=123456 + index,
        boot_id=bytes(range(16)),
        instance_id=bytes((index * 16 + i) % 256 for i in range(16)),
        created_ns=CREATED_NS,
        publisher=name,
        program="golden-writer",
    )


def _counter(p: Publisher) -> None:
    c = p.counter("requests", "Requests served")
    c.inc()
    c.inc(41)
    big = p.counter("big", "A counter past 2**53")
    big.inc(2**60 + 1)


def _float_counter(p: Publisher) -> None:
    c = p.counter("cpu_seconds", "CPU time used", unit="seconds", float=True)
    c.inc(0.25)
    c.inc(1.5)


def _gauge(p: Publisher) -> None:
    p.gauge("temperature", "Temperature", unit="celsius").set(-12.5)
    g = p.gauge("in_flight", "Requests in flight", aggregate="sum", live_only=True)
    g.inc(3)
    g.dec()
    p.gauge("peak", "Peak memory", unit="bytes", aggregate="max").set(1.5e9)


def _histogram(p: Publisher) -> None:
    h = p.histogram("latency", "Request latency", unit="seconds", buckets=(0.01, 0.1, 1.0))
    for v in (0.005, 0.01, 0.05, 0.5, 2.0, 3.0):
        h.observe(v)


def _histogram_log(p: Publisher) -> None:
    h = p.histogram("size", "Payload size", unit="bytes", buckets=statmap.LogBuckets(1.0, 100.0, 0.1))
    for v in (1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144):
        h.observe(v)


def _exphistogram(p: Publisher) -> None:
    """Format 1.2: 8 slots per sign, so the scale falls from 3 to 0 as the range grows; zero, negatives, min/max."""
    h = p.histogram("delay", "Delay", unit="seconds", buckets=statmap.Exponential(8, zero_threshold=0.001, max_scale=3))
    for v in (1.0, 1.5, 2.0, 3.0, 0.0005, -0.25, 10.0, 100.0, -4.0, 0.0):
        h.observe(v)


def _summary(p: Publisher) -> None:
    s = p.summary("payload", "Payload size", unit="bytes")
    for v in (100, 250, 4096):
        s.observe(v)


def _text(p: Publisher) -> None:
    p.text("last_path", "Last path served", size=16).set("/index")
    # 17 bytes of UTF-8 with room for 16: cut to 15, before the last two-byte "é"
    p.text("motto", "Motto", size=16).set("naïve café éé")
    p.text("empty", "Never set", size=8)


def _info(p: Publisher) -> None:
    p.info("build", "Build information", values={"version": "1.2.3", "commit": "abc123"})


def _enum(p: Publisher) -> None:
    e = p.enum("state", "Worker state", states=("starting", "serving", "draining"))
    e.state("serving")


def _labels(p: Publisher) -> None:
    c = p.counter("http_requests", "HTTP requests", labels=("method", "status"))
    c.labels("GET", "200").inc(7)
    c.labels(method="POST", status="500").inc(2)
    c.labels("GET", 404).inc()
    g = p.gauge("queue", "Queue length", labels=("queue",))
    g.labels("high").set(3)
    g.labels("low").set(0.5)


def _grown(p: Publisher) -> None:
    c = p.counter("items", "Many labelled series", labels=("item",))
    for i in range(60):
        c.labels(f"item-{i:03d}").inc(i)


def _knobs(p: Publisher) -> None:
    """Knob records (format 1.1, docs/format.md section 13), with fixed published states."""
    from statmap.knob_values import Change, KnobState

    when = CREATED_NS + 30_000_000_000
    maintenance = p.knob("maintenance", "Refuse new work", default=False)
    rate = p.knob("rate_limit", "Requests per second allowed", default=100, min=1, max=10_000)
    level = p.knob("log_level", "Log level", default="info", choices=("debug", "info", "warning", "error"))
    ratio = p.knob("error_rate", "Share of requests to fail", default=0.0, min=0.0, max=1.0)
    banner = p.knob("banner", "Banner text", default="", size=32)
    maintenance._publish(
        KnobState(
            7,
            7,
            "operator",
            1000,
            999,
            when,
            "true",
            history=(Change(when + 1000, "operator", 1000, 999, "false", "true"),),
        )
    )
    rate._publish(KnobState(7, 0, "environment", 1000, 4242, CREATED_NS, "250"))
    level._publish(
        KnobState(
            7,
            0,
            "default",
            1000,
            4242,
            CREATED_NS,
            "info",
            7,
            "verbose",
            "'verbose' is not one of debug, info, warning, error",
            when,
        )
    )
    ratio._publish(KnobState(7, 0, "default", 1000, 4242, CREATED_NS, "0.0"))
    banner._publish(KnobState(0, 0, "default", 1000, 4242, CREATED_NS, ""))


def _exemplars(p: Publisher) -> None:
    """Format 1.2 exemplar records (section 15): a counter's and two histogram buckets' (one +Inf)."""
    from statmap import exemplars

    exemplars._clock = lambda: CREATED_NS + 1_500_000_000
    c = p.counter("requests", "Requests served", labels=("route",))
    c.labels("/a").inc(exemplar={"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"})
    h = p.histogram("latency", "Request latency", unit="seconds", buckets=(0.1, 1.0))
    h.observe(0.25, exemplar={"trace_id": "00f067aa0ba902b7", "span_id": "b7ad6b7169203331"})
    h.observe(7.5, exemplar={"trace_id": "é"})
    h.observe(0.05)


def _all_types(p: Publisher) -> None:
    for build in (_counter, _float_counter, _gauge, _histogram, _summary, _text, _info, _enum):
        build(p)


VECTORS: dict[str, Callable[[Publisher], None]] = {
    "counter": _counter,
    "float_counter": _float_counter,
    "gauge": _gauge,
    "histogram": _histogram,
    "histogram_log": _histogram_log,
    "exphistogram": _exphistogram,
    "summary": _summary,
    "text": _text,
    "info": _info,
    "enum": _enum,
    "labels": _labels,
    "grown": _grown,
    "all_types": _all_types,
    "closed": _counter,
    "knobs": _knobs,
    "exemplars": _exemplars,
}


def build(name: str, directory: str) -> bytes:
    """Write vector ``name`` with the reference writer; return the file's bytes."""
    # knobs (since 1.1) and exemplars (1.2) come last, so the older vectors keep their identities
    late = ("knobs", "exemplars")
    older = sorted(n for n in VECTORS if n not in late)
    index = older.index(name) if name not in late else len(older) + late.index(name)
    pub = Publisher(name, directory, capacity=4096, _identity=identity(name, index))
    VECTORS[name](pub)
    if name == "closed":
        pub.close(_closed_ns=CLOSED_NS)
    with open(pub.path, "rb") as f:
        data = f.read()
    pub.remove()
    return data


def expected_json(path: str) -> dict[str, object]:
    with statmap.open(path) as reader:
        doc = reader.snapshot().to_json()
    doc["path"] = os.path.basename(path)
    return {"processes": [doc]}


def knobs_json(path: str) -> list[dict[str, object]] | None:
    """NAME.knobs.json: the knobs of a vector as ``statmap knobs --json`` lists them (format 1.1)."""
    return file_knobs_json(path)


def control_vector() -> tuple[bytes, list[dict[str, object]]]:
    """control.knobs, a control file (format 1.1, docs/format.md section 13), and its entries as JSON."""
    from statmap.knob_values import Control, Entry, encode_control

    when = CREATED_NS + 60_000_000_000
    control = Control(
        CREATED_NS + 60_000_000_001,
        (
            Entry("maintenance", "", "set", "true", 1000, 999, when),
            Entry("rate_limit", "4243:123457", "set", "50", 1000, 999, when),
            Entry("log_level", "", "reset", "", 1000, 998, when - 1),
            Entry("banner", "", "set", "héllo, wörld:1,", 1000, 999, when),
        ),
    )
    data = encode_control(control).encode("utf-8")
    return data, [{"seq": control.seq}, *(dict(vars(e)) for e in control.entries)]


def main() -> int:
    work = tempfile.mkdtemp()
    try:
        for name in sorted(VECTORS):
            data = build(name, work)
            target = os.path.join(HERE, f"{name}.statmap")
            with open(target, "wb") as f:
                f.write(data)
            with open(os.path.join(HERE, f"{name}.json"), "w") as f:
                json.dump(expected_json(target), f, indent=2, ensure_ascii=False)
                f.write("\n")
            found = knobs_json(target)
            if found is not None:
                with open(os.path.join(HERE, f"{name}.knobs.json"), "w") as f:
                    json.dump(found, f, indent=2, ensure_ascii=False)
                    f.write("\n")
            print(f"{name}: {len(data)} bytes")
        data, doc = control_vector()
        with open(os.path.join(HERE, "control.knobs"), "wb") as f:
            f.write(data)
        with open(os.path.join(HERE, "control.knobs.json"), "w") as f:
            json.dump(doc, f, indent=2, ensure_ascii=False)
            f.write("\n")
    finally:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
