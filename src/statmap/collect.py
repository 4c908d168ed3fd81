"""Many processes: discovery, liveness and aggregation of a statmap directory.

``collect(directory)`` reads every process file in a directory (and the
archive of each publisher name, see ``archive.py``) and returns one
``Collection``: the liveness of every file, the errors found, and the
aggregated metric families.

Aggregation happens within a publisher name (the processes of one program):

* counters, histograms and summaries are summed (histograms bucket by
  bucket; their bounds must be identical, otherwise the file that disagrees
  is left out and an error names both files);
* gauges follow the mode recorded with the metric: one series per process
  (a ``pid`` label is added), sum, max, min or last (the value of the most
  recently created process); with ``live_only`` only live processes count;
  a sum over no process is 0 (a family seen once stays while its publisher
  has a file or an archive here: families do not come and go with workers);
* text, enum and info stay per process (with a ``pid`` label).

A ``Collector`` keeps one reader per file and remembers what it parsed, so a
repeated collection re-reads only values: counters and gauges in one bulk
call per file, multi-word values with the latch protocol. Files that are
corrupt or not ready are reported and skipped; they never break the
collection of the others.

Totals never go backwards: the archive of a publisher name is read *after*
its process files, and a process file whose instance the archive says it
absorbed is not counted again (see ``archive.py`` for why that is enough).
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

from . import _layout as L
from . import cells
from .archive import ABSORBED_SERIES, ARCHIVE_PREFIX, PROCESSES_SERIES, is_archive_name, parse_absorbed
from .archive import clean as clean_directory
from .discover import scan_directory
from .errors import CollectionError, FormatError, ResourceError
from .pattern import compile_pattern
from .reader import ALIVE, CLOSED, DEAD, NOT_READY, TYPE_NAMES, HistogramValue, Reader, SummaryValue

#: Status of a file that failed validation, and of an archive file.
CORRUPT, ARCHIVE = "corrupt", "archive"

_COUNTER, _GAUGE, _HISTOGRAM, _SUMMARY = (
    L.MetricType.COUNTER,
    L.MetricType.GAUGE,
    L.MetricType.HISTOGRAM,
    L.MetricType.SUMMARY,
)
_TEXT, _INFO, _ENUM = L.MetricType.TEXT, L.MetricType.INFO, L.MetricType.ENUM
_SUMMED = (_COUNTER, _HISTOGRAM, _SUMMARY)

_AGG_NAMES = {0: "per_process", 1: "sum", 2: "max", 3: "min", 4: "last"}


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
        return {"labels": dict(self.labels), "value": _json_value(self.value)}


def _json_value(value: Any) -> Any:
    if isinstance(value, (HistogramValue, SummaryValue)):
        return value.to_json()
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return "NaN" if value != value else ("+Inf" if value > 0 else "-Inf")
    return value


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
        return {
            "publisher": self.publisher,
            "name": self.name,
            "type": self.type,
            "help": self.help,
            "unit": self.unit,
            "aggregation": self.aggregation,
            "series": [s.to_json() for s in self.samples],
        }


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


# -- internal bookkeeping -------------------------------------------------------


class _Family:
    """Metadata of one metric name within one publisher name: fixed by the first file seen."""

    __slots__ = (
        "aggregation",
        "bounds",
        "declared_only",
        "first_path",
        "flags",
        "help",
        "label_names",
        "mtype",
        "name",
        "order",
        "publisher",
        "slots",
        "states",
        "unit",
    )  # fmt: skip

    def __init__(self, publisher: str, spec: L.RecordSpec, path: str, order: int) -> None:
        self.publisher = publisher
        self.name = spec.name
        self.mtype = spec.mtype
        self.flags = spec.flags
        self.aggregation = spec.aggregation if spec.mtype == _GAUGE else 0
        self.bounds = spec.bounds
        self.label_names = tuple(k for k, _ in spec.labels)
        self.help = spec.help
        self.unit = spec.unit
        self.first_path = path
        self.slots: dict[tuple[tuple[str, str], ...], _Slot] = {}
        self.order = order
        self.states = spec.extras if spec.mtype == _ENUM else ()
        self.declared_only = False  # known only from an archive's gauge declaration so far

    def mismatch(self, spec: L.RecordSpec) -> str | None:
        """Why a record cannot be aggregated with this family (None if it can)."""
        if spec.mtype != self.mtype:
            types = {int(k): v for k, v in TYPE_NAMES.items()}
            return f"type {types.get(spec.mtype, spec.mtype)} differs from {types.get(self.mtype)}"
        if spec.flags != self.flags:
            return f"flags {spec.flags:#x} differ from {self.flags:#x}"
        if spec.mtype == _GAUGE and spec.aggregation != self.aggregation:
            return f"gauge aggregation {spec.aggregation:#x} differs from {self.aggregation:#x}"
        if spec.bounds != self.bounds:
            return f"histogram bounds {_short(spec.bounds)} differ from {_short(self.bounds)}"
        names = tuple(k for k, _ in spec.labels)
        if names != self.label_names:
            return f"label names {names} differ from {self.label_names}"
        return None


def _short(bounds: tuple[float, ...]) -> str:
    if len(bounds) <= 6:
        return "(" + ", ".join(f"{b:g}" for b in bounds) + ")"
    return f"({bounds[0]:g}, {bounds[1]:g}, ... {bounds[-1]:g}; {len(bounds)} bounds)"


class _Slot:
    """One aggregated series: a family and a label set."""

    __slots__ = ("family", "index", "label_dict", "labels")

    def __init__(self, index: int, family: _Family, labels: tuple[tuple[str, str], ...]) -> None:
        self.index = index
        self.family = family
        self.labels = labels
        self.label_dict = dict(labels)


class _Source:
    """A cached reader for one file and what this collector derived from its records."""

    def __init__(self, path: str, inode: int, reader: Reader, is_archive: bool) -> None:
        self.path = path
        self.inode = inode
        self.reader = reader
        self.is_archive = is_archive
        self.classified = 0  # records looked at so far
        self.publisher: str | None = None
        self.int_off: list[int] = []
        self.int_slot: list[int] = []
        self.int_key: tuple[int, ...] = ()
        self.flt_off: list[int] = []
        self.flt_slot: list[int] = []
        self.gauge_off: list[int] = []
        self.gauge_slot: list[int] = []
        self.enums: list[tuple[int, int, tuple[str, ...]]] = []  # (offset, slot, states)
        self.latched: list[tuple[L.Record, int, int, int, Any]] = []  # (record, slot, offset, copy size, decoder)
        # histograms and summaries, read and summed in C (cells.sum_latches)
        self.sum_off: list[int] = []
        self.sum_size: list[int] = []
        self.sum_slot: list[int] = []
        self.sum_records: list[L.Record] = []
        self.sum_key: tuple[int, ...] = ()
        self.infos: list[tuple[int, dict[str, str]]] = []
        self.rejected: list[str] = []  # records that cannot be aggregated, as messages
        self.absorbed: frozenset[bytes] = frozenset()  # archives: instance ids they hold
        self.processes = 0  # archives: how many process files they hold
        self.last: dict[int, Any] = {}  # latched values by record offset, for a busy writer
        self.series = 0
        self.seen: set[int] = set()  # slots with a record in this file
        self.kept: dict[int, int] = {}  # gauges, enums, infos, texts: slot -> position in its list

    def close(self) -> None:
        self.reader.close()


def _inode(path: str) -> int | None:
    try:
        return os.stat(path, follow_symlinks=False).st_ino
    except OSError:
        return None


class Collector:
    """Collects a directory again and again, re-reading only values.

    ``publishers``: collect only these publisher names (default: all).
    ``clean``: before each collection, fold the files of dead and closed
    processes into their archive and remove them (see ``archive.clean``);
    ``clean_older_than``: only those that ended at least this many seconds ago.
    """

    def __init__(
        self,
        directory: str,
        *,
        publishers: Iterable[str] | None = None,
        clean: bool = False,
        clean_older_than: float = 0.0,
    ) -> None:
        self.directory = os.fspath(directory)
        self.publishers = frozenset(publishers) if publishers is not None else None
        self.clean = clean
        self.clean_older_than = clean_older_than
        self._sources: dict[str, _Source] = {}
        self._families: dict[tuple[str, str], _Family] = {}
        self._slots: list[_Slot] = []
        self._interned: dict[tuple[int, ...], tuple[int, ...]] = {}
        self._spec_slots: dict[int, tuple[L.RecordSpec, _Slot]] = {}  # id(spec) -> (spec, slot)
        self._dropped = False  # a source was dropped since the last collection

    def close(self) -> None:
        for src in self._sources.values():
            src.close()
        self._sources.clear()

    def __enter__(self) -> Collector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- files --------------------------------------------------------------

    def _scan(self) -> list[tuple[str, int]]:
        """(name, inode) of every published file, sorted by name; hidden files are left out."""
        try:
            return scan_directory(self.directory)
        except OSError as exc:  # out of descriptors, permission...: not an empty directory
            kind = ResourceError if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM) else CollectionError
            raise kind(f"{self.directory}: cannot list the directory: {exc.strerror or exc}") from None

    def _source(self, name: str, inode: int) -> _Source:
        path = os.path.join(self.directory, name)
        src = self._sources.get(name)
        if src is not None and src.inode != inode:
            src.close()
            src = None
        if src is None:
            reader = Reader(path)  # FormatError if it cannot be opened
            src = _Source(path, inode, reader, is_archive_name(name))
            self._sources[name] = src
        return src

    def _drop(self, name: str) -> None:
        src = self._sources.pop(name, None)
        if src is not None:
            src.close()
            self._dropped = True

    def _forget_specs(self) -> None:
        """Files went away: let go of the metadata only they held (the readers' shared cache did already)."""
        self._dropped = False
        live = {id(r.spec) for src in self._sources.values() for r in src.reader.records}
        self._spec_slots = {k: v for k, v in self._spec_slots.items() if k in live}

    # -- records ---------------------------------------------------------

    def _classify(self, src: _Source, publisher: str) -> None:
        records = src.reader.records
        if src.classified == len(records):
            return
        if src.publisher is None:
            src.publisher = publisher
        for record in records[src.classified :]:
            src.classified += 1
            if not record.known:
                continue
            spec = record.spec
            if src.is_archive and spec.name.startswith(ARCHIVE_PREFIX):
                if spec.name == ABSORBED_SERIES and spec.mtype == _TEXT:
                    value = src.reader.value(record)
                    src.absorbed = frozenset(parse_absorbed(value or ""))
                elif spec.name == PROCESSES_SERIES and spec.mtype == _COUNTER:
                    src.processes = int(src.reader.value(record) or 0)
                continue
            # Readers share decoded metadata between files, so the same spec object
            # comes back for every process of a program: check it once.
            known = self._spec_slots.get(id(spec))
            fkey = (publisher, spec.name)
            if (
                known is not None
                and known[0] is spec
                and known[1].family.publisher == publisher
                and self._families.get(fkey) is known[1].family
            ):
                slot = known[1]
            else:
                fam = self._families.get(fkey)
                declaration = src.is_archive and spec.mtype == _GAUGE  # a summed gauge's declaration (archive.py)
                if fam is not None and fam.mismatch(spec) is not None:
                    if declaration:
                        continue  # an outdated declaration: the processes' metric wins, nothing is lost
                    if fam.declared_only:
                        fam = None  # the program now declares it otherwise: its processes redefine it
                    else:
                        src.rejected.append(f"{spec.name}: {fam.mismatch(spec)} in {fam.first_path}; left out")
                        continue
                if fam is None:
                    fam = self._families[fkey] = _Family(publisher, spec, src.path, len(self._families))
                    fam.declared_only = declaration
                elif not declaration:
                    fam.declared_only = False
                found = fam.slots.get(spec.labels)
                if found is None:
                    found = fam.slots[spec.labels] = _Slot(len(self._slots), fam, spec.labels)
                    self._slots.append(found)
                slot = found
                self._spec_slots[id(spec)] = (spec, slot)
            # A second record for the same series in one file (docs/format.md,
            # "Duplicate records"): counters, histograms and summaries add up
            # below like records of different files; the others keep the last.
            if slot.index in src.seen:
                if self._replace(src, record, slot.index):
                    continue
            else:
                src.seen.add(slot.index)
                src.series += 1
            mtype = spec.mtype
            if mtype == _COUNTER:
                if spec.flags & L.FLAG_FLOAT:
                    src.flt_off.append(record.value_offset)
                    src.flt_slot.append(slot.index)
                else:
                    src.int_off.append(record.value_offset)
                    src.int_slot.append(slot.index)
            elif mtype == _GAUGE:
                if not src.is_archive:  # an archive's gauge only declares the family (archive.py): no value
                    src.kept[slot.index] = len(src.gauge_off)
                    src.gauge_off.append(record.value_offset)
                    src.gauge_slot.append(slot.index)
            elif mtype == _ENUM:
                src.kept[slot.index] = len(src.enums)
                src.enums.append((record.value_offset, slot.index, spec.extras))
            elif mtype == _INFO:
                src.kept[slot.index] = len(src.infos)
                src.infos.append((slot.index, dict(zip(spec.extras[::2], spec.extras[1::2], strict=False))))
            elif mtype in (_HISTOGRAM, _SUMMARY):
                size = L.histogram_copy_size(len(spec.bounds)) if mtype == _HISTOGRAM else L.SUMMARY_COPY_SIZE
                src.sum_off.append(record.value_offset)
                src.sum_size.append(size)
                src.sum_slot.append(slot.index)
                src.sum_records.append(record)
            else:
                src.kept[slot.index] = len(src.latched)
                src.latched.append((record, slot.index, record.value_offset, 0, None))
        # Files whose integer counters sit in the same slots at the same offsets
        # share one key, and are summed together in one sum_words() call.
        key = (*src.int_slot, -1, *src.int_off)
        src.int_key = self._interned.setdefault(key, key)
        key = (*src.sum_slot, -1, *src.sum_off, -2, *src.sum_size)
        src.sum_key = self._interned.setdefault(key, key)

    @staticmethod
    def _replace(src: _Source, record: L.Record, slot: int) -> bool:
        """A later record of a gauge, enum, info or text series of ``src`` replaces the earlier one."""
        at = src.kept.get(slot)
        if at is None:
            return False  # summed types: added up like records of different files
        spec, mtype = record.spec, record.spec.mtype
        if mtype == _GAUGE:
            src.gauge_off[at] = record.value_offset
        elif mtype == _ENUM:
            src.enums[at] = (record.value_offset, slot, spec.extras)
        elif mtype == _INFO:
            src.infos[at] = (slot, dict(zip(spec.extras[::2], spec.extras[1::2], strict=False)))
        else:
            src.latched[at] = (record, slot, record.value_offset, 0, None)
        return True

    # -- one collection ------------------------------------------------------

    def collect(self) -> Collection:
        if self.clean:
            clean_directory(self.directory, older_than=self.clean_older_than, publishers=self.publishers)
        now = time.time()
        files: list[FileInfo] = []
        errors: list[CollectError] = []
        scanned = self._scan()
        present = {name for name, _ in scanned}
        for name in list(self._sources):
            if name not in present:
                self._drop(name)
        if self._dropped:
            self._forget_specs()
        # Process files first, archives last (see the module's docstring).
        order = [e for e in scanned if not is_archive_name(e[0])] + [e for e in scanned if is_archive_name(e[0])]
        readings: list[tuple[_Source, FileInfo, tuple[Any, ...]]] = []
        retries: dict[str, int] = {}
        for name, inode in order:
            path = os.path.join(self.directory, name)
            archive = is_archive_name(name)
            if archive:
                # An archive is replaced by rename: look at the path now, not at the listing.
                try:
                    inode = os.stat(path, follow_symlinks=False).st_ino
                except FileNotFoundError:
                    continue
            try:
                src = self._source(name, inode)
                status, header, size = src.reader.poll()
                info = FileInfo(path, status, size=size)
                if header is None:
                    files.append(info)
                    continue
                info.identity = header.identity
                info.closed_ns = header.closed_ns
                publisher = header.identity.publisher
                if self.publishers is not None and publisher not in self.publishers:
                    continue
                if archive:
                    if header.identity.pid != 0:
                        self._drop(name)
                        problem = "named like an archive but has a pid; ignored"
                        files.append(FileInfo(path, CORRUPT, error=problem))
                        errors.append(CollectError(path, problem))
                        continue
                    info.status = ARCHIVE
                self._classify(src, publisher)
                info.series = src.series
                values = self._read_values(src)
            except FileNotFoundError:
                self._drop(name)  # removed since the listing: a cleaner folded it (the archive has it)
                continue
            except (FormatError, OSError, ValueError) as exc:
                self._drop(name)
                if not os.path.lexists(path):
                    continue  # removed since the listing (as above)
                problem = exc.problem if isinstance(exc, FormatError) else str(exc)
                if archive and retries.get(name, 0) < 3 and _inode(path) not in (inode, None):
                    retries[name] = retries.get(name, 0) + 1
                    order.append((name, 0))  # replaced by a newer archive while we read it: read that one
                    continue
                if archive:
                    # Leaving an archive out would lower totals (a counter reset to
                    # Prometheus): the collection fails and says why instead.
                    why = f"{path}: archive unreadable, totals would be incomplete: {problem}"
                    raise CollectionError(why) from None
                info = FileInfo(path, CORRUPT, error=problem)
                files.append(info)
                errors.append(CollectError(path, problem))
                continue
            for problem in src.rejected:
                errors.append(CollectError(path, problem))
            if archive:
                info.absorbed_count = src.processes
            files.append(info)
            readings.append((src, info, values))
        # Anything an archive absorbed is counted by the archive only.
        absorbed: set[tuple[str, bytes]] = set()
        for src, _info, _ in readings:
            if src.is_archive:
                absorbed.update((src.publisher or "", inst) for inst in src.absorbed)
        if absorbed:
            for src, info, _ in readings:
                ident = info.identity
                if not src.is_archive and ident is not None and (ident.publisher, ident.instance_id) in absorbed:
                    info.absorbed = True
        counted = [(src, info, values) for src, info, values in readings if not info.absorbed]
        families = self._aggregate(counted, errors)
        created: dict[str, float] = {}
        for _src, info, _ in counted:
            ident = info.identity
            if ident is not None and ident.created_ns:
                t = ident.created_ns / 1e9
                if t < created.get(ident.publisher, float("inf")):
                    created[ident.publisher] = t
        return Collection(self.directory, now, files, families, errors, created)

    def _read_values(self, src: _Source) -> tuple[Any, ...]:
        """Read every value of one file; raises FormatError if one is corrupt."""
        reader = src.reader
        ints = None  # integer counters are summed straight from the mappings (_aggregate)
        flts = L.floats_from_bits(reader.load_words(src.flt_off))
        gauges = L.floats_from_bits(reader.load_words(src.gauge_off))
        enums = reader.load_words([e[0] for e in src.enums]) if src.enums else []
        summed: list[Any] = []
        if src.sum_off:
            summed = self._read_sums(src)
        latched: list[Any] = []
        buffer, read_latch, last = reader.buffer, cells.read_latch, src.last
        for record, _slot, offset, size, unpack in src.latched:
            if unpack is None:  # text
                value = reader.value(record)
            else:
                data = read_latch(buffer, offset, size)
                if data is None:
                    data = reader.read_latch(record, size)  # retries, then gives up
                if data is None:
                    value = None
                else:
                    value = unpack(data)  # histogram: count, sum, n + 1 bucket counts; summary: count, sum
                    if len(value) > 2 and sum(value[2:]) != value[0]:
                        raise FormatError(
                            src.path,
                            f"histogram {record.spec.name}: bucket counts sum to {sum(value[2:])}, count is {value[0]}",
                        )
            if value is None:  # the writer kept it moving: use the last value read
                value = last.get(offset)
            else:
                last[offset] = value
            latched.append(value)
        return ints, flts, gauges, enums, latched, summed

    @staticmethod
    def _read_sums(src: _Source) -> list[Any]:
        """This file's histograms and summaries, checked, in one call; a busy writer's latch: its last value."""
        try:
            values = cells.sum_latches([src.reader.buffer], src.sum_off, src.sum_size)
        except ValueError as exc:  # a count that disagrees with its buckets ("buffer 0: histogram at N: ...")
            raise FormatError(src.path, str(exc).removeprefix("buffer 0: ")) from None
        except OverflowError:
            values = None  # cannot happen for one file of u64 counts; be safe
        if values is None:  # some writer kept a latch moving: read one by one, keep last values
            values = []
            value: Any
            for record, offset, size in zip(src.sum_records, src.sum_off, src.sum_size, strict=True):
                data = src.reader.read_latch(record, size)
                if data is None:
                    value = src.last.get(offset)
                else:
                    words = L.decode_counts_copy(data)
                    if len(words) > 2 and sum(words[2:]) != words[0]:
                        raise FormatError(
                            src.path, f"histogram {record.spec.name}: bucket counts do not sum to its count"
                        )
                    value = words
                    src.last[offset] = value
                values.append(value)
        return values

    # -- aggregation -------------------------------------------------------------

    def _aggregate(
        self, readings: list[tuple[_Source, FileInfo, tuple[Any, ...]]], errors: list[CollectError]
    ) -> list[MetricFamily]:
        nslots = len(self._slots)
        acc: list[Any] = [0] * nslots
        present: set[int] = set()
        per_process: dict[int, list[tuple[FileInfo, Any]]] = {}
        multi: dict[int, list[Any]] = {}  # histograms and summaries: (count, sum[, buckets]) per file

        # Integer counters: files with the same layout are summed column by
        # column, in C, straight from their mappings.
        groups: dict[int, tuple[_Source, list[Any]]] = {}
        for src, _info, _values in readings:
            if src.int_key:
                g = groups.get(id(src.int_key))
                if g is None:
                    groups[id(src.int_key)] = (src, [src.reader.buffer])
                else:
                    g[1].append(src.reader.buffer)
        for first, buffers in groups.values():
            present.update(first.int_slot)
            for s, v in zip(first.int_slot, cells.sum_words(buffers, first.int_off), strict=True):
                acc[s] += v

        # Histograms and summaries: files with the same layout summed in C;
        # each group's total is one more part of its slots' sums.
        sum_groups: dict[int, tuple[_Source, list[Any], list[list[Any]]]] = {}
        for src, _info, values in readings:
            if src.sum_key:
                sg = sum_groups.get(id(src.sum_key))
                if sg is None:
                    sum_groups[id(src.sum_key)] = (src, [src.reader.buffer], [values[5]])
                else:
                    sg[1].append(src.reader.buffer)
                    sg[2].append(values[5])
        for first, buffers, per_file in sum_groups.values():
            totals: list[Any] | None = per_file[0] if len(per_file) == 1 else None
            if totals is None and all(v is not None for file_values in per_file for v in file_values):
                try:
                    totals = cells.sum_latches(buffers, first.sum_off, first.sum_size)
                except (ValueError, OverflowError):
                    totals = None  # changed since it was checked: sum what was read
            if totals is None:  # the same sums in Python, leaving out what could not be read
                totals = []
                for column in zip(*per_file, strict=True):
                    got = [v for v in column if v is not None]
                    totals.append([sum(c) for c in zip(*got, strict=True)] if got else None)
            for s, record, value in zip(first.sum_slot, first.sum_records, totals, strict=True):
                if value is None:
                    errors.append(CollectError(first.path, f"{record.spec.name}: value unreadable (writer busy)"))
                    continue
                present.add(s)
                multi.setdefault(s, []).append(value)

        for src, info, values in readings:
            _ints, flts, gauges, enums, latched, _summed = values
            for s, v in zip(src.flt_slot, flts, strict=False):
                acc[s] += v
            present.update(src.flt_slot)
            for s, v in zip(src.gauge_slot, gauges, strict=False):
                per_process.setdefault(s, []).append((info, v))
            for (_off, s, states), index in zip(src.enums, enums, strict=False):
                per_process.setdefault(s, []).append((info, states[index] if index < len(states) else None))
            for s, d in src.infos:
                per_process.setdefault(s, []).append((info, d))
            for (record, s, *_), value in zip(src.latched, latched, strict=False):
                if value is None:
                    errors.append(CollectError(src.path, f"{record.spec.name}: value unreadable (writer busy)"))
                    continue
                mtype = record.spec.mtype
                if mtype == _TEXT:
                    per_process.setdefault(s, []).append((info, value))
                    continue
                present.add(s)
                parts = multi.get(s)
                if parts is None:
                    multi[s] = [value]
                else:
                    parts.append(value)

        for s, parts in multi.items():
            acc[s] = parts[0] if len(parts) == 1 else [sum(column) for column in zip(*parts, strict=False)]
        pid_labels = self._pid_labels(readings)
        out: dict[tuple[str, str], MetricFamily] = {}
        # Every family this collector has seen stays while its publisher has a file or an archive
        # here, even when no file has a value for it now (workers replaced): families do not come
        # and go with worker churn, and a summed gauge nobody contributes to reads 0.
        publishers = {src.publisher for src, _info, _values in readings}
        families_now = self._families
        for s, slot in enumerate(self._slots):
            fam = slot.family
            if fam.publisher not in publishers or families_now.get((fam.publisher, fam.name)) is not fam:
                continue  # not here now, or a declaration its processes redefined
            mf = out.get((fam.publisher, fam.name))
            if mf is None:
                mf = out[(fam.publisher, fam.name)] = _family_view(fam)
            summed_gauge = fam.mtype == _GAUGE and fam.aggregation & 0xFF == L.Aggregation.SUM
            if s not in present and s not in per_process:
                if summed_gauge:
                    mf.samples.append(Sample(slot.label_dict, 0.0, None, slot.labels))
                continue
            if s in present:
                value = acc[s]
                if fam.mtype == _HISTOGRAM:
                    value = _histogram(fam, value)
                elif fam.mtype == _SUMMARY:
                    value = SummaryValue(value[0], value[1])
                mf.samples.append(Sample(slot.label_dict, value, None, slot.labels))
                continue
            contributions = per_process[s]
            mode = fam.aggregation & 0xFF if fam.mtype == _GAUGE else 0
            if fam.mtype == _GAUGE and fam.aggregation & L.AGG_LIVE_ONLY:
                contributions = [(i, v) for i, v in contributions if i.status == ALIVE]
            if mode and fam.mtype == _GAUGE:
                if not contributions:
                    if summed_gauge:  # the sum over no process
                        mf.samples.append(Sample(slot.label_dict, 0.0, None, slot.labels))
                    continue
                vals = [v for _, v in contributions]
                if mode == L.Aggregation.SUM:
                    value = sum(vals)
                elif mode == L.Aggregation.MAX:
                    value = max(vals)
                elif mode == L.Aggregation.MIN:
                    value = min(vals)
                else:  # LAST, or a mode from a newer minor version
                    value = max(contributions, key=lambda c: c[0].identity.created_ns)[1]  # type: ignore[union-attr]
                mf.samples.append(Sample(slot.label_dict, value, None, slot.labels))
                continue
            for info, value in sorted(contributions, key=lambda c: c[0].pid):
                if value is None:
                    continue
                pid = pid_labels.get(info.path, str(info.pid))
                labels = dict(slot.labels)
                labels["pid"] = pid
                mf.samples.append(Sample(labels, value, info.pid, (slot.labels, pid)))
        families = list(out.values())  # with families that have no series now (see above)
        families.sort(key=lambda m: (m.name, m.publisher))
        return families

    @staticmethod
    def _pid_labels(readings: list[tuple[_Source, FileInfo, tuple[Any, ...]]]) -> dict[str, str]:
        """``pid`` label values; files of one publisher sharing a pid (reuse, containers) get ``PID:INSTANCE8``."""
        by_pid: dict[tuple[str, int], list[FileInfo]] = {}
        for _src, info, _ in readings:
            if info.identity is not None and info.status != ARCHIVE:
                by_pid.setdefault((info.name, info.pid), []).append(info)
        out: dict[str, str] = {}
        for (_, pid), infos in by_pid.items():
            if len(infos) > 1:
                infos.sort(key=lambda i: i.identity.created_ns)  # type: ignore[union-attr]
                for info in infos[:-1]:  # the newest keeps the plain pid
                    out[info.path] = f"{pid}:{info.identity.instance_id[:4].hex()}"  # type: ignore[union-attr]
        return out


_UNPACKERS: dict[int, Any] = {}


def _histogram(fam: _Family, summed: Any) -> HistogramValue:
    """count, sum and non-cumulative bucket counts -> a HistogramValue (cumulative buckets)."""
    cumulative = list(accumulate(summed[2:]))
    buckets = tuple(zip((*fam.bounds, float("inf")), cumulative, strict=False))
    return HistogramValue(summed[0], summed[1], buckets, bool(fam.flags & L.FLAG_LOG_BUCKETS))


def _family_view(fam: _Family) -> MetricFamily:
    if fam.mtype == _GAUGE:
        agg = _AGG_NAMES.get(fam.aggregation & 0xFF, "last")
    elif fam.mtype in _SUMMED:
        agg = "sum"
    else:
        agg = "per_process"
    return MetricFamily(
        publisher=fam.publisher,
        name=fam.name,
        type=TYPE_NAMES[L.MetricType(fam.mtype)],
        help=fam.help,
        unit=fam.unit,
        aggregation=agg,
        live_only=bool(fam.mtype == _GAUGE and fam.aggregation & L.AGG_LIVE_ONLY),
        float_counter=bool(fam.mtype == _COUNTER and fam.flags & L.FLAG_FLOAT),
        bounds=fam.bounds,
        key=(fam.publisher, fam.name),
        states=fam.states,
    )


def collect(directory: str, **options: Any) -> Collection:
    """One collection of ``directory`` (see ``Collector`` for the options)."""
    with Collector(directory, **options) as collector:
        return collector.collect()


def match_families(families: Iterable[MetricFamily], pattern: str | None) -> Iterator[MetricFamily]:
    """Families whose name (or ``publisher:name``) matches ``pattern`` anywhere (as ``re.search``).

    ``pattern`` is a statmap pattern (``statmap.pattern``): it often comes
    from an HTTP client, so it is matched in linear time, never by ``re``;
    ``PatternError`` (a ``re.error``) for one it refuses.
    """
    if not pattern:
        yield from families
        return
    rx = compile_pattern(pattern)
    for fam in families:
        if rx.search(fam.name) or rx.search(f"{fam.publisher}:{fam.name}"):
            yield fam


__all__ = [
    "ALIVE",
    "ARCHIVE",
    "CLOSED",
    "CORRUPT",
    "DEAD",
    "NOT_READY",
    "CollectError",
    "Collection",
    "Collector",
    "FileInfo",
    "MetricFamily",
    "Sample",
    "collect",
]
