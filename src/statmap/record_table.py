"""The records one reader parsed, and the decoded metadata all readers share.

Files of one program hold byte-identical records (the same metrics in every
worker), so a reader decodes each distinct record's metadata once per
process: decoded entries are kept by their bytes (record start up to the
value area) and counted, so an entry lives as long as a reader holding its
record and memory follows the files that are open. A cached decode is
reused only for identical bytes at a position where the same checks pass.

Below ``reader.py``; imports only the format (``_layout``), whose
``decode_record`` does every check of a record's bytes.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from itertools import repeat
from typing import Any

from . import _layout as L
from . import cells

# -- Same metadata, recognised ------------------------------------------------------
#
# The workers of one program write byte-identical records at identical
# offsets: a reader that parsed one file recognises another by comparing the
# metadata bytes of every record (record start up to its value area) with a
# copy of the parsed one's, never the value areas, which differ. Identical
# bytes at identical offsets pass identical checks (decode_record reads only
# these bytes, and ``end``), so the decoded records can be shared.


def metadata_spans(records: list[L.Record]) -> array[int]:
    """The (start, stop) of every record's metadata, as u64 pairs in native order (``same_spans``' ``spans``):
    the reader's own index into a file, not bytes of the format."""
    return array("Q", [x for r in records for x in (r.offset, r.value_offset)])


def same_spans(buffer: Any, reference: bytes, base: int, spans: Any) -> bool:
    """True when ``buffer[a:b] == reference[a - base:b - base]`` for every span (a, b) of ``spans``.

    The pure-Python twin of the C cells' ``_same_spans`` (tests/test_first_scrape.py keeps them equal).
    """
    ref = memoryview(reference)
    size, rsize = len(buffer), len(ref)
    if base < 0 or len(spans) % 2:  # as in C: no half pair
        return False
    pairs = iter(spans)
    for start, stop in zip(pairs, pairs, strict=True):
        if not base <= start <= stop or stop > size or stop - base > rsize:
            return False
        if buffer[start:stop] != ref[start - base : stop - base]:
            return False
    return True


#: The comparison of metadata spans: in C with the C cells (a private helper), else its twin above.
_same_spans: Callable[[Any, bytes, int, Any], bool] = same_spans
if cells.BACKEND == "c":
    from . import _cells

    _same_spans = getattr(_cells, "_same_spans", same_spans)
#: A record's fields read and checked in C (a private helper; None: decode_record alone, its twin).
_record_fields: Callable[[Any, int, int, tuple[int, ...]], Any] | None = (
    getattr(_cells, "_record_fields", None) if cells.BACKEND == "c" else None
)


def record_from_fields(offset: int, fields: tuple[Any, ...]) -> L.Record:
    """The record whose bytes ``_cells._record_fields`` read and checked (``decode_record``'s checks up to
    the string table, its strings decoded); the type's checks by ``_layout``. Raises RecordError as
    decode_record."""
    shape = (fields[1], fields[2], fields[8], fields[5], fields[7])
    known = CHECKED_SHAPES.get(shape)
    if known is None:  # a first scrape meets few shapes (type, flags, sizes) in many records: check each once
        known = L.checked_type(offset, *shape)
        if len(CHECKED_SHAPES) >= 4096:
            CHECKED_SHAPES.clear()
        CHECKED_SHAPES[shape] = known
    return L.build_record(offset, fields, known)


#: Record shapes (type, flags, capacity, value size, params) that passed ``_layout.checked_type``: whether
#: the type is known.
CHECKED_SHAPES: dict[tuple[int, ...], bool] = {}
#: What ``_cells._decode_run`` needs to build records as ``_layout.build_record`` does: the limits, the
#: types it must leave to ``build_record`` even without bounds or extra strings, the classes, their fields.
DECODE_RUN = (L.RECORD_LIMITS, (int(L.MetricType.ENUM),), L.RecordSpec, tuple(L.RecordSpec.__dataclass_fields__),
              L.Record, tuple(L.Record.__dataclass_fields__))  # fmt: skip
#: Runs of new records built whole in C (a private helper; None: record by record, as above).
_decode_run: Callable[..., tuple[list[bytes], list[L.Record], int]] | None = (
    getattr(_cells, "_decode_run", None) if cells.BACKEND == "c" else None
)
#: Records built in one ``_decode_run`` call at most.
RUN_RECORDS = 1024
#: Files with fewer records are parsed record by record (a template is not worth its copy).
TEMPLATE_MIN_RECORDS = 8
#: Templates kept per first record (programs whose files start alike), the newest first.
TEMPLATES_PER_FIRST = 4


