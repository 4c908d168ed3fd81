"""Property tests: any sequence of updates reads back exactly as a plain Python model predicts.

Each example builds a real publisher (a real file, grown as label sets are
added), applies a random program of updates to every metric type, and after
every step compares the model with both the series' own ``get()`` and a
snapshot taken through ``statmap.open(path)`` (one reader kept across the
steps, so its incremental record parsing and re-mapping after growth are
exercised too).
"""

from __future__ import annotations

import enum
import itertools
import math
import os
import struct
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import statmap
from statmap.reader import HistogramValue, SummaryValue

from .conftest import SCALE

SETTINGS = settings(
    max_examples=max(1, int(120 * SCALE)),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
U64 = 1 << 64

_names = itertools.count()


@pytest.fixture(scope="module")
def propdir(tmp_path_factory: pytest.TempPathFactory) -> str:
    d = tmp_path_factory.mktemp("props") / "statmap"
    d.mkdir(mode=0o700)
    return str(d)


def _bits(x: float) -> bytes:
    return struct.pack("<d", x)


def same_float(a: Any, b: float) -> bool:
    """Exactly equal, bit for bit (so -0.0 != 0.0); any NaN equals any NaN."""
    if not isinstance(a, float):
        return False
    if math.isnan(b):
        return math.isnan(a)
    return _bits(a) == _bits(b)


def utf8_cut(text: str, limit: int) -> str:
    """The model of text truncation: the longest run of whole characters that fits ``limit`` bytes."""
    out, used = [], 0
    for ch in text:
        n = len(ch.encode("utf-8"))
        if used + n > limit:
            break
        out.append(ch)
        used += n
    return "".join(out)


# -- the model -------------------------------------------------------------------


@dataclass
class HistModel:
    bounds: tuple[float, ...]
    log: bool = False
    count: int = 0
    total: float = 0.0
    raw: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.raw = [0] * (len(self.bounds) + 1)

    def observe(self, x: float) -> None:
        # bucket i counts b[i-1] < x <= b[i]; the last counts x > b[-1]
        i = 0
        while i < len(self.bounds) and x > self.bounds[i]:
            i += 1
        self.raw[i] += 1
        self.count += 1
        self.total += x


@dataclass
class SummaryModel:
    count: int = 0
    total: float = 0.0


@dataclass
class Expect:
    """What one series must read back as."""

    kind: str
    value: Any
    labels: dict[str, str]
    live: Any = None  # the series object (None for info)


def check_get(e: Expect) -> None:
    live, v = e.live, e.value
    if e.kind == "counter":
        got = live.get()
        assert type(got) is int and got == v, (got, v)
    elif e.kind in ("float_counter", "gauge"):
        got = live.get()
        assert same_float(got, v), (got, v)
    elif e.kind == "histogram":
        count, total, raw = live.get()
        assert (count, list(raw)) == (v.count, v.raw)
        assert same_float(total, v.total), (total, v.total)
    elif e.kind == "summary":
        count, total = live.get()
        assert count == v.count and same_float(total, v.total), ((count, total), v)
    elif e.kind in ("text", "enum", "info"):
        assert live.get() == v, (live.get(), v)
    else:  # pragma: no cover
        raise AssertionError(e.kind)


def check_read(e: Expect, s: statmap.Series) -> None:
    v = e.value
    assert s.labels == e.labels
    if e.kind == "counter":
        assert s.type == "counter" and type(s.value) is int and s.value == v, (s.value, v)
    elif e.kind == "float_counter":
        assert s.type == "counter" and same_float(s.value, v), (s.value, v)
    elif e.kind == "gauge":
        assert s.type == "gauge" and same_float(s.value, v), (s.value, v)
    elif e.kind == "histogram":
        got = s.value
        assert s.type == "histogram" and isinstance(got, HistogramValue)
        assert got.count == v.count and same_float(got.sum, v.total)
        cumulative = list(itertools.accumulate(v.raw))
        assert list(got.buckets) == list(zip((*v.bounds, math.inf), cumulative, strict=False))
        assert got.log_buckets == v.log
    elif e.kind == "summary":
        got = s.value
        assert s.type == "summary" and isinstance(got, SummaryValue)
        assert got.count == v.count and same_float(got.sum, v.total)
    elif e.kind == "text":
        assert s.type == "text" and s.value == v, (s.value, v)
    elif e.kind == "enum":
        assert s.type == "enum" and s.value == v
    elif e.kind == "info":
        assert s.type == "info" and s.value == v
    else:  # pragma: no cover
        raise AssertionError(e.kind)


class World:
    """A publisher with one metric of every kind, and the model of what it must hold."""

    def __init__(self, directory: str, bounds: tuple[float, ...], log: statmap.LogBuckets, text_size: int,
                 states: tuple[str, ...], info: dict[str, str]) -> None:  # fmt: skip
        self.pub = statmap.Publisher(f"prop{next(_names)}", directory, capacity=4096)
        p = self.pub
        self.series: dict[tuple[str, tuple[str, ...]], Expect] = {}

        def add(name: str, kind: str, value: Any, live: Any, labels: dict[str, str] | None = None) -> None:
            labels = labels or {}
            self.series[(name, tuple(labels.values()))] = Expect(kind, value, labels, live)

        add("c", "counter", 0, p.counter("c", "an int counter"))
        add("f", "float_counter", 0.0, p.counter("f", "a float counter", float=True))
        add("g", "gauge", 0.0, p.gauge("g", "a gauge", unit="bytes"))
        self.hist_bounds = bounds
        add("h", "histogram", HistModel(bounds), p.histogram("h", "explicit buckets", buckets=bounds))
        self.log_bounds = log.bounds()
        add("s", "summary", SummaryModel(), p.summary("s"))
        self.text_size = text_size
        add("t", "text", "", p.text("t", "a text", size=text_size))
        self.states = states
        add("e", "enum", states[0], p.enum("e", states=states))
        add("i", "info", info, p.info("i", values=info))
        self.families = {
            "cl": p.counter("cl", "labelled counter", labels=("k",)),
            "gl": p.gauge("gl", "labelled gauge", labels=("a", "b")),
            "hl": p.histogram("hl", "labelled log histogram", labels=("k",), buckets=log),
            "sl": p.summary("sl", labels=("k",)),
            "tl": p.text("tl", labels=("k",), size=text_size),
            "el": p.enum("el", labels=("k",), states=states),
            "il": p.info("il", labels=("k",)),
        }
        self.infos = info
        self.reader = statmap.open(self.pub.path)

    def child(self, fam: str, values: tuple[str, ...]) -> Expect:
        key = (fam, values)
        if key not in self.series:
            family = self.families[fam]
            live = family.labels(*values)
            labels = dict(zip(family.label_names, values, strict=False))
            initial: Any = {
                "cl": 0,
                "gl": 0.0,
                "hl": None,
                "sl": None,
                "tl": "",
                "el": self.states[0],
                "il": {},
            }[fam]
            kind = {"cl": "counter", "gl": "gauge", "hl": "histogram", "sl": "summary", "tl": "text",
                    "el": "enum", "il": "info"}[fam]  # fmt: skip
            if fam == "hl":
                initial = HistModel(self.log_bounds, log=True)
            elif fam == "sl":
                initial = SummaryModel()
            elif fam == "il":
                live.info(self.infos)
                initial = dict(self.infos)
            self.series[key] = Expect(kind, initial, labels, live)
            # a second lookup, by name, gives the same cached child
            assert family.labels(**labels) is live
        return self.series[key]

    def check(self) -> None:
        for e in self.series.values():
            check_get(e)
        snap = self.reader.snapshot()
        assert snap.status == "alive"
        got = {(s.name, tuple(s.labels.values())): s for s in snap.series}
        assert len(got) == len(snap.series), "two series with the same name and labels"
        assert set(got) == set(self.series)
        for key, e in self.series.items():
            check_read(e, got[key])
        fresh = statmap.open(self.pub.path)  # a new reader parses everything at once
        try:
            assert len(fresh.snapshot().series) == len(snap.series)
        finally:
            fresh.close()

    def close(self) -> None:
        self.reader.close()
        self.pub.remove()


# -- strategies -----------------------------------------------------------------

label_values = st.one_of(
    st.sampled_from(["a", "b", "GET", "é", "日本", "🙂"]),
    st.text(min_size=0, max_size=300),  # long ones make the file grow
)
any_float = st.floats(allow_nan=True, allow_infinity=True)
finite = st.floats(allow_nan=False, allow_infinity=False)
observation = st.floats(allow_nan=False)  # NaN is refused, tested apart
texts = st.text(max_size=80)

ops = st.one_of(
    st.tuples(st.just("c"), st.integers(0, U64 - 1), st.booleans()),
    st.tuples(st.just("c_small"), st.integers(0, 1000), st.booleans()),
    st.tuples(st.just("c_neg"), st.integers(max_value=-1)),
    st.tuples(st.just("f"), st.floats(min_value=0.0, allow_infinity=False, allow_nan=False), st.booleans()),
    st.tuples(st.just("f_bad"), st.sampled_from([-1.0, -1e-300, math.inf, math.nan, -math.inf])),
    st.tuples(st.just("g"), st.sampled_from(["set", "inc", "dec", "iadd", "isub"]), any_float),
    st.tuples(st.just("h"), observation),
    st.tuples(st.just("h_nan")),
    st.tuples(st.just("s"), observation),
    st.tuples(st.just("t"), texts),
    st.tuples(st.just("e"), st.integers(0, 7)),
    st.tuples(st.just("cl"), label_values, st.integers(0, 1 << 40)),
    st.tuples(st.just("gl"), label_values, label_values, any_float),
    st.tuples(st.just("hl"), label_values, st.floats(min_value=1e-9, max_value=1e9)),
    st.tuples(st.just("sl"), label_values, finite),
    st.tuples(st.just("tl"), label_values, texts),
    st.tuples(st.just("el"), label_values, st.integers(0, 7)),
    st.tuples(st.just("il"), label_values),
)

bounds_st = st.lists(
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12), max_size=10, unique=True
).map(lambda b: tuple(sorted(b)))
log_st = st.builds(
    lambda low, ratio: statmap.LogBuckets(low, low * ratio),
    st.floats(min_value=1e-6, max_value=1e3),
    st.floats(min_value=1.5, max_value=1e5),
)
states_st = st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=8, unique=True).map(tuple)
info_st = st.dictionaries(
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True), st.text(max_size=30), max_size=4
)


