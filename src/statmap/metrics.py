"""Metric declarations, the live series they create, and labelled families.

A declaration (``Counter("Requests served")``) says what a metric is. Binding
it to a publisher creates either one live series (a value cell in the
mapping) or, when it has labels, a ``Family`` whose ``labels(...)`` creates
and caches one series per label set. Live series are subclasses of the value
cells, so an update is one call into the cell and nothing else.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, Protocol, TypeVar, cast, overload

from . import _layout as L
from . import cells
from .buckets import DEFAULT_BUCKETS as DEFAULT_BUCKETS  # re-exported: bucket bounds live in buckets.py
from .buckets import Exponential as Exponential
from .buckets import LogBuckets as LogBuckets
from .errors import LabelLimitError, StatmapError

if TYPE_CHECKING:
    from typing_extensions import Self, TypedDict, Unpack

    from .owner import Binding, FileOwner

    class _Options(TypedDict, total=False):
        """The options every declaration takes besides its help and labels."""

        name: str | None
        unit: str
        max_series: int


#: What an instance of a model class gives for a declaration (for type checkers:
#: a series, or a Labelled family of series when the declaration has labels).
_T = TypeVar("_T")
_S_co = TypeVar("_S_co", covariant=True)

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,199}$")
UNIT_RE = re.compile(r"^[A-Za-z0-9_]{0,64}$")
RESERVED_LABELS = frozenset({"pid", "le", "quantile"})
MAX_LABEL_VALUE = 1024
MAX_HELP = 4096
DEFAULT_MAX_SERIES = 1000
MAX_ENUM_STATES = 1000
MAX_INFO_PAIRS = 500


def check_name(name: str, what: str = "metric") -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ValueError(f"{what} name {name!r} must match [A-Za-z_][A-Za-z0-9_]* (at most 200 characters)")
    return name


# -- Live series ---------------------------------------------------------------


# The live series of most types are the value cells themselves, not
# subclasses: CPython calls a C method fastest when the object's type is
# exactly the method's type. Their methods: Counter inc/get/+=; Gauge
# set/inc/dec/get/+=/-=/set_to_current_time/track_inprogress/time;
# Histogram and Summary observe/get/time; Text set/get.
CounterSeries = cells.Counter
FloatCounterSeries = cells.FloatCounter
GaugeSeries = cells.Gauge
HistogramSeries = cells.Histogram
SummarySeries = cells.Summary
TextSeries = cells.Text
ExpHistogramSeries = cells.ExpHistogram


class EnumSeries(cells.Enum):
    """A live enum: one of its declared states; ``state(name)``, ``get()``."""

    __slots__ = ("_index", "states")
    states: tuple[str, ...]
    _index: dict[str, int]

    def state(self, name: str) -> None:
        try:
            self._set_index(self._index[name])
        except KeyError:
            raise ValueError(f"{name!r} is not one of the states {list(self.states)}") from None

    set = state

    def get(self) -> str:
        index = self._get_index()
        return self.states[index] if index < len(self.states) else ""


class InfoSeries:
    """Constant key/value pairs, published once: ``info({...})``."""

    __slots__ = ("_publish", "values")

    def __init__(self, publish: Callable[[dict[str, str]], None]) -> None:
        self._publish = publish
        self.values: dict[str, str] | None = None

    def info(self, values: Mapping[str, str]) -> None:
        clean = {check_name(str(k), "info key"): str(v) for k, v in values.items()}
        if len(clean) > MAX_INFO_PAIRS:
            raise ValueError(f"info has at most {MAX_INFO_PAIRS} key/value pairs")
        if any(len(v) > MAX_LABEL_VALUE for v in clean.values()):
            raise ValueError(f"info values are at most {MAX_LABEL_VALUE} characters")
        if self.values is not None:
            if clean != self.values:
                raise StatmapError("info values are constant once published")
            return
        self._publish(clean)
        self.values = clean

    set = info

    def get(self) -> dict[str, str]:
        return dict(self.values or {})


# -- Declarations ----------------------------------------------------------------


class Metric(Generic[_T]):
    """Base of all declarations: help, name, labels, unit, label-set limit."""

    mtype: ClassVar[int]

    def __init__(
        self,
        help: str = "",
        *,
        name: str | None = None,
        labels: Sequence[str] = (),
        unit: str = "",
        max_series: int = DEFAULT_MAX_SERIES,
    ) -> None:
        if not isinstance(help, str) or len(help) > MAX_HELP:
            raise ValueError(f"help must be a str of at most {MAX_HELP} characters")
        if isinstance(labels, str):
            labels = (labels,)
        self.help = help
        self.name = check_name(name) if name is not None else None
        self.label_names = tuple(check_name(n, "label") for n in labels)
        for label in self.label_names:
            if label in RESERVED_LABELS or label.startswith("__"):
                raise ValueError(f"label name {label!r} is reserved")
        if len(set(self.label_names)) != len(self.label_names):
            raise ValueError(f"duplicate label names in {self.label_names}")
        if not isinstance(unit, str) or not UNIT_RE.match(unit):
            raise ValueError(f"unit {unit!r} must be letters, digits and '_' (e.g. 'seconds', 'bytes')")
        self.unit = unit
        if max_series < 1:
            raise ValueError("max_series must be at least 1")
        self.max_series = max_series

    def __set_name__(self, owner: type, attr: str) -> None:
        self.attr = attr

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> Self: ...
    @overload
    def __get__(self, obj: object, owner: type | None = None) -> _T: ...

    def __get__(self, obj: object, owner: type | None = None) -> Any:
        # Only reached for class access, or for an instance that has not bound
        # this metric (statmap.Stats stores live metrics in the instance
        # __dict__, which wins over this non-data descriptor). For type
        # checkers, an instance gets the live series (or Labelled family).
        if obj is None:
            return self
        raise AttributeError(f"metric {getattr(self, 'attr', self.name)!r} is not bound to a publisher")

    if TYPE_CHECKING:
        # For type checkers only, so that `stats.requests += 1` (which stores
        # the series back) checks; at run time this stays a non-data
        # descriptor, so the instance __dict__ keeps winning.
        def __set__(self, obj: object, value: _T) -> None: ...

    def bind(self, publisher: FileOwner, name: str | None = None) -> _T:
        """Create this metric in ``publisher``: a live series, or a Family if it has labels.

        Typed: ``Counter("Jobs", labels=("queue",)).bind(pub, "jobs")`` is a
        ``Labelled[CounterSeries]`` for type checkers.
        """
        name = check_name(name or self.name or getattr(self, "attr", "") or "")
        publisher.claim_name(name)
        made: Any
        if not self.label_names:
            try:
                made = self._series(publisher, name, ())
            except BaseException:  # refused (a limit, a closed publisher): the name stays free
                publisher.release_name(name)
                raise
        else:
            children: dict[Any, Any] = {}
            create = _Children(self, publisher, name, children).create
            made = Family(name, self.label_names, children, create)
        return cast(_T, made)

    # subclasses: the record's type-specific parts, and the live series
    flags = 0
    aggregation = 0

    def _spec(self, name: str, labels: tuple[tuple[str, str], ...]) -> L.RecordSpec:
        return L.RecordSpec(
            mtype=self.mtype,
            name=name,
            help=self.help,
            unit=self.unit,
            labels=labels,
            flags=self.flags,
            aggregation=self.aggregation,
            **self._spec_extra(),
        )

    def _spec_extra(self) -> dict[str, Any]:
        return {}

    def _series(self, publisher: FileOwner, name: str, labels: tuple[tuple[str, str], ...]) -> Any:
        return publisher.add_series(self._spec(name, labels), self._cell)

    def _cell(self, binding: Binding) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError


class Counter(Metric[_T]):
    """A monotonic counter. Integer by default; ``float=True`` for fractional amounts."""

    mtype = L.MetricType.COUNTER

    @overload
    def __init__(
        self: Counter[CounterSeries], help: str = "", *, float: Literal[False] = False, **options: Unpack[_Options]
    ) -> None: ...
    @overload
    def __init__(
        self: Counter[FloatCounterSeries], help: str = "", *, float: Literal[True], **options: Unpack[_Options]
    ) -> None: ...
    @overload
    def __init__(
        self: Counter[Labelled[CounterSeries]],
        help: str = "",
        *,
        labels: Sequence[str],
        float: Literal[False] = False,
        **options: Unpack[_Options],
    ) -> None: ...
    @overload
    def __init__(
        self: Counter[Labelled[FloatCounterSeries]],
        help: str = "",
        *,
        labels: Sequence[str],
        float: Literal[True],
        **options: Unpack[_Options],
    ) -> None: ...

    def __init__(self, help: str = "", *, float: bool = False, **options: Any) -> None:
        super().__init__(help, **options)
        self.flags = L.FLAG_FLOAT if float else 0

    def _cell(self, binding: Binding) -> Any:
        cls = FloatCounterSeries if self.flags & L.FLAG_FLOAT else CounterSeries
        return cls(binding.buffer, binding.offset)


_AGGREGATIONS = {
    "per_process": L.Aggregation.PER_PROCESS,
    "sum": L.Aggregation.SUM,
    "max": L.Aggregation.MAX,
    "min": L.Aggregation.MIN,
    "last": L.Aggregation.LAST,
}


class Gauge(Metric[_T]):
    """A value that goes up and down.

    ``aggregate`` says how readers combine it across processes: "per_process"
    (default: one series per process), "sum", "max", "min" or "last";
    ``live_only=True`` leaves out processes that have exited.
    """

    mtype = L.MetricType.GAUGE

    @overload
    def __init__(
        self: Gauge[GaugeSeries],
        help: str = "",
        *,
        aggregate: str = ...,
        live_only: bool = ...,
        **options: Unpack[_Options],
    ) -> None: ...
    @overload
    def __init__(
        self: Gauge[Labelled[GaugeSeries]],
        help: str = "",
        *,
        labels: Sequence[str],
        aggregate: str = ...,
        live_only: bool = ...,
        **options: Unpack[_Options],
    ) -> None: ...

    def __init__(
        self, help: str = "", *, aggregate: str = "per_process", live_only: bool = False, **options: Any
    ) -> None:
        super().__init__(help, **options)
        if aggregate not in _AGGREGATIONS:
            raise ValueError(f"aggregate must be one of {sorted(_AGGREGATIONS)}, not {aggregate!r}")
        self.aggregation = _AGGREGATIONS[aggregate] | (L.AGG_LIVE_ONLY if live_only else 0)

    def _cell(self, binding: Binding) -> Any:
        return GaugeSeries(binding.buffer, binding.offset)


class Histogram(Metric[_T]):
    """Observations counted in buckets, with their count and sum, read consistently.

    ``buckets`` is a sequence of upper bounds (default: prometheus_client's),
    ``LogBuckets(low, high, relative_error)`` for percentiles with a bounded
    relative error, or ``Exponential(max_buckets)``: native buckets, any range.
    """

    mtype = L.MetricType.HISTOGRAM

    @overload
    def __init__(
        self: Histogram[HistogramSeries],
        help: str = "",
        *,
        buckets: Iterable[float] | LogBuckets | Exponential = ...,
        **options: Unpack[_Options],
    ) -> None: ...
    @overload
    def __init__(
        self: Histogram[Labelled[HistogramSeries]],
        help: str = "",
        *,
        labels: Sequence[str],
        buckets: Iterable[float] | LogBuckets | Exponential = ...,
        **options: Unpack[_Options],
    ) -> None: ...

    def __init__(
        self, help: str = "", *, buckets: Iterable[float] | LogBuckets | Exponential = DEFAULT_BUCKETS, **options: Any
    ) -> None:
        super().__init__(help, **options)
        self.exponential = buckets if isinstance(buckets, Exponential) else None
        if isinstance(buckets, Exponential):  # format 1.2: its own record type
            buckets.check()
            self.bounds: tuple[float, ...] = (float(buckets.zero_threshold),)
            return
        if isinstance(buckets, LogBuckets):
            bounds = buckets.bounds()
            self.flags = L.FLAG_LOG_BUCKETS
        else:
            bounds = tuple(float(b) for b in buckets)
            if bounds and bounds[-1] == math.inf:
                bounds = bounds[:-1]
        if len(bounds) > L.MAX_PARAMS:
            raise ValueError(f"at most {L.MAX_PARAMS} buckets")
        for i, bound in enumerate(bounds):
            if not math.isfinite(bound) or (i and not bound > bounds[i - 1]):
                raise ValueError("bucket bounds must be finite and strictly increasing")
        self.bounds = bounds

    def _spec_extra(self) -> dict[str, Any]:
        if self.exponential is not None:  # the zero threshold, and the slots per sign
            return {"bounds": self.bounds, "capacity": self.exponential.max_buckets}
        return {"bounds": self.bounds}

    def _spec(self, name: str, labels: tuple[tuple[str, str], ...]) -> L.RecordSpec:
        spec = super()._spec(name, labels)
        return spec if self.exponential is None else replace(spec, mtype=L.MetricType.EXP_HISTOGRAM)

    def _cell(self, binding: Binding) -> Any:
        e = self.exponential
        if e is not None:
            return ExpHistogramSeries(binding.buffer, binding.offset, e.max_buckets, e.zero_threshold, e.max_scale)
        return HistogramSeries(binding.buffer, binding.offset, self.bounds)


class Timer(Histogram[_T]):
    """A histogram of durations in seconds; use ``with metric.time():`` or ``@metric.time()``."""

    @overload
    def __init__(
        self: Timer[HistogramSeries],
        help: str = "",
        *,
        buckets: Iterable[float] | LogBuckets = ...,
        **options: Unpack[_Options],
    ) -> None: ...
    @overload
    def __init__(
        self: Timer[Labelled[HistogramSeries]],
        help: str = "",
        *,
        labels: Sequence[str],
        buckets: Iterable[float] | LogBuckets = ...,
        **options: Unpack[_Options],
    ) -> None: ...

    def __init__(self, help: str = "", **options: Any) -> None:
        options.setdefault("unit", "seconds")
        super().__init__(help, **options)  # type: ignore[misc]  # (the overloads type the callers)


class Summary(Metric[_T]):
    """Count and sum of observations, read consistently (an average over any interval)."""

    mtype = L.MetricType.SUMMARY

    @overload
    def __init__(self: Summary[SummarySeries], help: str = "", **options: Unpack[_Options]) -> None: ...
    @overload
    def __init__(
        self: Summary[Labelled[SummarySeries]], help: str = "", *, labels: Sequence[str], **options: Unpack[_Options]
    ) -> None: ...

    def __init__(self, help: str = "", **options: Any) -> None:
        super().__init__(help, **options)

    def _cell(self, binding: Binding) -> Any:
        return SummarySeries(binding.buffer, binding.offset)


Average = Summary


class Text(Metric[_T]):
    """A short UTF-8 text of at most ``size`` bytes, cut at a character boundary."""

    mtype = L.MetricType.TEXT

    @overload
    def __init__(self: Text[TextSeries], help: str = "", *, size: int = ..., **options: Unpack[_Options]) -> None: ...
    @overload
    def __init__(
        self: Text[Labelled[TextSeries]],
        help: str = "",
        *,
        labels: Sequence[str],
        size: int = ...,
        **options: Unpack[_Options],
    ) -> None: ...

    def __init__(self, help: str = "", *, size: int = 64, **options: Any) -> None:
        super().__init__(help, **options)
        if not 0 < size <= L.MAX_TEXT_CAPACITY:
            raise ValueError(f"text size must be 1..{L.MAX_TEXT_CAPACITY} bytes")
        self.size = size

    def _spec_extra(self) -> dict[str, Any]:
        return {"capacity": self.size}

    def _cell(self, binding: Binding) -> Any:
        return TextSeries(binding.buffer, binding.offset, self.size)


class Enum(Metric[_T]):
    """One of a fixed list of states; starts in the first."""

    mtype = L.MetricType.ENUM

    @overload
    def __init__(
        self: Enum[EnumSeries], help: str = "", *, states: Sequence[str], **options: Unpack[_Options]
    ) -> None: ...
    @overload
    def __init__(
        self: Enum[Labelled[EnumSeries]],
        help: str = "",
        *,
        labels: Sequence[str],
        states: Sequence[str],
        **options: Unpack[_Options],
    ) -> None: ...

    def __init__(self, help: str = "", *, states: Sequence[str], **options: Any) -> None:
        super().__init__(help, **options)
        self.states = tuple(str(s) for s in states)
        if not self.states or len(set(self.states)) != len(self.states):
            raise ValueError("an enum needs one or more distinct states")
        if any(not s or len(s) > MAX_LABEL_VALUE for s in self.states):
            raise ValueError(f"enum states must be 1..{MAX_LABEL_VALUE} characters")
        if len(self.states) > MAX_ENUM_STATES:
            raise ValueError(f"an enum has at most {MAX_ENUM_STATES} states")

    def _spec_extra(self) -> dict[str, Any]:
        return {"extras": self.states}

    def _cell(self, binding: Binding) -> Any:
        cell = EnumSeries(binding.buffer, binding.offset, len(self.states))
        cell.states = self.states
        cell._index = {s: i for i, s in enumerate(self.states)}
        return cell


class Info(Metric[_T]):
    """Constant key/value pairs (version, build...). Give ``values`` now or call ``info({...})`` once."""

    mtype = L.MetricType.INFO

    @overload
    def __init__(
        self: Info[InfoSeries], help: str = "", *, values: Mapping[str, str] | None = ..., **options: Unpack[_Options]
    ) -> None: ...
    @overload
    def __init__(
        self: Info[Labelled[InfoSeries]],
        help: str = "",
        *,
        labels: Sequence[str],
        values: Mapping[str, str] | None = ...,
        **options: Unpack[_Options],
    ) -> None: ...

    def __init__(self, help: str = "", *, values: Mapping[str, str] | None = None, **options: Any) -> None:
        super().__init__(help, **options)
        self.values = dict(values) if values is not None else None

    def _series(self, publisher: FileOwner, name: str, labels: tuple[tuple[str, str], ...]) -> Any:
        def publish(values: dict[str, str]) -> None:
            extras = tuple(s for kv in values.items() for s in kv)
            spec = L.RecordSpec(self.mtype, name, self.help, self.unit, labels, extras=extras)
            publisher.add_record(spec)

        series = InfoSeries(publish)
        if self.values is not None:
            series.info(self.values)
        return series


# -- Labelled families ---------------------------------------------------------


#: A labelled metric, as returned for a declaration with labels:
#: ``family.labels(*values)`` or ``family.labels(**by_name)`` gives the series.
Family = cells.Family


class Labelled(Protocol[_S_co]):
    """What type checkers see for a metric declared with labels: a ``Family`` of series."""

    def labels(self, *values: Any, **by_name: Any) -> _S_co: ...


class _Children:
    """Creates a labelled metric's series on a cache miss, within its limits."""

    __slots__ = ("_canonical", "_children", "_decl", "_publisher", "name")

    def __init__(self, decl: Metric[Any], publisher: FileOwner, name: str, children: dict[Any, Any]) -> None:
        self.name = name
        self._decl = decl
        self._publisher = publisher
        self._children = children  # shared with the Family: values as given, in label order -> series
        self._canonical: dict[tuple[str, ...], Any] = {}  # values as strings -> series

    def create(self, values: tuple[Any, ...], by_name: dict[str, Any]) -> Any:
        names = self._decl.label_names
        if by_name:
            if values:
                raise TypeError("pass label values by position or by name, not both")
            if set(by_name) != set(names):
                raise ValueError(f"{self.name}: expected labels {names}, got {tuple(by_name)}")
            values = tuple(by_name[n] for n in names)
        if len(values) != len(names):
            raise ValueError(f"{self.name}: expected {len(names)} label values {names}, got {len(values)}")
        key = tuple(v if isinstance(v, str) else str(v) for v in values)
        with self._publisher.lock:
            child = self._canonical.get(key)
            if child is None:
                for value in key:
                    if len(value) > MAX_LABEL_VALUE:
                        raise ValueError(f"{self.name}: label value longer than {MAX_LABEL_VALUE} characters")
                if len(self._canonical) >= self._decl.max_series:
                    raise LabelLimitError(
                        f"{self.name}: already {self._decl.max_series} label sets (max_series); "
                        f"refusing {dict(zip(names, key, strict=True))}"
                    )
                child = self._decl._series(self._publisher, self.name, tuple(zip(names, key, strict=True)))
                # A signal handler that interrupted this creation may have made
                # the same series (same record: add_record is idempotent, see
                # there) and stored it: keep the first one stored, so the label
                # set has one live series.
                child = self._canonical.setdefault(key, child)
            if len(self._children) < 4 * self._decl.max_series:
                try:
                    self._children[values] = child
                except TypeError:  # unhashable values: served by this slow path
                    pass
        return child
