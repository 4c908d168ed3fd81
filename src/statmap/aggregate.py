"""The collector's bookkeeping and its aggregation across processes.

``collect.Collector`` classifies each file's records into the lists of a
``_Source`` (one bulk read per way of reading, see ``kinds``), each series
into a ``_Slot`` of a ``_Family``; ``aggregate`` then merges the values of
every file as the family's kind says (summed, by the gauge's mode, or per
process) into the ``MetricFamily`` results.
"""

from __future__ import annotations

from dataclasses import replace
from functools import reduce
from operator import add, itemgetter
from typing import Any, NamedTuple, cast

from . import _layout as L
from . import cells
from .kinds import COUNT, KINDS, MODE, STATE, SUM, TYPE_NAMES, Kind
from .reader import ALIVE, Reader
from .results import ARCHIVE, CollectError, FileInfo, MetricFamily, Sample

_first = itemgetter(0)  # a label pair's name

_AGG_NAMES = {0: "per_process", 1: "sum", 2: "max", 3: "min", 4: "last"}


class _Family:
    """Metadata of one metric name within one publisher name: fixed by the first file seen."""

    __slots__ = (
        "aggregation",
        "bounds",
        "declared_only",
        "first_path",
        "flags",
        "help",
        "kind",
        "label_names",
        "last",
        "last_ints",
        "mtype",
        "name",
        "order",
        "publisher",
        "rows",
        "run",
        "slots",
        "states",
        "unit",
    )  # fmt: skip

    def __init__(self, publisher: str, spec: L.RecordSpec, path: str, order: int) -> None:
        self.publisher = publisher
        self.name = spec.name
        self.mtype = spec.mtype
        self.flags = spec.flags
        self.kind: Kind = KINDS[spec.mtype]
        self.aggregation = spec.aggregation if self.kind.merge == MODE else 0
        self.bounds = spec.bounds
        self.label_names = tuple(map(_first, spec.labels))
        self.help = spec.help
        self.unit = spec.unit
        self.first_path = path
        self.slots: dict[tuple[tuple[str, str], ...], _Slot] = {}
        # (index, label dict, labels) of every slot, in slot order: the hot loop's view of
        # ``slots`` (slots are only ever added), rebuilt when a slot was added
        self.rows: list[tuple[int, dict[str, str], tuple[tuple[str, str], ...]]] = []
        self.run: tuple[int, int] | None = None  # the rows' slots are a..b-1 in order
        self.last: list[Sample | None] = []  # summed kinds: the Sample of each row at the last collection
        # integer counters whose slots are a run a..b-1, every row present last time: (a, b, their values)
        self.last_ints: tuple[int, int, list[Any]] | None = None
        self.order = order
        self.states = spec.extras if self.kind.read == STATE else ()
        self.declared_only = False  # known only from an archive's gauge declaration so far

    def mismatch(self, spec: L.RecordSpec) -> str | None:
        """Why a record cannot be aggregated with this family (None if it can)."""
        if (  # the usual answer first, in one expression (once per distinct record of a first scrape)
            spec.mtype == self.mtype
            and spec.flags == self.flags
            and spec.bounds == self.bounds
            and (spec.aggregation == self.aggregation or self.kind.merge != MODE)
            and tuple(map(_first, spec.labels)) == self.label_names
        ):
            return None
        if spec.mtype != self.mtype:
            return f"type {TYPE_NAMES.get(spec.mtype, spec.mtype)} differs from {TYPE_NAMES.get(self.mtype)}"
        if spec.flags != self.flags:
            return f"flags {spec.flags:#x} differ from {self.flags:#x}"
        if self.kind.merge == MODE and spec.aggregation != self.aggregation:
            return f"gauge aggregation {spec.aggregation:#x} differs from {self.aggregation:#x}"
        if spec.bounds != self.bounds:
            return f"histogram bounds {_short(spec.bounds)} differ from {_short(self.bounds)}"
        names = tuple(map(_first, spec.labels))
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
        self.int_run: tuple[int, int] | None = None  # int_slot is range(a, b): (a, b)
        self.flt_off: list[int] = []
        self.flt_slot: list[int] = []
        self.gauge_off: list[int] = []
        self.gauge_slot: list[int] = []
        self.enums: list[tuple[int, int, tuple[str, ...]]] = []  # (offset, slot, states)
        self.texts: list[tuple[L.Record, int]] = []  # (record, slot)
        self.merges: list[tuple[L.Record, int]] = []  # (record, slot): MERGE kinds, read whole and added
        self.exemplars: list[L.Record] = []  # exemplar records (format 1.2): exemplar_read.gather
        # histograms and summaries, read and summed in C (cells.sum_latches)
        self.sum_off: list[int] = []
        self.sum_size: list[int] = []
        self.sum_slot: list[int] = []
        self.sum_records: list[L.Record] = []
        self.sum_ext: list[int] = []  # where each one's lifetime (min, max) is (format 1.2), or -1: none
        self.sum_key: tuple[int, ...] = ()
        self.infos: list[tuple[int, dict[str, str]]] = []
        self.rejected: list[str] = []  # records that cannot be aggregated, as messages
        self.absorbed: frozenset[bytes] = frozenset()  # archives: instance ids they hold
        self.processes = 0  # archives: how many process files they hold
        self.last: dict[int, Any] = {}  # latched values by record offset, for a busy writer
        self.series = 0
        # values read one list at a time (not only integer counters and latches): set by classifying
        self.mixed = False
        self.seen: set[int] = set()  # slots with a record in this file
        self.kept: dict[int, int] = {}  # gauges, enums, infos, texts: slot -> position in its list
        self.steady: Any = None  # what the reader's last full poll left for steady.poll (Reader.steady)
        self.lane: Any = None  # (steady, header) when the last scrape took this file whole (collect)
        self.shared = False  # its classification lists are shared with files of the same template (collect)

    def close(self) -> None:
        self.reader.close()


