"""A file's series at one moment (``Snapshot``, ``Series``), and how a reader builds them in bulk.

``Reader.snapshot()`` (reader.py) builds one ``Series`` per known record.
The files of one program share their record objects (record_table), so a
caller reading many of them together keeps a ``SnapshotMemo``: each
record's fields (name, type name, help, unit, labels) are made once, and
each template's plan (which value words to read in one bulk read, which
records need decoding) once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import _layout as L
from .kinds import TYPE_NAMES
from .values import ExpHistogramValue, HistogramValue, SummaryValue, json_number


@dataclass(frozen=True)
class Series:
    """One series: its metadata and the value read in this snapshot."""

    name: str
    type: str
    help: str
    unit: str
    labels: dict[str, str]
    value: Any  # int/float, str, dict (info), HistogramValue, SummaryValue; None if unreadable
    record: L.Record = field(repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        value = self.value
        if isinstance(value, (HistogramValue, SummaryValue, ExpHistogramValue)):
            value = value.to_json()
        elif isinstance(value, float):
            value = json_number(value)
        return {
            "name": self.name,
            "type": self.type,
            "help": self.help,
            "unit": self.unit,
            "labels": dict(self.labels),
            "value": value,
        }


@dataclass(frozen=True)
class Snapshot:
    """A file at one moment: identity, liveness and every series."""

    path: str
    status: str  # alive, closed, dead or not-ready
    identity: L.Identity | None
    series: list[Series]
    version: tuple[int, int] | None
    size: int

    @property
    def name(self) -> str:
        return self.identity.publisher if self.identity else ""

    @property
    def pid(self) -> int:
        return self.identity.pid if self.identity else 0

    def to_json(self) -> dict[str, Any]:
        ident = self.identity
        return {
            "path": self.path,
            "name": self.name,
            "pid": self.pid,
            "state": self.status,
            "program": ident.program if ident else "",
            "instance": ident.instance_id.hex() if ident else "",
            "created": ident.created_ns / 1e9 if ident else None,
            "metrics": [s.to_json() for s in self.series],
        }


def series_plan(records: list[L.Record], memo: SnapshotMemo) -> Plan:
    """For these records: their Series' fields but the value, the offsets of the words read in one bulk
    read, and (position, record) of those whose value is not a plain (integer counter) word: decoded."""
    protos: list[dict[str, Any]] = []
    offsets: list[int] = []
    others: list[tuple[int, L.Record]] = []
    counter, flag_float, shared = L.MetricType.COUNTER, L.FLAG_FLOAT, memo.fields
    for r in records:
        if not r.known:
            continue
        fields = shared.get(id(r))
        if fields is None:
            spec = r.spec
            fields = shared[id(r)] = {
                "name": spec.name, "type": TYPE_NAMES[spec.mtype], "help": spec.help, "unit": spec.unit,
                "labels": dict(spec.labels), "value": None, "record": r,
            }  # fmt: skip
        if r.spec.mtype != counter or r.spec.flags & flag_float:
            others.append((len(protos), r))
            offsets.append(r.offset)  # a word read in bulk and replaced: the record's start (an info has no value area)
        else:
            offsets.append(r.value_offset)
        protos.append(fields)
    return protos, offsets, others, records


#: A Snapshot's plan for some records: (fields, value offsets, others, the records planned).
Plan = tuple[list[dict[str, Any]], list[int], list[tuple[int, L.Record]], list[L.Record]]


class SnapshotMemo:
    """What ``Reader._snapshot`` keeps across the files of one program read together (``render.read_snapshots``).

    ``fields``: id(record) -> its Series' fields (each entry holds its record, so the id stays its own);
    ``plans``: a template (``record_table``) -> the plan of its records.
    """

    __slots__ = ("fields", "plans")

    def __init__(self) -> None:
        self.fields: dict[int, dict[str, Any]] = {}
        self.plans: dict[Any, Plan] = {}


def build_series(protos: list[dict[str, Any]], values: list[Any]) -> list[Series]:
    """One Series per (fields, value), built without the frozen dataclass' __init__ (seven
    object.__setattr__ calls, ~1.5 us here): a copy of its record's fields with its value, the
    instance dict __init__ would leave (tests/test_show_many.py holds them equal)."""
    series, new, setattr_ = [], object.__new__, object.__setattr__
    for fields, v in zip(protos, values, strict=True):
        own = fields.copy()  # its labels dict is shared with the series of this record in other files
        own["value"] = v
        item = new(Series)
        setattr_(item, "__dict__", own)
        series.append(item)
    return series
