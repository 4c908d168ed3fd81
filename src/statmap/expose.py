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
import re
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from operator import is_
from typing import Any

from . import expose_proto
from .collect import Collection, MetricFamily, Sample, match_families
from .exemplar_read import annotate as annotate_exemplars
from .gcpause import paused
from .kinds import BY_NAME, Kind, free_name

# Names and numbers as written here: their home is kinds; re-exported where they were first.
from .kinds import format_float as format_float
from .kinds import histogram_has_sum as histogram_has_sum
from .kinds import label_name as label_name
from .kinds import metric_name as metric_name
from .values import HistogramValue

OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
JSON_CONTENT_TYPE = "application/json"

_PREFIX_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_free = free_name
_VALUE = object()  # stands for the value when a series' text is planned (Exposer._fixed_shape)


def family_name(fam: MetricFamily) -> str:
    """The exposed family name of a statmap metric."""
    name = metric_name(fam.name)
    trim = BY_NAME[fam.type].trim
    if trim and name.endswith(trim) and len(name) > len(trim):
        name = name[: -len(trim)]
    unit = exposed_unit(fam)
    if unit and not name.endswith("_" + unit):
        name = f"{name}_{unit}"
    return name


def exposed_unit(fam: MetricFamily) -> str:
    if not fam.unit or not BY_NAME[fam.type].has_unit:
        return ""
    return metric_name(fam.unit).strip("_")


def _number_text(value: Any) -> str:
    """A sample's number as the text formats write it (ints are written with ``str`` inline)."""
    return value if value.__class__ is str else format_value(value)


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


class _Plan:
    """How one exposed family of a fixed kind is written: each series' text around its value."""

    __slots__ = ("last", "texts")

    def __init__(self) -> None:
        self.texts: dict[Any, tuple[str, str]] = {}  # sample key -> (text before the value, text after)
        # the last scrape's sample keys, their texts, the samples and their lines, in order
        self.last: tuple[list[Any], list[tuple[str, str]], list[Any], list[str]] = ([], [], [], [])


