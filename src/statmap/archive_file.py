"""The archive file: its names, its bookkeeping series, how it is written and read.

One archive per publisher name, ``PUBLISHER.archive.statmap``, beside the
process files it absorbed (``archive.py`` folds them in; ``collect.py``
reads it after the process files). It is an ordinary statmap file (format
1.0): state *closed*, pid 0, program ``statmap-archive``; one record per
archived series, holding the sum over every process it absorbed, plus
bookkeeping records that collectors do not aggregate:

* ``statmap_archive_absorbed`` (text): one line ``INSTANCE_HEX ABSORBED_NS``
  per absorbed process file that may still be visible to someone;
* ``statmap_archive_gone`` (text): ``INSTANCE_HEX NS`` for absorbed ids whose
  file a cleaner has seen gone, and since when;
* ``statmap_archive_processes`` (counter): how many process files it holds.

Gauges, text, enum and info of an ended process are not archived: they
describe a process that no longer exists. A gauge summed across processes
(``aggregate="sum"``) leaves its declaration, as an ordinary gauge record
holding 0 that collectors do not count: the sum over no process is 0, and a
collector started while no process is alive still knows the family (so
``http_requests_in_flight`` reads 0 instead of vanishing). Older collectors
that add that 0 in get the same sum.

Below the cleaner (``archive.py``) and the collector; the value bytes come
from ``_layout``.
"""

from __future__ import annotations

import os
import stat
import time
from math import inf
from typing import Any

from . import _layout as L
from .directory import not_regular_problem
from .discover import FILE_SUFFIX
from .errors import FormatError
from .kinds import KINDS, MODE
from .reader import Reader

#: Archive files: ``PUBLISHER.archive.statmap``; their pid is 0.
ARCHIVE_SUFFIX = ".archive" + FILE_SUFFIX
#: Series of an archive that are its own bookkeeping, not metrics.
ARCHIVE_PREFIX = "statmap_archive_"
ABSORBED_SERIES = ARCHIVE_PREFIX + "absorbed"
PROCESSES_SERIES = ARCHIVE_PREFIX + "processes"
GONE_SERIES = ARCHIVE_PREFIX + "gone"  # when a cleaner first saw an absorbed file gone
ARCHIVE_PROGRAM = "statmap-archive"


def is_archive_name(name: str) -> bool:
    return name.endswith(ARCHIVE_SUFFIX)


def archive_path(directory: str, publisher: str) -> str:
    return os.path.join(directory, publisher + ARCHIVE_SUFFIX)


def lock_name(publisher: str) -> str:
    """The hidden file a cleaner locks while it folds into ``publisher``'s archive."""
    return f".{publisher}.archive.lock"


