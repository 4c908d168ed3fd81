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
from typing import Any

from . import _layout as L
from . import cells, steady
from .aggregate import _Family, _Slot, _Source, _Values, aggregate
from .archive import ABSORBED_SERIES, ARCHIVE_PREFIX, PROCESSES_SERIES, is_archive_name, parse_absorbed
from .archive import clean as clean_directory
from .discover import scan_directory
from .errors import CollectionError, FormatError, ResourceError
from .exemplar_read import gather as gather_exemplars
from .exemplar_read import usable as usable_exemplar
from .gcpause import paused
from .kinds import COUNT, KINDS, LABELS, LATCH_SUM, LEVEL, MERGE, STATE
from .pattern import compile_pattern
from .reader import ALIVE, CLOSED, DEAD, NOT_READY, Reader
from .results import ARCHIVE, CORRUPT, CollectError, Collection, FileInfo, MetricFamily, Sample

_NO_VALUES = _Values((), (), [], [], [])  # a file of integer counters only (never mutated)


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
    ``process_metrics``: add CPU, memory, descriptors and threads of each live
    writer, read from /proc (``procstats.py``).
    """

    def __init__(
        self,
        directory: str,
        *,
        publishers: Iterable[str] | None = None,
        clean: bool = False,
        clean_older_than: float = 0.0,
        process_metrics: bool = False,
    ) -> None:
        self.directory = os.fspath(directory)
        self.publishers = frozenset(publishers) if publishers is not None else None
        self.clean = clean
        self.clean_older_than = clean_older_than
        self.process_metrics = process_metrics  # add the live writers' /proc metrics (procstats.py)
        self._sources: dict[str, _Source] = {}
        self._families: dict[tuple[str, str], _Family] = {}
        self._slots: list[_Slot] = []
        self._interned: dict[tuple[int, ...], tuple[int, ...]] = {}
        self._spec_slots: dict[int, tuple[L.RecordSpec, _Slot]] = {}  # id(spec) -> (spec, slot)
        self._dropped = False  # a source was dropped since the last collection
        # id(template) -> (template, (publisher, _redefined), the classification of its records)
        self._by_template: dict[int, tuple[Any, tuple[str, int], tuple[Any, ...]]] = {}
        self._redefined = 0  # families replaced by a redefinition so far

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

    def _source(self, name: str, inode: int, path: str) -> _Source:
        src = self._sources.get(name)
        if src is not None and src.inode != inode:
            src.close()
            src = None
        if src is None:
            reader = Reader(path)  # FormatError if it cannot be opened
            # The file it opened, which is not the one listed or looked at if that was replaced since
            # (an archive): later collections compare the path's inode with this one.
            opened = reader.inode
            src = _Source(path, inode if opened is None else opened, reader, is_archive_name(name))
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
        self._by_template = {k: v for k, v in self._by_template.items() if v[0].users > 0}

    # -- records ---------------------------------------------------------

    def _classify(self, src: _Source, publisher: str) -> None:
        records = src.reader.records
        if src.classified == len(records):
            return
        if src.publisher is None:
            src.publisher = publisher
        template = src.reader.template if src.classified == 0 and not src.is_archive else None
        if template is not None:
            # A file whose records are a template's (the workers of one program): classified as the
            # first file of that template was, when nothing that decided it changed since.
            count = len(template.records)
            known = self._by_template.get(id(template))
            if known is not None and known[0] is template and known[1] == (publisher, self._redefined):
                _restore(src, known[2])  # its lists, shared until this file grows, and its layout keys
                src.classified = count
            else:
                self._classify_records(src, publisher, records[:count])
                self._keys(src)
                if not src.rejected:
                    self._by_template[id(template)] = (template, (publisher, self._redefined), _save(src))
            if src.classified == len(records):
                return
        self._classify_records(src, publisher, records[src.classified :])
        self._keys(src)

    def _keys(self, src: _Source) -> None:
        """The layout keys of a file's classified records, and whether it reads more than integer counters."""
        src.mixed = bool(src.flt_slot or src.gauge_slot or src.enums or src.infos or src.texts or src.merges)
        # Files whose integer counters sit in the same slots at the same offsets
        # share one key, and are summed together in one sum_words() call.
        key = (*src.int_slot, -1, *src.int_off)
        src.int_key = self._interned.setdefault(key, key)
        ints = src.int_slot
        src.int_run = (ints[0], ints[-1] + 1) if ints and ints == list(range(ints[0], ints[-1] + 1)) else None
        key = (*src.sum_slot, -1, *src.sum_off, -2, *src.sum_size)
        src.sum_key = self._interned.setdefault(key, key)

    def _classify_records(self, src: _Source, publisher: str, records: list[L.Record]) -> None:
        if src.shared and records:
            _unshare(src)  # its lists are a template's: this file's own from here on
        # (locals: the loop runs once per distinct record on a first scrape)
        spec_slots, families, is_archive, seen = self._spec_slots, self._families, src.is_archive, src.seen
        for record in records:
            src.classified += 1
            if not record.known:
                if usable_exemplar(record):  # not a metric: the collection keeps the latest (exemplar_read)
                    src.exemplars.append(record)
                continue
            spec = record.spec
            if is_archive and spec.name.startswith(ARCHIVE_PREFIX):
                if spec.name == ABSORBED_SERIES and spec.mtype == L.MetricType.TEXT:
                    value = src.reader.value(record)
                    src.absorbed = frozenset(parse_absorbed(value or ""))
                elif spec.name == PROCESSES_SERIES and spec.mtype == L.MetricType.COUNTER:
                    src.processes = int(src.reader.value(record) or 0)
                continue
            # Readers share decoded metadata between files, so the same spec object
            # comes back for every process of a program: check it once.
            known = spec_slots.get(id(spec))
            fkey = (publisher, spec.name)
            if (
                known is not None
                and known[0] is spec
                and known[1].family.publisher == publisher
                and families.get(fkey) is known[1].family
            ):
                slot = known[1]
            else:
                fam = families.get(fkey)
                # an archive's unarchived kind is a summed gauge's declaration (archive.py)
                declaration = is_archive and not KINDS[spec.mtype].archived
                if fam is not None and fam.mismatch(spec) is not None:
                    if declaration:
                        continue  # an outdated declaration: the processes' metric wins, nothing is lost
                    if fam.declared_only:
                        fam = None  # the program now declares it otherwise: its processes redefine it
                        self._redefined += 1  # classifications saved before may name the old family
                    else:
                        src.rejected.append(f"{spec.name}: {fam.mismatch(spec)} in {fam.first_path}; left out")
                        continue
                if fam is None:
                    fam = families[fkey] = _Family(publisher, spec, src.path, len(families))
                    fam.declared_only = declaration
                elif not declaration and fam.declared_only:
                    fam.declared_only = False
                found = fam.slots.get(spec.labels)
                if found is None:
                    found = fam.slots[spec.labels] = _Slot(len(self._slots), fam, spec.labels)
                    self._slots.append(found)
                slot = found
                spec_slots[id(spec)] = (spec, slot)
            # A second record for the same series in one file (docs/format.md,
            # "Duplicate records"): counters, histograms and summaries add up
            # below like records of different files; the others keep the last.
            if slot.index in seen:
                if self._replace(src, record, slot.index):
                    continue
            else:
                seen.add(slot.index)
                src.series += 1
            read = slot.family.kind.read
            if read == COUNT:
                if spec.flags & L.FLAG_FLOAT:
                    src.flt_off.append(record.value_offset)
                    src.flt_slot.append(slot.index)
                else:
                    src.int_off.append(record.value_offset)
                    src.int_slot.append(slot.index)
            elif read == LEVEL:
                if not src.is_archive:  # an archive's gauge only declares the family (archive.py): no value
                    src.kept[slot.index] = len(src.gauge_off)
                    src.gauge_off.append(record.value_offset)
                    src.gauge_slot.append(slot.index)
            elif read == STATE:
                src.kept[slot.index] = len(src.enums)
                src.enums.append((record.value_offset, slot.index, spec.extras))
            elif read == LABELS:
                src.kept[slot.index] = len(src.infos)
                src.infos.append((slot.index, dict(zip(spec.extras[::2], spec.extras[1::2], strict=False))))
            elif read == LATCH_SUM:
                src.sum_off.append(record.value_offset)
                src.sum_size.append(slot.family.kind.latch_size(spec))  # type: ignore[misc]
                src.sum_slot.append(slot.index)
                src.sum_records.append(record)
                header = src.reader.header
                src.sum_ext.append(L.extremes_at(record, header.minor if header else 0) or -1)
            elif read == MERGE:
                src.merges.append((record, slot.index))
            else:  # TEXT
                src.kept[slot.index] = len(src.texts)
                src.texts.append((record, slot.index))

    @staticmethod
    def _replace(src: _Source, record: L.Record, slot: int) -> bool:
        """A later record of a gauge, enum, info or text series of ``src`` replaces the earlier one."""
        at = src.kept.get(slot)
        if at is None:
            return False  # summed types: added up like records of different files
        spec, read = record.spec, KINDS[record.spec.mtype].read
        if read == LEVEL:
            src.gauge_off[at] = record.value_offset
        elif read == STATE:
            src.enums[at] = (record.value_offset, slot, spec.extras)
        elif read == LABELS:
            src.infos[at] = (slot, dict(zip(spec.extras[::2], spec.extras[1::2], strict=False)))
        else:  # TEXT
            src.texts[at] = (record, slot)
        return True

    # -- one collection ------------------------------------------------------

    def collect(self) -> Collection:
        with paused:  # a first collection builds a few objects per record (gcpause.py)
            return self._collect()

    def _collect(self) -> Collection:
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
        archives = [e for e in scanned if is_archive_name(e[0])]
        order = [e for e in scanned if not is_archive_name(e[0])] + archives if archives else scanned
        readings: list[tuple[_Source, FileInfo, _Values]] = []
        retries: dict[str, int] = {}
        directory = self.directory
        sources = self._sources
        # Files as the last poll left them (live, held, all parsed) are checked in one call (steady.py).
        items = [
            src.steady if (src := sources.get(name)) is not None and src.inode == inode else None
            for name, inode in order
        ]
        unchanged = steady.poll(items, steady.LAYOUT)
        for at, (name, inode) in enumerate(order):
            item = items[at] if at < len(items) else None
            known = sources.get(name)
            if item is not None and not unchanged[at] and known is not None and (lane := known.lane) is not None:
                # As the last scrape left it, and that scrape took it whole: only its values to read.
                if lane[0] is item and (self.publishers is None or known.publisher in self.publishers):
                    header = lane[1]
                    info = FileInfo(known.path, ALIVE, header.identity, item[2], known.series, header.closed_ns)
                    try:
                        values = self._read_values(known)
                    except (FormatError, OSError, ValueError):
                        known.lane = None  # the full path below reads it again and reports the problem
                    else:
                        files.append(info)
                        readings.append((known, info, values))
                        continue
            if known is not None:
                path, archive = known.path, known.is_archive
            else:
                path, archive = os.path.join(directory, name), is_archive_name(name)
            if archive:
                # An archive is replaced by rename: look at the path now, not at the listing.
                try:
                    inode = os.stat(path, follow_symlinks=False).st_ino
                except FileNotFoundError:
                    continue
            try:
                src = self._source(name, inode, path)
                if item is not None and not unchanged[at] and src.steady is item:
                    status, header, size = ALIVE, src.reader.header, item[2]
                else:
                    status, header, size = src.reader.poll()
                    src.steady = src.reader.steady()
                src.lane = None
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
            elif status == ALIVE and not src.rejected and src.steady is not None:
                src.lane = (src.steady, header)  # the next scrape may take the lane above
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
        families = aggregate(self._slots, self._families, counted, errors)
        if self.process_metrics:
            from .procstats import process_families

            families = [*families, *process_families(files, ((f.publisher, f.name) for f in families))]
        created: dict[str, float] = {}
        for _src, info, _ in counted:
            ident = info.identity
            if ident is not None and ident.created_ns:
                t = ident.created_ns / 1e9
                if t < created.get(ident.publisher, float("inf")):
                    created[ident.publisher] = t
        collection = Collection(self.directory, now, files, families, errors, created)
        gather_exemplars(counted, collection.exemplars)
        return collection

    def _read_values(self, src: _Source) -> _Values:
        """Read every value of one file; raises FormatError if one is corrupt.

        Integer counters are not read here: they are summed straight from the mappings (_aggregate).
        """
        if not src.mixed and not src.sum_off:
            return _NO_VALUES  # integer counters only: summed straight from the mapping
        reader = src.reader
        flts = L.floats_from_bits(reader.load_words(src.flt_off))
        gauges = L.floats_from_bits(reader.load_words(src.gauge_off))
        enums = reader.load_words([e[0] for e in src.enums]) if src.enums else []
        summed = self._read_sums(src) if src.sum_off else []
        texts: list[Any] = []
        last = src.last
        for record, _slot in src.texts:
            value = reader.value(record)
            if value is None:  # the writer kept it moving: use the last value read
                value = last.get(record.value_offset)
            else:
                last[record.value_offset] = value
            texts.append(value)
        merged: list[Any] = []
        for record, _slot in src.merges:
            value = reader.value(record)
            if value is None:  # as texts: the last value read
                value = last.get(record.value_offset)
            else:
                last[record.value_offset] = value
            merged.append(value)
        return _Values(flts, gauges, enums, texts, summed, merged, self._read_extremes(src, summed) if summed else [])

    @staticmethod
    def _read_extremes(src: _Source, summed: list[Any]) -> list[Any]:
        """Each histogram's and summary's lifetime (min, max), read after its latch (docs/format.md 5.1):
        None without observations, or where the file has none (a writer older than format 1.2)."""
        at = [o for o in src.sum_ext if o >= 0]
        if not at:
            return [None] * len(summed)
        bits = L.floats_from_bits(src.reader.load_words([w for o in at for w in (o, o + 8)]))
        out: list[Any] = []
        k = 0
        for o, words in zip(src.sum_ext, summed, strict=True):
            if o >= 0:
                lo, hi = bits[k], bits[k + 1]
                k += 2
                out.append((lo, hi) if words is not None and words[0] and lo <= hi else None)
            else:
                out.append(None)
        return out

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