class _Out:
    """One family as it will be written."""

    __slots__ = ("fam", "help", "kind", "name", "publisher_label", "type", "unit")

    def __init__(self, name: str, fam: MetricFamily, publisher_label: str | None) -> None:
        self.name = name
        self.type = fam.type
        self.kind: Kind = BY_NAME[fam.type]
        self.help = fam.help
        self.unit = exposed_unit(fam)
        self.fam = [fam]
        self.publisher_label = publisher_label


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
        # The render plan, kept across scrapes: family headers, and per series of a fixed kind
        # its text around the value (_fixed_family); only values are formatted per scrape.
        self._names: dict[Any, tuple[str, ...]] = {}  # exposed label names by family and label keys
        self._heads: dict[tuple[str, str, str, str, bool], str] = {}
        self._plans: dict[Any, _Plan] = {}
        self._planned = 0
        self.problems: list[str] = []

    # -- grouping and names --------------------------------------------------

    def plan(self, collection: Collection) -> list[_Out]:
        """Exposed families, merged by exposed name; families that would clash are left out (see ``problems``)."""
        self.problems = []
        families = [
            f for f in match_families(collection.families, self.match) if BY_NAME[f.type].exposed or self.include_text
        ]
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
            produced = [name + s for s in BY_NAME[fam.type].suffixes]
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

    def base_labels(self, out: _Out, fam: MetricFamily, sample: Sample) -> tuple[str, dict[str, str]]:
        """The sample's labels (sanitised, with publisher if needed), rendered and as a dict; cached."""
        key = (out.name, out.publisher_label, fam.publisher, fam.type, sample.key)
        hit = self._labels.get(key)
        if hit is not None:
            return hit
        given = sample.labels
        # The exposed label names depend only on the label keys (the same for a family's every series):
        # worked out once per family's keys, not per series (the first render of many series).
        names = self._names_for(out, tuple(given))
        labels = dict(zip(names, map(str, given.values()), strict=False))
        if out.publisher_label:
            labels[names[-1]] = fam.publisher
        text = ",".join([f'{k}="{escape_label_value(v)}"' for k, v in labels.items()])
        if len(self._labels) > 200_000:
            self._labels.clear()
        self._labels[key] = hit = (text, labels)
        return hit

    def _names_for(self, out: _Out, keys: tuple[str, ...]) -> tuple[str, ...]:
        """The exposed label names for these keys (the same for a family's every series): worked out once
        per family's keys, not per series (the first render of many series)."""
        nkey = (out.name, out.kind.name, out.publisher_label, keys)
        names = self._names.get(nkey)
        if names is None:
            if len(self._names) > 10_000:
                self._names.clear()
            names = self._names[nkey] = self._label_names(out, keys)
        return names

    @staticmethod
    def _label_names(out: _Out, keys: tuple[str, ...]) -> tuple[str, ...]:
        """Exposed names for these label keys, in order (then the publisher label's, if any): sanitised,
        made unique, clear of the kind's reserved names."""
        kind = out.kind
        reserved = set(kind.reserved)
        if kind.label_is_name:
            reserved.add(out.name)
        names: list[str] = []
        for k in keys:
            names.append(_free(label_name(k), reserved | set(names)))
        if out.publisher_label:
            names.append(_free(out.publisher_label, reserved | set(names)))
        return tuple(names)

    def samples(
        self, collection: Collection, *, created: bool = True
    ) -> Iterator[tuple[_Out, Iterator[tuple[str, str, dict[str, str], Any, Any]]]]:
        """The one sample expansion of every format (``kinds``): per exposed family, its samples.

        Each sample is (sample name, rendered labels, labels, extra labels or
        None, number). ``created``: include ``_created`` samples. The text
        formats walk the same expansion inline (``_text``), for speed.
        """
        for out in self.plan(collection):
            yield out, self._family_samples(collection, out, created)

    def _family_samples(
        self, collection: Collection, out: _Out, created: bool
    ) -> Iterator[tuple[str, str, dict[str, str], Any, Any]]:
        base = self.base_labels
        for fam in out.fam:
            when = collection.created.get(fam.publisher) if created else None
            expand = out.kind.expand(out.name, when, fam.states)
            for sample in fam.samples:
                text, labels = base(out, fam, sample)
                for sample_name, extra, number in expand(sample.value, labels):
                    yield sample_name, text, labels, extra, number

    # -- text formats --------------------------------------------------------

    def _text(self, collection: Collection, openmetrics: bool) -> list[str]:
        """The text of a collection, as pieces to join: the one sample expansion, written inline for speed."""
        base = self.base_labels
        parts: list[str] = []
        put = parts.append
        for out in self.plan(collection):
            kind = out.kind
            hkey = (out.name, out.help, out.unit, kind.name, openmetrics)
            head = self._heads.get(hkey)
            if head is None:
                if len(self._heads) > 10_000:
                    self._heads.clear()  # bounded: families that come and go
                head = self._heads[hkey] = self._head(out, openmetrics)
            put(head)
            for fam in out.fam:
                created = collection.created.get(fam.publisher) if openmetrics else None
                # _created is written as text, formatted once per family (numbers are formatted per sample)
                when = format_float(created) if created else None
                if kind.fixed:
                    self._fixed_family(out, fam, when, parts)
                    continue
                expand = kind.expand(out.name, when, fam.states)
                for sample in fam.samples:
                    text, _labels = base(out, fam, sample)
                    for sample_name, extra, number in expand(sample.value, _labels):
                        cls = number.__class__
                        value = str(number) if cls is int else number if cls is str else format_value(number)
                        if extra is None:
                            put(f"{sample_name}{{{text}}} {value}\n" if text else f"{sample_name} {value}\n")
                        else:
                            more = ",".join([f'{k}="{escape_label_value(v)}"' for k, v in extra])
                            inner = f"{text},{more}" if text and more else text or more
                            put(f"{sample_name}{{{inner}}} {value}\n")
        if openmetrics:
            put("# EOF\n")
        return parts

    @staticmethod
    def _head(out: _Out, openmetrics: bool) -> str:
        kind = out.kind
        if openmetrics:
            head = f"# HELP {out.name} {escape_help(out.help, True)}\n# TYPE {out.name} {kind.om_type}\n"
            return head + (f"# UNIT {out.name} {out.unit}\n" if out.unit else "")
        name = out.name + kind.head
        return f"# HELP {name} {escape_help(out.help, False)}\n# TYPE {name} {kind.prom_type}\n"

    def _fixed_family(self, out: _Out, fam: MetricFamily, when: str | None, parts: list[str]) -> None:
        """A family of a ``fixed`` kind (counters, gauges): each series' text is kept, only its value is formatted."""
        key = (out.name, out.publisher_label, fam.publisher, fam.type, when)
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) > 10_000 or self._planned > 200_000:
                self._plans.clear()  # bounded, as the label cache: churning names or _created times
                self._planned = 0
            plan = self._plans[key] = _Plan()
        samples = fam.samples
        # one tuple, replaced whole: a plan is never seen half-updated
        last_keys, series, kept, lines = plan.last
        if len(samples) == len(kept) and all(map(is_, samples, kept)):
            parts.extend(lines)  # every Sample kept by the collector (no value changed): every line as it was
            return
        keys = [sample.key for sample in samples]
        if keys != last_keys:  # the same series as last time compare by identity: cheap
            texts = plan.texts
            new = [sample for sample in samples if sample.key not in texts]
            if new:
                shape = self._fixed_shape(out.kind.expand(out.name, when, fam.states))
                texts.update(zip([sample.key for sample in new], self._fixed_texts(out, fam, new, shape), strict=True))
                self._planned += len(new)
            series = [texts[key] for key in keys]
            kept, lines = [None] * len(samples), [""] * len(samples)
        # A Sample the collector kept (its value did not change) keeps its line.
        lines = [
            line
            if sample is was
            else before + (str(n) if (n := sample.value).__class__ is int else _number_text(n)) + after
            for (before, after), sample, was, line in zip(series, samples, kept, lines, strict=True)
        ]
        plan.last = (keys, series, list(samples), lines)
        parts.extend(lines)

    @staticmethod
    def _fixed_shape(expand: Any) -> tuple[str, list[tuple[str, str]]]:
        """A fixed kind's samples for every series of a family (they depend on neither the value nor the
        labels, kinds.Kind.fixed): the first sample's name, then each constant sample's name and number text."""
        first, *rest = expand(_VALUE, {})
        assert first[1] is None and first[2] is _VALUE, "a fixed kind's first sample carries the value"
        constants = []
        for sample_name, extra, number in rest:
            assert extra is None and number is not _VALUE, "a fixed kind's constant samples"
            cls = number.__class__
            value = str(number) if cls is int else number if cls is str else format_value(number)
            constants.append((sample_name, value))
        return first[0], constants

    def _fixed_texts(
        self, out: _Out, fam: MetricFamily, samples: list[Sample], shape: tuple[str, list[tuple[str, str]]]
    ) -> list[tuple[str, str]]:
        """Each of these series of a fixed kind as (text before its value, text after it): its samples
        written once, its labels as ``base_labels`` writes them (not cached there: the plan keeps these)."""
        first, constants = shape
        publisher = [fam.publisher] if out.publisher_label else []
        found: list[tuple[str, str]] = []
        put, keys_before = found.append, None
        names: tuple[str, ...] = ()
        for sample in samples:
            given = sample.labels
            keys = tuple(given)
            if keys != keys_before:  # a family's series share their label keys: names worked out once
                names, keys_before = self._names_for(out, keys), keys
            values = [*map(str, given.values()), *publisher]
            text = ",".join([f'{k}="{escape_label_value(v)}"' for k, v in zip(names, values, strict=False)])
            inner = f"{{{text}}}" if text else ""
            put((f"{first}{inner} ", "\n" + "".join([f"{name}{inner} {value}\n" for name, value in constants])))
        return found

    def openmetrics(self, collection: Collection) -> str:
        with paused:  # a first render builds a few objects per series (gcpause.py)
            text = "".join(self._text(collection, True))
        return annotate_exemplars(text, self._exemplar_heads(collection)) if collection.exemplars else text

    def _exemplar_heads(self, collection: Collection) -> dict[str, str]:
        """OpenMetrics line heads (``name{labels}``) of the samples that carry an exemplar, and its text:
        counters' ``_total`` and histograms' ``_bucket`` lines only (docs/format.md section 15)."""
        found, heads = collection.exemplars, {}
        series = {key[:3] for key in found}  # only the series that have one are expanded below
        families = {key[:2] for key in series}
        for out in self.plan(collection):
            if out.kind.name not in ("counter", "histogram"):
                continue
            for fam in out.fam:
                if (fam.publisher, fam.name) not in families:
                    continue
                for sample in fam.samples:
                    key, value = (fam.publisher, fam.name, tuple(sample.labels.items())), sample.value
                    if key not in series:
                        continue
                    text, exposed = self.base_labels(out, fam, sample)
                    bounds = iter([b for b, _ in value.buckets] if isinstance(value, HistogramValue) else [])
                    for name, extra, _n in out.kind.expand(out.name, None, fam.states)(value, exposed):
                        if name.endswith("_bucket") and extra:
                            ex = found.get((*key, next(bounds, None)))
                            more = ",".join([f'{k}="{escape_label_value(v)}"' for k, v in extra])
                            head = name + "{" + (f"{text},{more}" if text else more) + "}"
                        elif name.endswith("_total") and extra is None:
                            ex, head = found.get((*key, None)), f"{name}{{{text}}}" if text else name
                        else:
                            continue
                        if ex is not None:
                            heads[head] = ex.openmetrics()
        return heads

    def prometheus(self, collection: Collection) -> str:
        with paused:
            return "".join(self._text(collection, False))

    def json(self, collection: Collection, *, indent: int | None = 2) -> str:
        doc = collection.to_json()
        doc["metrics"] = [f.to_json() for f in match_families(collection.families, self.match)]
        return json.dumps(doc, indent=indent, allow_nan=False)

    def render(self, collection: Collection, fmt: str) -> str:
        """``collection`` in the text format named ``fmt`` (a key of ``FORMATS``)."""
        found = FORMATS.get(fmt)
        if found is None:
            raise ValueError(f"unknown format {fmt!r}: {', '.join(FORMATS)}")
        got = found.render(self, collection)
        if not isinstance(got, str):
            raise ValueError(f"{fmt} is a binary format: render_bytes")
        return got

    def render_bytes(self, collection: Collection, fmt: str) -> bytes:
        """``collection`` in the format named ``fmt``, as the bytes of a response body."""
        found = FORMATS.get(fmt)
        if found is None:
            raise ValueError(f"unknown format {fmt!r}: {', '.join(FORMATS)}")
        got = found.render(self, collection)
        return got.encode() if isinstance(got, str) else got


