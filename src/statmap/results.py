"""What a collection found: files, errors and aggregated metric families.

The results of ``collect.Collector`` (re-exported by ``collect``, where they
are usually imported from); plain data with their JSON forms. The engine
that fills them is in ``collect.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import _layout as L
from .kinds import BY_NAME, Kind, json_value

#: Status of a file that failed validation, and of an archive file.
CORRUPT, ARCHIVE = "corrupt", "archive"


@dataclass(frozen=True)
class CollectError:
    """A problem with one file (or between two files); the others were collected."""

    path: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"

    def to_json(self) -> dict[str, str]:
        return {"path": self.path, "problem": self.problem}


@dataclass
class FileInfo:
    """One file of the directory as seen by the last collection."""

    path: str
    status: str  # alive, closed, dead, not-ready, corrupt or archive
    identity: L.Identity | None = None
    size: int = 0
    series: int = 0
    closed_ns: int = 0
    absorbed: bool = False  # already folded into the archive: counted there, not here
    error: str | None = None
    absorbed_count: int = 0  # archives: how many process files they hold

    @property
    def name(self) -> str:
        return self.identity.publisher if self.identity else ""

    @property
    def pid(self) -> int:
        return self.identity.pid if self.identity else 0

    @property
    def is_archive(self) -> bool:
        return self.status == ARCHIVE

    def to_json(self) -> dict[str, Any]:
        ident = self.identity
        out: dict[str, Any] = {
            "path": self.path,
            "name": self.name,
            "pid": self.pid,
            "state": self.status,
            "program": ident.program if ident else "",
            "instance": ident.instance_id.hex() if ident else "",
            "created": ident.created_ns / 1e9 if ident else None,
            "closed": self.closed_ns / 1e9 if self.closed_ns else None,
            "size": self.size,
            "series": self.series,
        }
        if self.absorbed:
            out["absorbed"] = True
        if self.status == ARCHIVE:
            out["absorbed_instances"] = self.absorbed_count
        if self.error:
            out["error"] = self.error
        return out


class Sample:
    """One aggregated series: its labels (with ``pid`` for per-process series) and value."""

    __slots__ = ("key", "labels", "pid", "value")

    def __init__(self, labels: dict[str, str], value: Any, pid: int | None, key: Any) -> None:
        self.labels = labels
        self.value = value  # int/float, HistogramValue, SummaryValue, str (text, enum state), dict (info)
        self.pid = pid  # the process of a per-process series, else None
        self.key = key  # hashable and stable across collections (for caches)

    def __repr__(self) -> str:
        return f"Sample({self.labels!r}, {self.value!r})"

    def to_json(self) -> dict[str, Any]:
        return {"labels": dict(self.labels), "value": json_value(self.value)}


@dataclass
class MetricFamily:
    """The aggregated series of one metric name within one publisher name."""

    publisher: str
    name: str
    type: str  # counter, gauge, histogram, summary, text, info, enum
    help: str
    unit: str
    aggregation: str  # gauges: per_process, sum, max, min or last; "sum" for summed types; "per_process" otherwise
    live_only: bool
    float_counter: bool
    bounds: tuple[float, ...]
    samples: list[Sample] = field(default_factory=list)
    key: Any = None
    states: tuple[str, ...] = ()  # enums: the declared states

    def to_json(self) -> dict[str, Any]:
        to_json = BY_NAME[self.type].json  # looked up once per family
        return {
            "publisher": self.publisher,
            "name": self.name,
            "type": self.type,
            "help": self.help,
            "unit": self.unit,
            "aggregation": self.aggregation,
            "series": [{"labels": dict(s.labels), "value": to_json(s.value)} for s in self.samples],
        }

    @property
    def kind(self) -> Kind:
        """This family's entry in the table of kinds."""
        return BY_NAME[self.type]


@dataclass
class Collection:
    """Everything one collection found."""

    directory: str
    time: float
    files: list[FileInfo]
    families: list[MetricFamily]
    errors: list[CollectError]
    #: publisher name -> creation time (s) of its oldest counted file: when its totals started counting
    created: dict[str, float] = field(default_factory=dict)
    #: the latest exemplar per (publisher, metric, labels, bucket bound or None): exemplar_read.gather
    exemplars: dict[Any, Any] = field(default_factory=dict)

    def family(self, name: str, publisher: str | None = None) -> MetricFamily | None:
        for fam in self.families:
            if fam.name == name and (publisher is None or fam.publisher == publisher):
                return fam
        return None

    def value(self, name: str, labels: dict[str, str] | None = None, publisher: str | None = None) -> Any:
        """The aggregated value of one series (None if absent): a convenience for scripts and tests."""
        fam = self.family(name, publisher)
        if fam is None:
            return None
        want = labels or {}
        for sample in fam.samples:
            if sample.labels == want:
                return sample.value
        return None

    def counts(self) -> dict[str, int]:
        """How many files are in each status (alive, closed, dead, not-ready, corrupt, archive)."""
        out: dict[str, int] = {}
        for f in self.files:
            out[f.status] = out.get(f.status, 0) + 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "directory": self.directory,
            "time": self.time,
            "files": [f.to_json() for f in self.files],
            "errors": [e.to_json() for e in self.errors],
            "metrics": [m.to_json() for m in self.families],
        }