def apply(w: World, op: tuple[Any, ...]) -> None:
    kind = op[0]
    ser = w.series
    if kind in ("c", "c_small"):
        e, n, use_iadd = ser[("c", ())], op[1], op[2]
        if use_iadd:
            live = e.live
            live += n
            assert live is e.live
        else:
            e.live.inc(n)
        e.value = (e.value + n) % U64
    elif kind == "c_neg":
        with pytest.raises(ValueError):
            ser[("c", ())].live.inc(op[1])
    elif kind == "f":
        e, x = ser[("f", ())], op[1]
        if op[2]:
            live = e.live
            live += x
        else:
            e.live.inc(x)
        e.value += x
    elif kind == "f_bad":
        with pytest.raises(ValueError):
            ser[("f", ())].live.inc(op[1])
    elif kind == "g":
        e, how, x = ser[("g", ())], op[1], op[2]
        live = e.live
        if how == "set":
            live.set(x)
            e.value = x
        elif how == "inc":
            live.inc(x)
            e.value += x
        elif how == "dec":
            live.dec(x)
            e.value -= x
        elif how == "iadd":
            live += x
            e.value += x
        else:
            live -= x
            e.value -= x
    elif kind == "h":
        e = ser[("h", ())]
        e.live.observe(op[1])
        e.value.observe(op[1])
    elif kind == "h_nan":
        with pytest.raises(ValueError):
            ser[("h", ())].live.observe(math.nan)
        with pytest.raises(ValueError):
            ser[("s", ())].live.observe(math.nan)
    elif kind == "s":
        e = ser[("s", ())]
        e.live.observe(op[1])
        e.value.count += 1
        e.value.total += op[1]
    elif kind == "t":
        e = ser[("t", ())]
        e.live.set(op[1])
        e.value = utf8_cut(op[1], w.text_size)
    elif kind == "e":
        e = ser[("e", ())]
        if op[1] < len(w.states):
            e.live.state(w.states[op[1]])
            e.value = w.states[op[1]]
        else:
            with pytest.raises(ValueError):
                e.live.state("\0not-a-state!")  # states are at most 12 characters
    elif kind == "cl":
        e = w.child("cl", (op[1],))
        e.live.inc(op[2])
        e.value = (e.value + op[2]) % U64
    elif kind == "gl":
        e = w.child("gl", (op[1], op[2]))
        e.live.set(op[3])
        e.value = op[3]
    elif kind == "hl":
        e = w.child("hl", (op[1],))
        e.live.observe(op[2])
        e.value.observe(op[2])
    elif kind == "sl":
        e = w.child("sl", (op[1],))
        e.live.observe(op[2])
        e.value.count += 1
        e.value.total += op[2]
    elif kind == "tl":
        e = w.child("tl", (op[1],))
        e.live.set(op[2])
        e.value = utf8_cut(op[2], w.text_size)
    elif kind == "el":
        e = w.child("el", (op[1],))
        if op[2] < len(w.states):
            e.live.set(w.states[op[2]])
            e.value = w.states[op[2]]
    elif kind == "il":
        w.child("il", (op[1],))
    else:  # pragma: no cover
        raise AssertionError(kind)