@dataclass(frozen=True)
class Format:
    """An export format: its name, how an Exposer renders it, its content type, and whether it is a scrape format."""

    name: str
    render: Callable[[Exposer, Collection], str | bytes]
    content_type: str
    scrape: bool  # served at /metrics
    binary: bool = False  # bytes, not text (Exposer.render_bytes)


#: The export formats, read by the CLI (``export --format``), ``Exposer.render`` and ``/metrics``.
FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("openmetrics", Exposer.openmetrics, OPENMETRICS_CONTENT_TYPE, True),
        Format("prometheus", Exposer.prometheus, PROMETHEUS_CONTENT_TYPE, True),
        Format("json", lambda e, c: e.json(c) + "\n", JSON_CONTENT_TYPE, False),
        Format("protobuf", expose_proto.render, expose_proto.PROTOBUF_CONTENT_TYPE, True, binary=True),
    )
}
#: The formats ``/metrics`` serves, in the order a message lists them.
SCRAPE_FORMATS = tuple(name for name, f in FORMATS.items() if f.scrape)


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
        for out, samples in self._exposer.samples(collection):
            om_type = out.kind.om_type
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
            for sample_name, _text, labels, extra, number in samples:
                metric.add_sample(sample_name, {**labels, **dict(extra)} if extra else labels, float(number))
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
