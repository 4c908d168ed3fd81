"""Reading exemplars (format 1.2, docs/format.md section 15): the latest per series and bucket, across files.

A collection gathers every file's exemplar records (``gather``), keeps the most recent exemplar (by its
timestamp) per (publisher, metric, labels, bucket), and the OpenMetrics exposition appends it to the
matching ``_total`` or ``_bucket`` line (``annotate``). Other formats do not carry exemplars.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from . import _layout as L
from ._knob_layout import decode_netstrings


@dataclass(frozen=True)
class Exemplar:
    value: float
    time_ns: int  # Unix time in nanoseconds
    labels: tuple[tuple[str, str], ...]
    pid: int  # the process that recorded it

    def openmetrics(self) -> str:
        """`` # {labels} value timestamp``: what follows a sample's value in OpenMetrics text."""
        labels = ",".join(f'{k}="{_escape(v)}"' for k, v in self.labels)
        seconds, ns = divmod(self.time_ns, 1_000_000_000)
        return f" # {{{labels}}} {_number(self.value)} {seconds}.{ns:09d}"

    def to_json(self) -> dict[str, Any]:
        return {"value": self.value, "time_ns": self.time_ns, "labels": dict(self.labels), "pid": self.pid}


#: (publisher, metric name, labels, bucket upper bound or None for a counter) -> the latest exemplar
Key = tuple[str, str, tuple[tuple[str, str], ...], float | None]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def decode(data: bytes) -> tuple[float, int, tuple[tuple[str, str], ...]] | None:
    """(value, Unix ns, labels) of an exemplar's text; None when empty (not written yet) or malformed."""
    try:
        fields = decode_netstrings(data, 2 + 2 * L.EXEMPLAR_MAX_CHARS)
        if len(fields) < 2 or len(fields) % 2 or not fields[1].isdigit():
            return None
        value = float(fields[0])
    except ValueError:
        return None
    return value, int(fields[1]), tuple(zip(fields[2::2], fields[3::2], strict=True))


def usable(record: L.Record) -> bool:
    """An exemplar record whose shape is the format's (else readers skip it, as an unknown record)."""
    spec = record.spec
    return (
        spec.mtype == L.EXEMPLAR
        and len(spec.bounds) <= 1
        and 0 < spec.capacity <= L.MAX_TEXT_CAPACITY
        and spec.capacity % 8 == 0
        and record.value_size == L.value_size(L.EXEMPLAR, 0, spec.capacity)
    )


def gather(sources: Iterable[tuple[Any, Any, Any]], out: dict[Key, Exemplar]) -> None:
    """Add the exemplars of each (source, file info, values) of a collection to ``out``, the latest winning."""
    for src, info, _values in sources:
        records = src.exemplars
        if not records or info.identity is None:
            continue
        publisher, pid = info.identity.publisher, info.identity.pid
        for record in records:
            spec = record.spec
            copy = src.reader.read_latch(record, L.text_copy_size(spec.capacity))
            text = L.decode_text(copy, spec.capacity) if copy is not None else None
            got = decode(text) if text else None
            if got is None:
                continue
            key = (publisher, spec.name, spec.labels, spec.bounds[0] if spec.bounds else None)
            old = out.get(key)
            if old is None or got[1] > old.time_ns:
                out[key] = Exemplar(got[0], got[1], got[2], pid)


def annotate(text: str, suffixes: dict[str, str]) -> str:
    """OpenMetrics ``text`` with ``suffixes[head]`` after the value of each sample line ``head value``."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        head, space, _value = line.rpartition(" ")
        if space and head in suffixes:
            lines[i] = line + suffixes[head]
    return "\n".join(lines)