@SETTINGS
@given(
    bounds=bounds_st,
    log=log_st,
    text_size=st.integers(1, 48),
    states=states_st,
    info=info_st,
    program=st.lists(ops, max_size=40),
)
def test_any_sequence_of_updates_reads_back_exactly(
    propdir: str,
    bounds: tuple[float, ...],
    log: statmap.LogBuckets,
    text_size: int,
    states: tuple[str, ...],
    info: dict[str, str],
    program: list[tuple[Any, ...]],
) -> None:
    w = World(propdir, bounds, log, text_size, states, info)
    try:
        w.check()
        for op in program:
            apply(w, op)
            w.check()
    finally:
        w.close()


@SETTINGS
@given(
    capacity=st.integers(1, 64),
    values=st.lists(st.text(max_size=100), min_size=1, max_size=6),
)
def test_text_is_cut_at_a_character_boundary(propdir: str, capacity: int, values: list[str]) -> None:
    with statmap.Publisher(f"prop{next(_names)}", propdir) as pub:
        t = pub.text("t", size=capacity)
        reader = statmap.open(pub.path)
        for value in values:
            t.set(value)
            want = utf8_cut(value, capacity)
            assert len(want.encode()) <= capacity
            assert value.startswith(want)
            assert t.get() == want
            [series] = reader.snapshot().series
            assert series.value == want
        reader.close()
    [series] = statmap.open(pub.path).snapshot().series  # closed: still readable
    assert series.value == utf8_cut(values[-1], capacity)
    os.unlink(pub.path)