def parse_absorbed(text: str) -> dict[bytes, int]:
    """The archive's bookkeeping text: ``INSTANCE_HEX ABSORBED_NS`` per line -> {instance: ns}."""
    out: dict[bytes, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2:
            continue
        try:
            out[bytes.fromhex(parts[0])] = int(parts[1])
        except ValueError:
            continue
    return out


def declared_only(spec: L.RecordSpec) -> bool:
    """A summed gauge: the archive keeps its declaration (value 0), not its value."""
    return KINDS[spec.mtype].merge == MODE and spec.aggregation & 0xFF == L.Aggregation.SUM


def archived(spec: L.RecordSpec) -> bool:
    """The archive keeps the dead processes' values of this kind (the summed ones: table of kinds)."""
    return KINDS[spec.mtype].archived


class Entry:
    """The running sum of one archived series."""

    __slots__ = ("spec", "total")

    def __init__(self, spec: L.RecordSpec) -> None:
        # The archive keeps what identifies the series, and its metadata; aggregation modes only
        # for a declared gauge (process files must find the same mode: collect.py checks it).
        self.spec = L.RecordSpec(
            mtype=spec.mtype, name=spec.name, help=spec.help, unit=spec.unit, labels=spec.labels,
            flags=spec.flags, bounds=spec.bounds, aggregation=spec.aggregation if declared_only(spec) else 0,
            capacity=spec.capacity if spec.mtype == L.MetricType.EXP_HISTOGRAM else 0,  # its buckets per sign
        )  # fmt: skip
        zero = KINDS[spec.mtype].zero
        self.total: Any = zero(spec) if zero is not None else 0.0  # a declared gauge: no total

    def compatible(self, spec: L.RecordSpec) -> str | None:
        mine = self.spec
        if spec.mtype != mine.mtype or spec.flags != mine.flags:
            return f"{spec.name}: type or flags differ from the archive's"
        if spec.bounds != mine.bounds:
            return f"{spec.name}: histogram bounds differ from the archive's"
        return None

    def add(self, value: Any) -> None:
        self.total = self.total + value  # numbers, HistogramValue, SummaryValue: all add up

    # The stored form's parts (numbers: the count; histograms: count, sum, bucket counts).
    @property
    def count(self) -> Any:
        return getattr(self.total, "count", self.total)

    @property
    def sum(self) -> float:
        return float(getattr(self.total, "sum", 0.0))

    @property
    def buckets(self) -> list[int]:
        counts = getattr(self.total, "counts", None)
        return counts() if counts is not None else []


def _value_bytes(entry: Entry) -> bytes:
    spec = entry.spec
    if spec.mtype == L.MetricType.GAUGE:
        return L.encode_gauge(0.0)  # a declaration (see the module's docstring)
    if spec.mtype == L.MetricType.COUNTER:
        return L.encode_counter(entry.count, spec.flags)
    if spec.mtype == L.MetricType.EXP_HISTOGRAM:
        return L.encode_latch(L.encode_exp_copy(*entry.total.slots(spec.capacity)))
    # Lifetime min and max (format 1.2) after the latch; unknown (absorbed from an older writer's
    # file) is stored crossed, +inf > -inf, which readers report as unknown (docs/format.md 5.1).
    lo, hi = entry.total.min, entry.total.max
    extremes = L.encode_extremes(lo, hi) if lo is not None and hi is not None else L.encode_extremes(inf, -inf)
    if spec.mtype == L.MetricType.SUMMARY:
        return L.encode_latch(L.encode_summary_copy(entry.count, entry.sum)) + extremes
    return L.encode_latch(L.encode_histogram_copy(entry.count, entry.sum, entry.buckets)) + extremes


def _record(spec: L.RecordSpec, value: bytes) -> bytes:
    record, value_rel = L.encode_record(spec)
    assert value_rel + len(value) == len(record)
    return record[:value_rel] + value


def _text_record(name: str, help: str, text: str) -> bytes:
    data = text.encode("utf-8")[: L.MAX_TEXT_CAPACITY]
    capacity = max(8, L.align8(len(data)))
    return _record(
        L.RecordSpec(L.MetricType.TEXT, name, help, capacity=capacity),
        L.encode_latch(L.encode_text_copy(data, capacity)),
    )


def _id_lines(ids: dict[bytes, int]) -> str:
    return "".join(f"{inst.hex()} {ns}\n" for inst, ns in sorted(ids.items(), key=lambda kv: kv[1]))


def encode_archive(
    publisher: str,
    entries: list[Entry],
    absorbed: dict[bytes, int],
    processes: int,
    created_ns: int = 0,
    gone: dict[bytes, int] | None = None,
) -> bytes:
    """The bytes of a complete archive file (state closed, pid 0).

    ``created_ns``: when the oldest process it absorbed was created: the time
    from which its totals count (exposed as ``_created``). ``gone``: for
    absorbed ids, when a cleaner first saw their file gone (see ``archive.fold``).
    """
    body = [_record(e.spec, _value_bytes(e)) for e in entries]
    lines = _id_lines(absorbed)
    body.append(_text_record(ABSORBED_SERIES, "process files folded into this archive: instance id, time (ns)", lines))
    body.append(
        _text_record(
            GONE_SERIES, "absorbed process files seen gone: instance id, first seen gone (ns)", _id_lines(gone or {})
        )
    )
    body.append(
        _record(
            L.RecordSpec(L.MetricType.COUNTER, PROCESSES_SERIES, "process files folded into this archive"),
            L.encode_counter(processes, 0),
        )
    )
    records = b"".join(body)
    end = L.HEADER_SIZE + len(records)
    capacity = (end + 4095) // 4096 * 4096
    now = time.time_ns()
    identity = L.Identity(
        pid=0, start_time=0, boot_id=bytes(16), instance_id=os.urandom(16), created_ns=created_ns or now,
        publisher=publisher, program=ARCHIVE_PROGRAM,
    )  # fmt: skip
    # Not live: the file is complete before anyone can open it, so its header is final at once.
    header = L.encode_header(identity, capacity, state=L.State.CLOSED, end=end, closed_ns=now)
    return header + records + bytes(capacity - end)


Key = tuple[str, tuple[tuple[str, str], ...]]


def read_archive(path: str) -> tuple[dict[Key, Entry], dict[bytes, int], int, int, dict[bytes, int]]:
    """The entries, absorbed ids, process count, creation time and gone ids of an archive (empty if there is none)."""
    entries: dict[Key, Entry] = {}
    absorbed: dict[bytes, int] = {}
    gone: dict[bytes, int] = {}
    processes = 0
    created_ns = 0
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return entries, absorbed, processes, created_ns, gone
    if not stat.S_ISREG(st.st_mode):
        raise FormatError(path, not_regular_problem(st.st_mode))  # never opened: no device, no FIFO
    try:
        reader = Reader(path)
    except FormatError as exc:
        if not os.path.lexists(path):
            return entries, absorbed, processes, created_ns, gone
        raise exc
    with reader:
        snap = reader.snapshot()
        if snap.identity is None or snap.identity.pid != 0:
            raise FormatError(path, "not an archive (not ready, or has a pid)")
        created_ns = snap.identity.created_ns
        for series in snap.series:
            spec = series.record.spec
            if spec.name == ABSORBED_SERIES:
                absorbed = parse_absorbed(series.value or "")
            elif spec.name == PROCESSES_SERIES:
                processes = int(series.value or 0)
            elif spec.name == GONE_SERIES:
                gone = parse_absorbed(series.value or "")
            elif spec.name.startswith(ARCHIVE_PREFIX):
                continue
            elif declared_only(spec):
                entries.setdefault((spec.name, spec.labels), Entry(spec))
            elif not archived(spec):
                continue
            else:
                if series.value is None:
                    raise FormatError(path, f"{spec.name}: value unreadable")
                entry = Entry(spec)
                entry.add(series.value)
                entries[(spec.name, spec.labels)] = entry
    return entries, absorbed, processes, created_ns, {i: t for i, t in gone.items() if i in absorbed}
