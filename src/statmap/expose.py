"""Exposition of a collection: OpenMetrics text, Prometheus text, JSON.

Names are mapped as documented in docs/operations.md ("Names in the
exposition"); in short:

* characters outside ``[A-Za-z0-9_]`` become ``_`` and a leading digit gets a
  ``_`` in front (the reference writer never produces either);
* a metric with a unit gets the unit as a suffix unless its name already
  ends with it (``latency`` in ``seconds`` -> ``latency_seconds``), as
  OpenMetrics requires;
* counters lose a trailing ``_total`` in the family name and expose
  ``NAME_total`` and ``NAME_created``; histograms ``NAME_bucket`` (cumulative,
  ``le`` label), ``NAME_count``, ``NAME_sum``, ``NAME_created``; statmap
  summaries (count and sum, no quantiles) ``NAME_count``, ``NAME_sum``,
  ``NAME_created``; info metrics lose a trailing ``_info`` in the family name
  and expose ``NAME_info{KEY="VALUE",...} 1``; enums are OpenMetrics state
  sets ``NAME{NAME="STATE"} 1|0``; text metrics are left out unless asked
  for (``include_text``), then exposed as info ``NAME_info{value="..."} 1``;
* per-process series carry a ``pid`` label;
* when one metric name is published by several publisher names, a
  ``publisher`` label tells their series apart (``publisher_label="auto"``;
  ``"always"`` adds it everywhere).

``_created`` is the creation time of the oldest process (or archive) of the
publisher that contributes to the collection: the time from which its
totals have been counting. The Prometheus text format has no ``_created``,
no UNIT line, no info and no state set: there info and enum become gauges.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

from .collect import Collection, MetricFamily, Sample, match_families
from .reader import HistogramValue, SummaryValue

OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_BAD_NAME_CHARS = re.compile(r"[^A-Za-z0-9_]")
_PREFIX_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RESERVED_FOR = {"histogram": ("le",), "summary": ("quantile",)}


def metric_name(name: str) -> str:
    """A valid Prometheus metric name for ``name`` (see the module docstring)."""
    name = _BAD_NAME_CHARS.sub("_", name) or "_"
    if name[0].isdigit():
        name = "_" + name
    return name


def label_name(name: str) -> str:
    name = metric_name(name)
    while name.startswith("__"):  # reserved for Prometheus' own labels
        name = name[1:]
    return name


def family_name(fam: MetricFamily) -> str:
    """The exposed family name of a statmap metric."""
    name = metric_name(fam.name)
    if fam.type == "counter" and name.endswith("_total") and len(name) > len("_total"):
        name = name[: -len("_total")]
    if fam.type in ("info", "text") and name.endswith("_info") and len(name) > len("_info"):
        name = name[: -len("_info")]
    unit = exposed_unit(fam)
    if unit and not name.endswith("_" + unit):
        name = f"{name}_{unit}"
    return name


def exposed_unit(fam: MetricFamily) -> str:
    if fam.type in ("info", "enum", "text") or not fam.unit:
        return ""
    return metric_name(fam.unit).strip("_")


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


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return format_float(value)


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def escape_help(text: str, openmetrics: bool) -> str:
    text = text.replace("\\", "\\\\").replace("\n", "\\n")
    return text.replace('"', '\\"') if openmetrics else text


def _free(name: str, taken: Iterable[str]) -> str:
    taken = set(taken)
    while name in taken:
        name = name + "_"
    return name


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


class _Out:
    """One family as it will be written."""

    __slots__ = ("fam", "help", "name", "publisher_label", "type", "unit")

    def __init__(self, name: str, fam: MetricFamily, publisher_label: str | None) -> None:
        self.name = name
        self.type = fam.type
        self.help = fam.help
        self.unit = exposed_unit(fam)
        self.fam = [fam]
        self.publisher_label = publisher_label


_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("_count", "_sum", "_created"),
    "info": ("_info",),
    "text": ("_info",),
}


class Exposer:
    """Renders collections; keeps rendered label sets between calls so repeated scrapes are cheap.

    ``publisher_label``: "auto" (only where several publisher names share a
    metric name) or "always". ``include_text``: expose text metrics as info.
    ``match``: a pattern (``statmap.pattern``, linear time); only families whose name matches.
    ``prefix``: put in front of every exposed family name (``statmap_``).
    """

    def __init__(
        self,
        *,
        publisher_label: str = "auto",
        include_text: bool = False,
        match: str | None = None,
        prefix: str = "",
    ) -> None:
        if publisher_label not in ("auto", "always"):
            raise ValueError("publisher_label must be 'auto' or 'always'")
        if not isinstance(prefix, str) or (prefix and not _PREFIX_RE.match(prefix)):
            raise ValueError(f"prefix {prefix!r} must match [A-Za-z_][A-Za-z0-9_]* (e.g. 'statmap_')")
        self.prefix = prefix
        self.publisher_label = publisher_label
        self.include_text = include_text
        self.match = match
        self._labels: dict[Any, tuple[str, dict[str, str]]] = {}
        self.problems: list[str] = []

    # -- grouping and names --------------------------------------------------

    def _plan(self, collection: Collection) -> list[_Out]:
        """Exposed families, merged by exposed name; families that would clash are left out (see ``problems``)."""
        self.problems = []
        families = [f for f in match_families(collection.families, self.match) if f.type != "text" or self.include_text]
        publishers_by_name: dict[str, set[str]] = {}
        for fam in families:
            publishers_by_name.setdefault(self.prefix + family_name(fam), set()).add(fam.publisher)
        outs: dict[str, _Out] = {}
        used: dict[str, str] = {}  # sample name -> the family name that produces it
        for fam in families:
            name = self.prefix + family_name(fam)
            shared = len(publishers_by_name[name]) > 1 or self.publisher_label == "always"
            out = outs.get(name)
            if out is not None:
                first = out.fam[0]
                if (first.type, exposed_unit(first)) != (fam.type, exposed_unit(fam)):
                    self.problems.append(
                        f"{fam.publisher}:{fam.name} is a {fam.type} but {first.publisher}:{first.name} "
                        f"is a {first.type} under the same name {name}; left out"
                    )
                    continue
                out.fam.append(fam)
                continue
            produced = [name + s for s in _SUFFIXES.get(fam.type, ("",))]
            clash = next((n for n in produced if n in used), None)
            if clash is None and name in used:
                clash = name
            if clash is not None:
                self.problems.append(
                    f"{fam.publisher}:{fam.name}: exposed name {clash} clashes with {used[clash]}; left out"
                )
                continue
            for n in (*produced, name):
                used[n] = name
            outs[name] = _Out(name, fam, "publisher" if shared else None)
        return list(outs.values())

    def _base_labels(self, out: _Out, fam: MetricFamily, sample: Sample) -> tuple[str, dict[str, str]]:
        """The sample's labels (sanitised, with publisher if needed), rendered and as a dict; cached."""
        key = (out.name, out.publisher_label, fam.publisher, fam.type, sample.key)
        hit = self._labels.get(key)
        if hit is not None:
            return hit
        labels: dict[str, str] = {}
        reserved = set(_RESERVED_FOR.get(fam.type, ()))
        if fam.type == "enum":
            reserved.add(out.name)
        for k, v in sample.labels.items():
            labels[_free(label_name(k), reserved | labels.keys())] = str(v)
        if out.publisher_label:
            labels[_free(out.publisher_label, reserved | labels.keys())] = fam.publisher
        text = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in labels.items())
        if len(self._labels) > 200_000:
            self._labels.clear()
        self._labels[key] = hit = (text, labels)
        return hit

    # -- text formats --------------------------------------------------------

    def _lines(self, collection: Collection, openmetrics: bool) -> Iterator[str]:
        for out in self._plan(collection):
            om_type = {"enum": "stateset", "text": "info"}.get(out.type, out.type)
            prom_type = {"info": "gauge", "stateset": "gauge"}.get(om_type, om_type)
            if openmetrics:
                yield f"# HELP {out.name} {escape_help(out.help, True)}\n"
                yield f"# TYPE {out.name} {om_type}\n"
                if out.unit:
                    yield f"# UNIT {out.name} {out.unit}\n"
            else:
                head = {"counter": out.name + "_total", "info": out.name + "_info"}.get(om_type, out.name)
                yield f"# HELP {head} {escape_help(out.help, False)}\n"
                yield f"# TYPE {head} {prom_type}\n"
            name = out.name
            for fam in out.fam:
                created = collection.created.get(fam.publisher)
                created_text = format_float(created) if created else None
                for sample in fam.samples:
                    text, labels = self._base_labels(out, fam, sample)
                    braces = "{" + text + "}" if text else ""
                    value = sample.value
                    t = fam.type
                    if t == "counter":
                        yield f"{name}_total{braces} {format_value(value)}\n"
                        if openmetrics and created_text:
                            yield f"{name}_created{braces} {created_text}\n"
                    elif t == "gauge":
                        yield f"{name}{braces} {format_value(value)}\n"
                    elif t == "histogram":
                        yield from self._histogram(name, text, braces, value, openmetrics and created_text)
                    elif t == "summary":
                        assert isinstance(value, SummaryValue)
                        yield f"{name}_count{braces} {value.count}\n"
                        if value.sum >= 0:  # a counter: not negative, not NaN (see histogram_has_sum)
                            yield f"{name}_sum{braces} {format_float(value.sum)}\n"
                        if openmetrics and created_text:
                            yield f"{name}_created{braces} {created_text}\n"
                    elif t == "enum":
                        states = list(fam.states)
                        if value is not None and value not in states:
                            states.append(value)
                        sep = "," if text else ""
                        for state in states:
                            on = 1 if state == value else 0
                            yield f'{name}{{{text}{sep}{name}="{escape_label_value(state)}"}} {on}\n'
                    elif t in ("info", "text"):
                        pairs = value.items() if isinstance(value, dict) else [("value", str(value))]
                        extra = []
                        taken = set(labels)
                        for k, v in pairs:
                            k = _free(label_name(k), taken)
                            taken.add(k)
                            extra.append(f'{k}="{escape_label_value(v)}"')
                        inner = ",".join(([text] if text else []) + extra)
                        yield f"{name}_info{{{inner}}} 1\n"
        if openmetrics:
            yield "# EOF\n"

    @staticmethod
    def _histogram(name: str, text: str, braces: str, value: HistogramValue, created: Any) -> Iterator[str]:
        sep = "," if text else ""
        for bound, cumulative in value.buckets:
            yield f'{name}_bucket{{{text}{sep}le="{format_float(bound)}"}} {cumulative}\n'
        if histogram_has_sum(value):
            yield f"{name}_count{braces} {value.count}\n"
            yield f"{name}_sum{braces} {format_float(value.sum)}\n"
        if created:
            yield f"{name}_created{braces} {created}\n"

    def openmetrics(self, collection: Collection) -> str:
        return "".join(self._lines(collection, True))

    def prometheus(self, collection: Collection) -> str:
        return "".join(self._lines(collection, False))

    def json(self, collection: Collection, *, indent: int | None = 2) -> str:
        doc = collection.to_json()
        doc["metrics"] = [f.to_json() for f in match_families(collection.families, self.match)]
        return json.dumps(doc, indent=indent, allow_nan=False)

    def render(self, collection: Collection, fmt: str) -> str:
        if fmt == "openmetrics":
            return self.openmetrics(collection)
        if fmt == "prometheus":
            return self.prometheus(collection)
        if fmt == "json":
            return self.json(collection) + "\n"
        raise ValueError(f"unknown format {fmt!r}: openmetrics, prometheus or json")


