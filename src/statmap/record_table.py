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

from typing import Any

from . import _layout as L


class _Entry:
    """Decoded metadata of one distinct record, shared by every reader that holds a record with these bytes."""

    __slots__ = ("key", "known", "placed", "refs", "spec", "vsize")

    def __init__(self, key: bytes, spec: L.RecordSpec, vsize: int, known: bool) -> None:
        self.key = key
        self.spec = spec
        self.vsize = vsize
        self.known = known
        self.placed: dict[int, L.Record] = {}  # the same record at the same offset: one shared object
        self.refs = 0  # readers holding it; the entry goes when the last of them closes


#: Decoded record metadata by its bytes, shared by all readers and counted.
_decoded: dict[bytes, _Entry] = {}
_decoded_high = 0  # its size when last rebuilt or at its largest seen


class RecordTable:
    """One reader's records, in file order, parsed up to ``parsed_end``."""

    __slots__ = ("entries", "metadata", "parsed_end", "records")

    def __init__(self) -> None:
        self.records: list[L.Record] = []
        self.entries: list[_Entry] = []
        self.metadata = 0  # bytes of record metadata parsed so far (bounded by MAX_METADATA)
        self.parsed_end = 0

    def parse(self, m: Any, start: int, end: int, copy: bool) -> None:
        """Parse the records added since the last call, from ``start`` (the header size) up to ``end``.

        ``copy``: ``m`` is a bytearray (a copy of the file), not a mapping.
        Raises ``L.RecordError`` naming the problem (the reader adds the file).
        """
        if self.parsed_end == 0:
            self.parsed_end = start
        offset = self.parsed_end
        if end < offset:
            raise L.RecordError(f"end of records went backwards ({end} < {offset})")
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
                        record = entry.placed.get(offset)  # same record at the same place: share it (immutable)
                        if record is None:
                            record = entry.placed[offset] = L.Record(
                                offset, size, entry.spec, offset + value_rel, entry.vsize, entry.known
                            )
            if record is None:
                record = L.decode_record(m, offset, end)
            self.metadata += record.value_offset - offset
            if self.metadata > L.MAX_METADATA:
                raise L.RecordError(
                    f"more than {L.MAX_METADATA} bytes of record metadata: over the reader limit (format.md 11)"
                )
            if entry is None:
                key = bytes(m[offset : record.value_offset])
                entry = cache.get(key)
                if entry is None:
                    entry = cache[key] = _Entry(key, record.spec, record.value_size, record.known)
                entry.placed.setdefault(offset, record)
            entry.refs += 1
            entries.append(entry)
            records.append(record)
            offset += record.size
        self.parsed_end = offset

    def release(self) -> None:
        """Let go of this reader's entries: those no other reader holds leave the shared cache."""
        global _decoded, _decoded_high
        _decoded_high = max(_decoded_high, len(_decoded))
        for entry in self.entries:
            entry.refs -= 1
            if entry.refs <= 0 and _decoded.get(entry.key) is entry:
                del _decoded[entry.key]
        self.entries.clear()  # clear, not rebind: a traceback may still hold these lists
        self.records.clear()
        if len(_decoded) < _decoded_high // 4:  # a dict never shrinks its table: build a small one
            _decoded = dict(_decoded)
            _decoded_high = len(_decoded)