class _Values(NamedTuple):
    """The values of one file read by one collection, in the order of its _Source's lists."""

    flts: tuple[float, ...]  # float counters
    gauges: tuple[float, ...]
    enums: list[int]  # state indexes
    texts: list[Any]  # str, or None when unreadable
    summed: list[Any]  # histograms and summaries: (count, sum[, bucket counts]) words, or None
    merged: tuple[Any, ...] | list[Any] = ()  # MERGE kinds: values (None when unreadable), as src.merges
    extremes: list[Any] = []  # as summed: (min, max), or None (no observation, or none recorded)


def _joined(ext: list[Any], words: list[Any]) -> Any:
    """The (min, max) over files (their latches' words and extremes); None when a file with observations has none."""
    out = None
    for e, w in zip(ext, words, strict=True):
        if w is not None and w[0]:
            if e is None:
                return None
            out = e if out is None else (min(out[0], e[0]), max(out[1], e[1]))
    return out


def _with(value: Any, extremes: Any) -> Any:
    """A HistogramValue or SummaryValue with its (min, max), when known."""
    return value if extremes is None else replace(value, min=extremes[0], max=extremes[1])


def aggregate(
    slots: list[_Slot],
    families: dict[tuple[str, str], _Family],
    readings: list[tuple[_Source, FileInfo, _Values]],
    errors: list[CollectError],
) -> list[MetricFamily]:
    """The families of one collection: every slot's value across the files read (``readings``).

    ``families``: the current family of each (publisher, name); problems go to ``errors``.
    """
    nslots = len(slots)
    acc: list[Any] = [0] * nslots
    present: set[int] = set()
    per_process: dict[int, list[tuple[FileInfo, Any]]] = {}
    multi: dict[int, list[Any]] = {}  # histograms and summaries: values (with +) to add up

    # Integer counters: files with the same layout are summed column by
    # column, in C, straight from their mappings.
    groups: dict[int, tuple[_Source, list[Any]]] = {}
    for src, _info, _values in readings:
        if src.int_off:  # (its key is never empty)
            g = groups.get(id(src.int_key))
            if g is None:
                groups[id(src.int_key)] = (src, [src.reader.buffer])
            else:
                g[1].append(src.reader.buffer)
    runs: list[tuple[int, int]] = []  # runs of slots a..b-1 summed so far, not yet in ``present``
    slotwise = False  # a group was added slot by slot (it may have touched any run)
    for first, buffers in groups.values():
        sums = cells.sum_words(buffers, first.int_off)
        run = first.int_run
        if run is not None:  # slots a..b-1 in order (the usual layout): added as a slice, in C
            a, b = run
            if slotwise or any(a < rb and ra < b for ra, rb in runs):
                acc[a:b] = map(add, acc[a:b], sums)
            else:
                acc[a:b] = sums  # nothing summed there yet: the sums are the values
            runs.append(run)
            continue
        slotwise = True
        present.update(first.int_slot)
        for s, v in zip(first.int_slot, sums, strict=True):
            acc[s] += v

    # Histograms and summaries: files with the same layout summed in C;
    # each group's total is one more part of its slots' sums.
    sum_groups: dict[int, tuple[_Source, list[Any], list[list[Any]], list[Any]]] = {}
    for src, _info, values in readings:
        if src.sum_off:  # (its key is never empty)
            sg = sum_groups.get(id(src.sum_key))
            if sg is None:
                sum_groups[id(src.sum_key)] = (src, [src.reader.buffer], [values.summed], [values.extremes])
            else:
                sg[1].append(src.reader.buffer)
                sg[2].append(values.summed)
                sg[3].append(values.extremes)
    for first, buffers, per_file, per_file_ext in sum_groups.values():
        totals: list[Any] | None = per_file[0] if len(per_file) == 1 else None
        if totals is None and all(v is not None for file_values in per_file for v in file_values):
            try:
                totals = cells.sum_latches(buffers, first.sum_off, first.sum_size)
            except (ValueError, OverflowError):
                totals = None  # changed since it was checked: sum what was read
        # Else each file's values, added up below, leaving out what could not be read.
        columns = zip(*per_file, strict=True) if totals is None else ([t] for t in totals)
        for i, (s, record, column) in enumerate(zip(first.sum_slot, first.sum_records, columns, strict=True)):
            fam = slots[s].family
            make = fam.kind.from_words
            assert make is not None  # LATCH_SUM kinds have one
            # Lifetime min and max: each file's (when totals is None, added up by the values' +), or all files'.
            ext = [e[i] if e else None for e in per_file_ext]
            if totals is not None:
                ext = [_joined(ext, [f[i] for f in per_file])]
            got = [
                _with(make(words, fam.bounds, fam.flags), e)
                for words, e in zip(column, ext, strict=True)
                if words is not None
            ]
            if not got:
                errors.append(CollectError(first.path, f"{record.spec.name}: value unreadable (writer busy)"))
                continue
            present.add(s)
            multi.setdefault(s, []).extend(got)

    for src, _info, values in readings:  # MERGE kinds: values that add up (exponential histograms)
        for (record, s), value in zip(src.merges, values.merged, strict=False):
            if value is None:
                errors.append(CollectError(src.path, f"{record.spec.name}: value unreadable (writer busy)"))
                continue
            present.add(s)
            multi.setdefault(s, []).append(value)

    for src, info, values in readings:
        if not src.mixed:
            continue  # integer counters and latches only: done above
        for s, fv in zip(src.flt_slot, values.flts, strict=False):
            acc[s] += fv
        present.update(src.flt_slot)
        for s, gv in zip(src.gauge_slot, values.gauges, strict=False):
            per_process.setdefault(s, []).append((info, gv))
        for (_off, s, states), index in zip(src.enums, values.enums, strict=False):
            per_process.setdefault(s, []).append((info, states[index] if index < len(states) else None))
        for s, d in src.infos:
            per_process.setdefault(s, []).append((info, d))
        for (record, s), value in zip(src.texts, values.texts, strict=False):
            if value is None:
                errors.append(CollectError(src.path, f"{record.spec.name}: value unreadable (writer busy)"))
                continue
            per_process.setdefault(s, []).append((info, value))

    for s, parts in multi.items():
        acc[s] = parts[0] if len(parts) == 1 else reduce(add, parts)  # HistogramValue + HistogramValue...
    pid_labels: dict[str, str] | None = None  # built when a family is per process
    listed = False  # the runs are in ``present`` (done once, when a family needs slot by slot)
    result: list[MetricFamily] = []
    # Every family this collector has seen stays while its publisher has a file or an archive
    # here, even when no file has a value for it now (workers replaced): families do not come
    # and go with worker churn, and a summed gauge nobody contributes to reads 0. A family
    # replaced in ``families`` (a declaration its processes redefined) is not there any more.
    publishers = {src.publisher for src, _info, _values in readings}
    for fam in families.values():
        if fam.publisher not in publishers:
            continue
        mf = _family_view(fam)
        result.append(mf)
        samples = mf.samples
        if fam.kind.merge == SUM:  # one value per slot, in ``acc`` when present (the hot loop)
            rows = fam.rows
            if len(rows) != len(fam.slots):
                rows = fam.rows = [(slot.index, slot.label_dict, slot.labels) for slot in fam.slots.values()]
                a = rows[0][0] if rows else 0
                fam.run = (a, a + len(rows)) if rows and _is_run(rows, a) else None
            last = fam.last
            ints = fam.last_ints
            if ints is not None:
                a, b, before = ints
                # Integer counters, every row present then and now, every value as it was: the same Samples
                # (one compare of two lists of ints in C, not one check per row).
                if (
                    len(rows) == b - a
                    and acc[a:b] == before
                    and (any(ra <= a and b <= rb for ra, rb in runs) or present.issuperset(range(a, b)))
                ):
                    samples.extend(cast("list[Sample]", last))
                    continue
                fam.last_ints = None
            if not listed:
                listed = True
                for ra, rb in runs:
                    present.update(range(ra, rb))
            if len(last) != len(rows):
                last = [None] * len(rows)
            # A series whose integer value did not change keeps its Sample (results are never
            # mutated, so collections may share them): no object churn for idle series.
            now = [
                (
                    p
                    if p is not None and p.value == (v := acc[s]) and v.__class__ is int and p.value.__class__ is int
                    else Sample(d, acc[s], None, labels)
                )
                if s in present
                else None
                for (s, d, labels), p in zip(rows, last, strict=True)
            ]
            fam.last = now
            if None in now:
                samples.extend([x for x in now if x is not None])
                continue
            samples.extend(cast("list[Sample]", now))
            if fam.run is not None and fam.kind.read == COUNT and not fam.flags & L.FLAG_FLOAT:
                a, b = fam.run
                fam.last_ints = (a, b, acc[a:b])  # ints only: sum_words gives ints, the start is 0
            continue
        if not listed:
            listed = True
            for ra, rb in runs:
                present.update(range(ra, rb))
        by_mode = fam.kind.merge == MODE
        mode = fam.aggregation & 0xFF if by_mode else 0
        summed_gauge = by_mode and mode == L.Aggregation.SUM
        live_only = by_mode and fam.aggregation & L.AGG_LIVE_ONLY
        for slot in fam.slots.values():
            s = slot.index
            contributions = per_process.get(s)
            if contributions is None:
                if s in present:
                    samples.append(Sample(slot.label_dict, acc[s], None, slot.labels))
                elif summed_gauge:
                    samples.append(Sample(slot.label_dict, 0.0, None, slot.labels))
                continue
            if live_only:
                contributions = [(i, v) for i, v in contributions if i.status == ALIVE]
            if mode:
                if not contributions:
                    if summed_gauge:  # the sum over no process
                        samples.append(Sample(slot.label_dict, 0.0, None, slot.labels))
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
                samples.append(Sample(slot.label_dict, value, None, slot.labels))
                continue
            for info, value in sorted(contributions, key=lambda c: c[0].pid):
                if value is None:
                    continue
                if pid_labels is None:
                    pid_labels = _pid_labels(readings)
                pid = pid_labels.get(info.path, str(info.pid))
                labels = dict(slot.labels)
                labels["pid"] = pid
                samples.append(Sample(labels, value, info.pid, (slot.labels, pid)))
    result.sort(key=lambda m: (m.name, m.publisher))
    return result