class _Entry:
    """Decoded metadata of one distinct record, shared by every reader that holds a record with these bytes."""

    __slots__ = ("first", "key", "known", "placed", "refs", "spec", "templates", "vsize")

    def __init__(self, key: bytes, record: L.Record, refs: int = 0) -> None:
        self.key = key
        self.spec = record.spec
        self.vsize = record.value_size
        self.known = record.known
        # the same record at the same offset: one shared object (the first offset's, then a dict: most
        # metadata sits at one offset only, in every file of a program)
        self.first = record
        self.placed: dict[int, L.Record] | None = None
        self.refs = refs  # readers holding it; the entry goes when the last of them closes
        # files parsed from their start with this first record (a list from the first one on)
        self.templates: list[_Template] | tuple[()] = ()

    def at(self, offset: int) -> L.Record | None:
        """The record placed at ``offset`` so far, if any."""
        if self.first.offset == offset:
            return self.first
        return None if self.placed is None else self.placed.get(offset)

    def place(self, record: L.Record) -> L.Record:
        """The record placed at its offset: this one unless one was placed there before."""
        found = self.at(record.offset)
        if found is not None:
            return found
        if self.placed is None:
            self.placed = {}
        self.placed[record.offset] = record
        return record


class _Template:
    """A file's records as parsed from its start, for files whose metadata is the same byte for byte.

    It holds one reference on each of its entries (taken over from the table
    that parsed it) and lives while a table uses it (``users``).
    """

    __slots__ = ("end", "entries", "metadata", "records", "reference", "spans", "start", "users")

    def __init__(self, start: int, end: int, records: list[L.Record], entries: list[_Entry], metadata: int,
                 reference: bytes) -> None:  # fmt: skip
        self.start = start
        self.end = end
        self.records = records
        self.entries = entries
        self.metadata = metadata
        self.reference = reference  # the file's bytes from start to end (values too: only spans are compared)
        self.spans = metadata_spans(records)
        self.users = 0

    def matches(self, m: Any, start: int, end: int) -> bool:
        return start == self.start and end >= self.end and _same_spans(m, self.reference, start, self.spans)

    def release(self) -> None:
        """A table stopped using it; the last one lets go of its entries and of the template."""
        self.users -= 1
        if self.users > 0:
            return
        first = self.entries[0]
        if isinstance(first.templates, list) and self in first.templates:
            first.templates.remove(self)
        for entry in self.entries:
            _unref(entry)
        self.entries = []


def _unref(entry: _Entry) -> None:
    entry.refs -= 1
    if entry.refs <= 0 and _decoded.get(entry.key) is entry:
        del _decoded[entry.key]


#: Decoded record metadata by its bytes, shared by all readers and counted.
_decoded: dict[bytes, _Entry] = {}
_decoded_high = 0  # its size when last rebuilt or at its largest seen