# -- LogBuckets percentiles --------------------------------------------------------


def exact_quantile(sorted_values: list[float], q: float) -> float:
    """The rank-based quantile the reader estimates: the k-th smallest value, k = max(1, ceil(q * n))."""
    k = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[k - 1]


@SETTINGS
@given(
    low=st.floats(min_value=1e-6, max_value=1e3),
    ratio=st.floats(min_value=1.01, max_value=1e6),
    data=st.data(),
)
def test_log_buckets_percentiles_within_relative_error(propdir: str, low: float, ratio: float, data: Any) -> None:
    high = low * ratio
    assume(math.isfinite(high))
    buckets = statmap.LogBuckets(low, high, 0.02)
    values = data.draw(st.lists(st.floats(min_value=low, max_value=high), min_size=1, max_size=200))
    qs = data.draw(st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=5))
    with statmap.Publisher(f"prop{next(_names)}", propdir) as pub:
        h = pub.histogram("latency", buckets=buckets)
        for v in values:
            h.observe(v)
        [series] = statmap.open(pub.path).snapshot().series
    os.unlink(pub.path)
    hv = series.value
    assert hv.log_buckets and hv.count == len(values)
    ordered = sorted(values)
    for q in (*qs, 0.0, 0.5, 0.99, 1.0):
        exact = exact_quantile(ordered, q)
        estimate = hv.percentile(q)
        assert abs(estimate - exact) <= 0.02 * exact * (1 + 1e-9), (q, exact, estimate)


# -- bugs found while writing these tests --------------------------------------------


class _Three(enum.IntEnum):
    THREE = 3


def test_counter_accepts_int_subclasses_like_the_c_cells(propdir: str) -> None:
    with statmap.Publisher(f"prop{next(_names)}", propdir) as pub:
        c = pub.counter("c")
        c.inc(_Three.THREE)
        c.inc(True)
        assert c.get() == 4
    os.unlink(pub.path)


def test_counter_increment_too_big_for_u64_is_refused(propdir: str) -> None:
    with statmap.Publisher(f"prop{next(_names)}", propdir) as pub:
        c = pub.counter("c")
        c.inc(5)
        with pytest.raises((OverflowError, ValueError)):
            c.inc(U64)
        assert c.get() == 5
    os.unlink(pub.path)


def _file_stays_readable(pub: statmap.Publisher, publish: Any) -> None:
    """``publish()`` either raises a clear error, or publishes something readers can read.

    Either way, the publisher's other series must stay readable: one bad
    call must never make the whole file corrupt for every reader.
    """
    c = pub.counter("other")
    c.inc(7)
    try:
        publish()
    except (ValueError, statmap.StatmapError):
        pass
    snap = statmap.open(pub.path).snapshot()  # must not raise FormatError
    assert {s.name: s.value for s in snap.series}["other"] == 7


def test_info_value_too_long_for_the_format(propdir: str) -> None:
    with statmap.Publisher(f"prop{next(_names)}", propdir) as pub:
        _file_stays_readable(pub, lambda: pub.info("build", values={"notes": "x" * 70_000}))
    os.unlink(pub.path)


def test_enum_with_more_states_than_the_format_allows(propdir: str) -> None:
    with statmap.Publisher(f"prop{next(_names)}", propdir) as pub:
        _file_stays_readable(pub, lambda: pub.enum("phase", states=[f"s{i}" for i in range(5000)]))
    os.unlink(pub.path)


def test_info_with_more_keys_than_the_format_allows(propdir: str) -> None:
    with statmap.Publisher(f"prop{next(_names)}", propdir) as pub:
        _file_stays_readable(pub, lambda: pub.info("build", values={f"k{i}": "v" for i in range(2100)}))
    os.unlink(pub.path)