# What classifying a file's records sets in its _Source (the per-file state such as ``last`` apart).
_CLASSIFIED = (
    "int_off", "int_slot", "flt_off", "flt_slot", "gauge_off", "gauge_slot", "enums", "texts",
    "sum_off", "sum_size", "sum_slot", "sum_records", "sum_ext", "merges", "exemplars",
)  # fmt: skip


_KEYS = ("mixed", "int_key", "int_run", "sum_key")


def _save(src: _Source) -> tuple[Any, ...]:
    """A file's classification, for the files that repeat its template: shared, not copied (see _unshare)."""
    src.shared = True
    return (
        *(getattr(src, name) for name in _CLASSIFIED),
        src.infos,
        src.series,
        src.seen,
        src.kept,
        *(getattr(src, name) for name in _KEYS),
    )


def _restore(src: _Source, saved: tuple[Any, ...]) -> None:
    """Give ``src`` a saved classification: the same lists, until a file that shares them classifies more."""
    n = len(_CLASSIFIED)
    for name, value in zip(_CLASSIFIED, saved, strict=False):
        setattr(src, name, value)
    src.infos, src.series, src.seen, src.kept = saved[n : n + 4]
    for name, value in zip(_KEYS, saved[n + 4 :], strict=True):
        setattr(src, name, value)
    src.shared = True


def _unshare(src: _Source) -> None:
    """Copies of the lists a file shares with its template's other files, before it appends to them."""
    for name in _CLASSIFIED:
        setattr(src, name, list(getattr(src, name)))
    src.infos = [(s, dict(d)) for s, d in src.infos]
    src.seen, src.kept = set(src.seen), dict(src.kept)
    src.shared = False


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