def _is_run(rows: list[tuple[int, dict[str, str], tuple[tuple[str, str], ...]]], a: int) -> bool:
    """The rows' slots are a, a+1, ... in order."""
    return [r[0] for r in rows] == list(range(a, a + len(rows)))


def _pid_labels(readings: list[tuple[_Source, FileInfo, _Values]]) -> dict[str, str]:
    """``pid`` label values; files of one publisher sharing a pid (reuse, containers) get ``PID:INSTANCE8``."""
    by_pid: dict[tuple[str, int], list[FileInfo]] = {}
    for _src, info, _ in readings:
        ident = info.identity
        if ident is not None and info.status != ARCHIVE:
            by_pid.setdefault((ident.publisher, ident.pid), []).append(info)
    out: dict[str, str] = {}
    for (_, pid), infos in by_pid.items():
        if len(infos) > 1:
            infos.sort(key=lambda i: i.identity.created_ns)  # type: ignore[union-attr]
            for info in infos[:-1]:  # the newest keeps the plain pid
                out[info.path] = f"{pid}:{info.identity.instance_id[:4].hex()}"  # type: ignore[union-attr]
    return out


def _family_view(fam: _Family) -> MetricFamily:
    by_mode = fam.kind.merge == MODE
    agg = _AGG_NAMES.get(fam.aggregation & 0xFF, "last") if by_mode else fam.kind.merge
    return MetricFamily(
        publisher=fam.publisher,
        name=fam.name,
        type=fam.kind.name,
        help=fam.help,
        unit=fam.unit,
        aggregation=agg,
        live_only=bool(by_mode and fam.aggregation & L.AGG_LIVE_ONLY),
        float_counter=bool(fam.kind.read == COUNT and fam.flags & L.FLAG_FLOAT),
        bounds=fam.bounds,
        key=(fam.publisher, fam.name),
        states=fam.states,
    )