class RecordTable:
    """One reader's records, in file order, parsed up to ``parsed_end``."""

    __slots__ = ("entries", "metadata", "parsed_end", "records", "template")

    def __init__(self) -> None:
        self.records: list[L.Record] = []
        self.entries: list[_Entry] = []  # the entries this table holds a reference on (not its template's)
        self.template: _Template | None = None  # the records up to its end are the template's
        self.metadata = 0  # bytes of record metadata parsed so far (bounded by MAX_METADATA)
        self.parsed_end = 0

    def parse(self, m: Any, start: int, end: int, copy: bool) -> None:
        """Parse the records added since the last call, from ``start`` (the header size) up to ``end``.

        ``copy``: ``m`` is a bytearray (a copy of the file), not a mapping.
        Raises ``L.RecordError`` naming the problem (the reader adds the file).
        """
        fresh = self.parsed_end == 0
        if fresh:
            self.parsed_end = start
        offset = self.parsed_end
        if end < offset:
            raise L.RecordError(f"end of records went backwards ({end} < {offset})")
        if offset < end and self.template is not None and self.records is self.template.records:
            self.records = [*self.records]  # its template's list (shared, never changed) until this file grows
        cache, records, entries, extent = _decoded, self.records, self.entries, L.decode_record_extent
        while offset < end:
            if len(records) >= L.MAX_RECORDS:
                raise L.RecordError(f"more than {L.MAX_RECORDS} records: over the reader limit (format.md 11)")
            record = entry = None
            if offset + L.RECORD_HEADER_SIZE <= end:
                size, value_rel = extent(m, offset)
                if L.RECORD_HEADER_SIZE <= value_rel <= size <= end - offset:
                    raw = m[offset : offset + value_rel]
                    entry = cache.get(bytes(raw) if copy else raw)
                    if entry is not None:
                        record = entry.at(offset)  # same record at the same place: share it (immutable)
                        if record is None:
                            record = entry.place(
                                L.Record(offset, size, entry.spec, offset + value_rel, entry.vsize, entry.known)
                            )
            if record is None and _decode_run is not None:
                # New records: built whole in C while they need no check left to _layout (most do not).
                # (runs of at most RUN_RECORDS: the run's list is transient memory)
                most = (min(RUN_RECORDS, L.MAX_RECORDS - len(records)), L.MAX_METADATA - self.metadata)
                keys, built, metadata = _decode_run(m, offset, end, DECODE_RUN, CHECKED_SHAPES, cache, most)
                if built:
                    offset = self._take_run(keys, built, metadata)
                    continue
            if record is None:
                fields = None if _record_fields is None else _record_fields(m, offset, end, L.RECORD_LIMITS)
                # Anything the C read refuses, decode_record reads again and says why.
                record = L.decode_record(m, offset, end) if fields is None else record_from_fields(offset, fields)
            self.metadata += record.value_offset - offset
            if self.metadata > L.MAX_METADATA:
                raise L.RecordError(
                    f"more than {L.MAX_METADATA} bytes of record metadata: over the reader limit (format.md 11)"
                )
            if entry is None:
                key = bytes(m[offset : record.value_offset])
                entry = cache.get(key)
                if entry is None:
                    entry = cache[key] = _Entry(key, record)
                else:
                    entry.place(record)
            entry.refs += 1
            entries.append(entry)
            records.append(record)
            offset += record.size
            if fresh and len(records) == 1 and entry.templates and self._adopt(entry, m, start, end):
                offset = self.parsed_end  # the first record told which files this one may repeat: it does
                records = self.records
                fresh = False
        self.parsed_end = offset
        if fresh and len(records) >= TEMPLATE_MIN_RECORDS:
            self._leave_template(m, start, offset)

    def _take_run(self, keys: list[bytes], built: list[L.Record], metadata: int) -> int:
        """Hold the records ``_decode_run`` built (new metadata bytes ``keys``, ``metadata`` of them in all,
        within MAX_METADATA: the run ends before a record that would pass it); their end."""
        cache, records, entries = _decoded, self.records, self.entries
        self.metadata += metadata
        if len(set(keys)) == len(keys):  # all new, all different: one entry each, in bulk
            fresh = list(map(_Entry, keys, built, repeat(1)))
            cache.update(zip(keys, fresh, strict=True))
            entries += fresh
            records += built
        else:  # the same metadata twice in the run: one entry, one spec object
            for key, record in zip(keys, built, strict=True):
                entry = cache.get(key)
                if entry is None:
                    entry = cache[key] = _Entry(key, record)
                else:
                    if entry.spec is not record.spec:
                        record = L.Record(
                            record.offset, record.size, entry.spec, record.value_offset, entry.vsize, entry.known
                        )
                    record = entry.place(record)
                entry.refs += 1
                entries.append(entry)
                records.append(record)
        last = built[-1]
        return last.offset + last.size

    def _adopt(self, first: _Entry, m: Any, start: int, end: int) -> bool:
        """Take the records of a template whose metadata this file repeats (its first record is parsed)."""
        for template in first.templates:
            if template.matches(m, start, end):
                _unref(self.entries.pop())  # the first record: the template holds it
                # the same objects (equal bytes at equal offsets), in the same list while no more follow
                self.records = template.records if end == template.end else [*template.records]
                self.metadata = template.metadata
                self.parsed_end = template.end
                template.users += 1
                self.template = template
                return True
        return False

    def _leave_template(self, m: Any, start: int, end: int) -> None:
        """This table parsed a file from its start: its records become a template for files alike."""
        template = _Template(start, end, self.records, self.entries, self.metadata, bytes(m[start:end]))
        self.entries = []  # the template took over their references
        template.users = 1
        self.template = template
        first = template.entries[0]
        templates = first.templates
        if not isinstance(templates, list):
            templates = first.templates = []
        templates.insert(0, template)
        del templates[TEMPLATES_PER_FIRST:]  # the others live on while their tables do, unlisted

    def release(self) -> None:
        """Let go of this reader's entries: those no other reader holds leave the shared cache."""
        global _decoded, _decoded_high
        _decoded_high = max(_decoded_high, len(_decoded))
        for entry in self.entries:
            _unref(entry)
        shared = self.template is not None and self.records is self.template.records
        if self.template is not None:
            self.template.release()
            self.template = None
        self.entries.clear()  # clear, not rebind: a traceback may still hold these lists
        if shared:
            self.records = []  # its template's list: other files may still use it
        else:
            self.records.clear()
        if len(_decoded) < _decoded_high // 4:  # a dict never shrinks its table: build a small one
            _decoded = dict(_decoded)
            _decoded_high = len(_decoded)
