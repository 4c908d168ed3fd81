"""One home per metric type: the table of kinds.

Every module that treats metric types differently reads this table instead
of branching on the type: the collector (how a value is read and how it
aggregates across processes), the archive (whether it keeps the type), the
exposition (the samples a series expands into, in every text format and in
the prometheus_client bridge), JSON, the terminal and the dashboard (which
gets ``view`` and ``rank`` in ``/api/series``).

Look a kind up once per family or record (``KINDS[mtype]``,
``BY_NAME[name]``), never per sample. Adding a type: docs/development.md,
"Adding a metric type".

Below the collector, exposition, archive, server and terminal modules;
imports only the format (``_layout``) and the value classes (``values``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from . import _layout as L
from .values import ExpHistogramValue, HistogramValue, SummaryValue, json_number

# How a kind aggregates across the processes of one publisher name.
SUM = "sum"  # added up (numbers, or values with ``+``); the archive keeps the dead's part
MODE = "mode"  # the mode recorded with the metric (gauges: per_process, sum, max, min, last)
PER_PROCESS = "per_process"  # one series per process, with a ``pid`` label

# How the collector reads a value (one bulk path per way).
COUNT = "count"  # a u64 word (f64 with FLAG_FLOAT), summed straight from the mappings
LEVEL = "level"  # an f64 word
STATE = "state"  # a u64 index into the record's extra strings
LABELS = "labels"  # no value: the record's extra strings are key/value pairs
LATCH_SUM = "latch_sum"  # a latch of u64 count, f64 sum[, u64 buckets], summed in C
TEXT = "text"  # a text latch
MERGE = "merge"  # a latch read whole into a value that adds up with ``+`` (exponential histograms)

PERCENTILES = (0.5, 0.9, 0.99)

# -- names and numbers as the exposition writes them ------------------------

_BAD_NAME_CHARS = re.compile(r"[^A-Za-z0-9_]")


def metric_name(name: str) -> str:
    """A valid Prometheus metric name for ``name`` (see expose's docstring)."""
    name = _BAD_NAME_CHARS.sub("_", name) or "_"
    if name[0].isdigit():
        name = "_" + name
    return name


def label_name(name: str) -> str:
    name = metric_name(name)
    while name.startswith("__"):  # reserved for Prometheus' own labels
        name = name[1:]
    return name


def free_name(name: str, taken: Iterable[str]) -> str:
    """``name``, with ``_`` appended until it is not in ``taken``."""
    taken = set(taken)
    while name in taken:
        name = name + "_"
    return name


def format_float(value: float) -> str:
    """A number as Prometheus writes it (Go's shortest form: ``1.0``, ``1e+06``, ``+Inf``, ``NaN``)."""
    if value != value:
        return "NaN"
    if value in (math.inf, -math.inf):
        return "+Inf" if value > 0 else "-Inf"
    text = repr(float(value))
    dot = text.find(".")
    if value > 0 and "e" not in text and dot > 6:  # as Go: 1e+06, not 1000000.0
        digits = (text[:dot] + text[dot + 1 :]).rstrip("0")
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{mantissa}e+{dot - 1:02d}"
    return text


def number(value: Any) -> str:
    """A number for people: integers as integers, others to 6 significant digits."""
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"


def histogram_has_sum(value: HistogramValue) -> bool:
    """Whether a histogram exposes ``_count`` and ``_sum``, in every format.

    OpenMetrics 1.0: a sum is a counter, so it is left out when a bucket bound
    is negative, and when the sum is negative or NaN (negative observations in
    non-negative buckets, or both infinities observed); and ``_count`` appears
    if and only if ``_sum`` does. The +Inf bucket still holds the count. The
    Prometheus text format follows the same rule so both formats give the same
    series (docs/serve.md, "Histograms and summaries whose sum is not a counter").
    """
    return value.buckets[0][0] >= 0 and value.sum >= 0


# -- exposition samples ----------------------------------------------------------
#
# expand(name, created, states) -> samples(value, labels) -> [(sample name, extra labels, number)]
# Called once per family: ``name`` is the exposed family name, ``created`` the
# ``_created`` time (a number, or text already formatted; None leaves it out),
# ``states`` an enum's declared states. The returned function is called per
# series with its value and its exposed labels (extra label names must not
# clash with them). ``extra`` is None for a sample with only the series'
# labels, else (name, value) pairs to append (values already strings).
# Numbers are int or float, written by each format as it writes numbers.

Extra = tuple[tuple[str, str], ...] | None
Samples = Callable[[Any, dict[str, str]], "list[tuple[str, Extra, Any]] | tuple[tuple[str, Extra, Any], ...]"]
Expand = Callable[[str, Any, tuple[str, ...]], Samples]


def _counter_samples(name: str, created: Any, states: tuple[str, ...]) -> Samples:
    total = name + "_total"
    if created:
        tail = (name + "_created", None, created)
        return lambda value, labels: ((total, None, value), tail)
    return lambda value, labels: ((total, None, value),)


def _gauge_samples(name: str, created: Any, states: tuple[str, ...]) -> Samples:
    return lambda value, labels: ((name, None, value),)


def _histogram_samples(name: str, created: Any, states: tuple[str, ...]) -> Samples:
    bucket, count, total = name + "_bucket", name + "_count", name + "_sum"
    tail = (name + "_created", None, created) if created else None
    les: dict[float, Extra] = {}  # the le label of each bound, formatted once per family

    def le(bound: float) -> Extra:
        got = les.get(bound)
        if got is None:
            got = les[bound] = (("le", format_float(bound)),)
        return got

    def samples(value: HistogramValue, labels: dict[str, str]) -> list[tuple[str, Extra, Any]]:
        out: list[tuple[str, Extra, Any]] = [(bucket, les.get(b) or le(b), c) for b, c in value.buckets]
        if histogram_has_sum(value):
            out.append((count, None, value.count))
            out.append((total, None, float(value.sum)))
        if tail:
            out.append(tail)
        return out

    return samples


def _summary_samples(name: str, created: Any, states: tuple[str, ...]) -> Samples:
    count, total = name + "_count", name + "_sum"
    tail = (name + "_created", None, created) if created else None

    def samples(value: SummaryValue, labels: dict[str, str]) -> list[tuple[str, Extra, Any]]:
        out: list[tuple[str, Extra, Any]] = [(count, None, value.count)]
        if value.sum >= 0:  # a counter: not negative, not NaN (see histogram_has_sum)
            out.append((total, None, float(value.sum)))
        if tail:
            out.append(tail)
        return out

    return samples


def _enum_samples(name: str, created: Any, states: tuple[str, ...]) -> Samples:
    def samples(value: Any, labels: dict[str, str]) -> list[tuple[str, Extra, Any]]:
        known = list(states)
        if value is not None and value not in known:
            known.append(value)
        return [(name, ((name, state),), 1 if state == value else 0) for state in known]

    return samples


def _info_samples(name: str, created: Any, states: tuple[str, ...]) -> Samples:
    info = name + "_info"

    def samples(value: Any, labels: dict[str, str]) -> list[tuple[str, Extra, Any]]:
        pairs = value.items() if isinstance(value, dict) else [("value", str(value))]  # text: one pair
        extra = []
        taken = set(labels)
        for k, v in pairs:
            k = free_name(label_name(k), taken)
            taken.add(k)
            extra.append((k, v))
        return [(info, tuple(extra), 1)]

    return samples


# -- JSON and human forms ------------------------------------------------------


def _json_number(value: Any) -> Any:
    return json_number(value) if isinstance(value, float) else value


def _json_multi(value: Any) -> Any:
    return value.to_json() if value is not None else None


def _json_plain(value: Any) -> Any:
    return value


def _human_number(value: Any) -> str:
    return number(value)


def _human_histogram(value: HistogramValue) -> str:
    if not value.count:
        return "count=0"
    pct = " ".join(f"p{int(q * 100)}={number(value.percentile(q))}" for q in PERCENTILES)
    return f"count={value.count} sum={number(value.sum)} {pct}{_human_extremes(value)}"


def _human_extremes(value: HistogramValue | SummaryValue) -> str:
    """Lifetime min and max, when the file has them (format 1.2 writers)."""
    return "" if value.min is None else f" min={number(value.min)} max={number(value.max)}"


def _human_exp(value: ExpHistogramValue) -> str:
    if not value.count:
        return "count=0"
    pct = " ".join(f"p{int(q * 100)}={number(value.percentile(q))}" for q in PERCENTILES)
    return f"count={value.count} sum={number(value.sum)} {pct} min={number(value.min)} max={number(value.max)}"


def _human_summary(value: SummaryValue) -> str:
    return f"count={value.count} sum={number(value.sum)} avg={number(value.average)}{_human_extremes(value)}"


def _human_info(value: dict[str, str]) -> str:
    return " ".join(f"{k}={v!r}" for k, v in value.items())


def _human_text(value: str) -> str:
    return repr(value)


# -- values from the collector's summed words ------------------------------------


def _histogram_value(words: Any, bounds: tuple[float, ...], flags: int) -> HistogramValue:
    """count, sum and non-cumulative bucket counts -> a HistogramValue (cumulative buckets)."""
    return HistogramValue.from_counts(words[0], words[1], bounds, words[2:], bool(flags & L.FLAG_LOG_BUCKETS))


def _summary_value(words: Any, bounds: tuple[float, ...], flags: int) -> SummaryValue:
    return SummaryValue(words[0], words[1])


@dataclass(frozen=True, eq=False)
class Kind:
    """Everything that differs between metric types, outside the writer and the format."""

    code: int  # L.MetricType
    name: str  # as in JSON, the CLI and the dashboard
    merge: str  # SUM, MODE or PER_PROCESS
    read: str  # COUNT, LEVEL, STATE, LABELS, LATCH_SUM or TEXT
    archived: bool  # the archive keeps the dead processes' part (SUM kinds)
    om_type: str  # the OpenMetrics type
    prom_type: str  # the Prometheus text type
    trim: str  # a suffix the exposed family name loses ("_total" for counters)
    head: str  # the suffix of the family name in Prometheus text's HELP/TYPE lines
    suffixes: tuple[str, ...]  # sample names this kind produces, after the family name
    reserved: tuple[str, ...]  # label names its samples add
    label_is_name: bool  # its samples add a label named after the family (state sets)
    has_unit: bool  # the unit is exposed
    exposed: bool  # exposed by default (text only when asked for)
    expand: Expand  # the exposition samples of one series (see above)
    json: Callable[[Any], Any]  # the JSON form of a value
    human: Callable[[Any], str]  # the terminal form of a value
    view: str  # how the dashboard shows a series: rate, level, quantiles, average, state, text
    rank: int  # the dashboard's order of kinds
    latch_size: Callable[[L.RecordSpec], int] | None = None  # LATCH_SUM: the copy size
    from_words: Callable[[Any, tuple[float, ...], int], Any] | None = None  # LATCH_SUM: value of summed words
    zero: Callable[[L.RecordSpec], Any] | None = None  # archived kinds: the empty total
    # Its samples' names and labels never depend on the value (nor on the series' labels): the
    # first sample carries the value, any others are constants. The exposer then keeps each series' text across
    # scrapes and formats only the value (expose.Exposer, "render plan").
    fixed: bool = False


_M = L.MetricType
_TABLE = (
    Kind(
        _M.COUNTER, "counter", SUM, COUNT, True, "counter", "counter", "_total", "_total", ("_total", "_created"),
        (), False, True, True, _counter_samples, _json_number, _human_number, "rate", 1,
        zero=lambda spec: 0.0 if spec.flags & L.FLAG_FLOAT else 0, fixed=True,
    ),
    Kind(
        _M.GAUGE, "gauge", MODE, LEVEL, False, "gauge", "gauge", "", "", ("",),
        (), False, True, True, _gauge_samples, _json_number, _human_number, "level", 2, fixed=True,
    ),
    Kind(
        _M.HISTOGRAM, "histogram", SUM, LATCH_SUM, True, "histogram", "histogram", "", "",
        ("_bucket", "_count", "_sum", "_created"), ("le",), False, True, True,
        _histogram_samples, _json_multi, _human_histogram, "quantiles", 0,
        latch_size=lambda spec: L.histogram_copy_size(len(spec.bounds)), from_words=_histogram_value,
        zero=lambda spec: HistogramValue.from_counts(
            0, 0.0, spec.bounds, [0] * (len(spec.bounds) + 1), bool(spec.flags & L.FLAG_LOG_BUCKETS)
        ),
    ),
    Kind(  # format 1.2; classic buckets derived for text exposition (ExpHistogramValue.buckets)
        _M.EXP_HISTOGRAM, "exphistogram", SUM, MERGE, True, "histogram", "histogram", "", "",
        ("_bucket", "_count", "_sum", "_created"), ("le",), False, True, True,
        _histogram_samples, _json_multi, _human_exp, "quantiles", 0,
        zero=lambda spec: ExpHistogramValue.empty(spec.bounds[0]),
    ),
    Kind(
        _M.SUMMARY, "summary", SUM, LATCH_SUM, True, "summary", "summary", "", "",
        ("_count", "_sum", "_created"), ("quantile",), False, True, True,
        _summary_samples, _json_multi, _human_summary, "average", 3,
        latch_size=lambda spec: L.SUMMARY_COPY_SIZE, from_words=_summary_value,
        zero=lambda spec: SummaryValue(0, 0.0),
    ),
    Kind(
        _M.TEXT, "text", PER_PROCESS, TEXT, False, "info", "gauge", "_info", "_info", ("_info",),
        (), False, False, False, _info_samples, _json_plain, _human_text, "text", 6,
    ),
    Kind(
        _M.INFO, "info", PER_PROCESS, LABELS, False, "info", "gauge", "_info", "_info", ("_info",),
        (), False, False, True, _info_samples, _json_plain, _human_info, "text", 5,
    ),
    Kind(
        _M.ENUM, "enum", PER_PROCESS, STATE, False, "stateset", "gauge", "", "", ("",),
        (), True, False, True, _enum_samples, _json_plain, _human_text, "state", 4,
    ),
)  # fmt: skip

#: Kinds by type code (``L.MetricType``) and by name.
KINDS: dict[int, Kind] = {k.code: k for k in _TABLE}
BY_NAME: dict[str, Kind] = {k.name: k for k in _TABLE}
#: Type code -> name (as ``reader.TYPE_NAMES``).
TYPE_NAMES: dict[int, str] = {k.code: k.name for k in _TABLE}

_BY_VALUE: dict[type, Kind] = {
    HistogramValue: KINDS[_M.HISTOGRAM],
    SummaryValue: KINDS[_M.SUMMARY],
    ExpHistogramValue: KINDS[_M.EXP_HISTOGRAM],
}


def human(value: Any, kind: Kind | None = None) -> str:
    """A value on one line for a terminal; ``kind`` if known, else told by the value's class."""
    if kind is None:
        kind = _BY_VALUE.get(type(value))
        if kind is None:
            if isinstance(value, dict):
                return _human_info(value)
            return _human_text(value) if isinstance(value, str) else number(value)
    return kind.human(value)


def json_value(value: Any) -> Any:
    """The JSON form of any value (numbers: NaN and infinities as strings)."""
    kind = _BY_VALUE.get(type(value))
    if kind is not None:
        return kind.json(value)
    return json_number(value) if isinstance(value, float) else value