def openmetrics(collection: Collection, **options: Any) -> str:
    """OpenMetrics 1.0 text of a collection (ends with ``# EOF``)."""
    return Exposer(**options).openmetrics(collection)


def prometheus(collection: Collection, **options: Any) -> str:
    """Prometheus text format 0.0.4 of a collection."""
    return Exposer(**options).prometheus(collection)


def to_json(collection: Collection, **options: Any) -> str:
    return Exposer(**options).json(collection)


#: Sample names prometheus_client's registry reserves for a family of each type (as its _get_names).
_CLIENT_SUFFIXES = {
    "counter": ("_total", "_created"),
    "summary": ("_sum", "_count", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "info": ("_info",),
}


class StatmapCollector:
    """A prometheus_client collector of a statmap directory's aggregated metrics.

    One line in an application that already serves prometheus_client's
    registry (``register`` below does this and checks names)::

        statmap.expose.register("/dev/shm/statmap-1000", prefix="statmap_")

    Each scrape collects the directory (reusing cached readers) and yields
    prometheus_client metric families with the names of this module.
    ``describe()`` announces the families found when it is called, so the
    registry refuses a clash with a metric already registered (or registered
    later). A family that appears after registration and whose names another
    collector of ``registry`` announced is left out of the scrape with a
    ``RuntimeWarning``: two families of one name would make the whole scrape
    invalid.
    """

    def __init__(
        self, directory: str, *, publishers: Iterable[str] | None = None, registry: Any = None, **options: Any
    ) -> None:
        from .collect import Collector

        self.directory = directory
        self.registry = registry
        self._collector = Collector(directory, publishers=publishers)
        self._exposer = Exposer(**options)
        self._warned: set[str] = set()

    def describe(self) -> list[Any]:
        # Called by the registry (under its lock) at registration: the families as they are now.
        return list(self._metrics(set()))

    def collect(self) -> Iterator[Any]:
        return self._metrics(self._taken())

    def _taken(self) -> set[str]:
        """Names that other collectors of the registry announced."""
        registry = self.registry
        owners = getattr(registry, "_names_to_collectors", None)  # prometheus_client's own bookkeeping
        if not isinstance(owners, dict):
            return set()
        return {name for name, owner in dict(owners).items() if owner is not self}

    def _metrics(self, taken: set[str]) -> Iterator[Any]:
        from prometheus_client.metrics_core import Metric

        collection = self._collector.collect()
        for out in self._exposer._plan(collection):
            om_type = {"enum": "stateset", "text": "info"}.get(out.type, out.type)
            name = out.name
            if taken:
                clash = sorted(taken.intersection((name, *(name + x for x in _CLIENT_SUFFIXES.get(om_type, ())))))
                if clash:
                    if name not in self._warned:
                        self._warned.add(name)
                        warnings.warn(
                            f"statmap {self.directory}: family {name} left out: {', '.join(clash)} "
                            "already registered by another collector (register with a prefix)",
                            RuntimeWarning,
                            stacklevel=2,
                        )
                    continue
            metric = Metric(name, out.help, om_type, out.unit)
            for fam in out.fam:
                created = collection.created.get(fam.publisher)
                for sample in fam.samples:
                    _text, labels = self._exposer._base_labels(out, fam, sample)
                    value = sample.value
                    t = fam.type
                    if t == "counter":
                        metric.add_sample(name + "_total", labels, float(value))
                        if created:
                            metric.add_sample(name + "_created", labels, created)
                    elif t == "gauge":
                        metric.add_sample(name, labels, float(value))
                    elif t == "histogram":
                        for bound, cumulative in value.buckets:
                            metric.add_sample(
                                name + "_bucket", {**labels, "le": format_float(bound)}, float(cumulative)
                            )
                        if histogram_has_sum(value):
                            metric.add_sample(name + "_count", labels, float(value.count))
                            metric.add_sample(name + "_sum", labels, value.sum)
                        if created:
                            metric.add_sample(name + "_created", labels, created)
                    elif t == "summary":
                        metric.add_sample(name + "_count", labels, float(value.count))
                        if value.sum >= 0:
                            metric.add_sample(name + "_sum", labels, value.sum)
                        if created:
                            metric.add_sample(name + "_created", labels, created)
                    elif t == "enum":
                        states = list(fam.states)
                        if value is not None and value not in states:
                            states.append(value)
                        for state in states:
                            metric.add_sample(name, {**labels, name: state}, 1.0 if state == value else 0.0)
                    else:
                        pairs = value.items() if isinstance(value, dict) else [("value", str(value))]
                        extra = dict(labels)
                        for k, v in pairs:
                            extra[_free(label_name(k), extra)] = v
                        metric.add_sample(name + "_info", extra, 1.0)
            yield metric


def register(directory: str, registry: Any = None, *, prefix: str = "", **options: Any) -> StatmapCollector:
    """Register a ``StatmapCollector`` for ``directory`` in ``registry`` (default: prometheus_client's REGISTRY).

    ``prefix`` goes in front of every statmap family name (``prefix="statmap_"``
    gives ``statmap_http_requests_total``). A statmap family whose names are
    already registered is a ``ValueError`` naming them: the registry would
    otherwise serve two families of one name, and scrapers reject the scrape.
    """
    if registry is None:
        from prometheus_client import REGISTRY

        registry = REGISTRY
    collector = StatmapCollector(directory, registry=registry, prefix=prefix, **options)
    try:
        registry.register(collector)
    except ValueError as exc:  # prometheus_client's DuplicateTimeseries
        names = ", ".join(sorted(getattr(exc, "duplicates", ()))) or str(exc)
        raise ValueError(
            f"statmap directory {directory}: its metrics would clash with metrics already registered "
            f"({names}); register them under a prefix, e.g. "
            f"statmap.expose.register({directory!r}, registry, prefix='statmap_')"
        ) from exc
    return collector
