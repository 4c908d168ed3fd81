"""Validating reader: snapshots of one statmap file, with liveness.

Files are untrusted input. Every offset, length and count is checked
against the mapping before use (the checks live in ``_layout``), so a
corrupt file raises ``FormatError`` naming the file and the problem; a
zero-length or half-built file is reported as not ready. Parsed records are
cached: a new snapshot parses only records added since the last one and
re-reads only values.

Its parts below it: ``record_table`` (the parsed records and the metadata
cache readers share), ``filemap`` (a mapping, or copies of other users'
files), ``liveness`` (is the writer alive).
"""

from __future__ import annotations

import errno
import mmap
import os
import stat
import time
from typing import Any

from . import _layout as L
from . import cells, filemap, liveness
from .errors import FormatError, ResourceError
from .kinds import TYPE_NAMES as TYPE_NAMES  # type code -> name: the table of kinds is its home
from .liveness import ALIVE as ALIVE  # the statuses are part of the reader's API: re-exported
from .liveness import CLOSED as CLOSED
from .liveness import DEAD as DEAD
from .liveness import NOT_READY as NOT_READY
from .record_table import RecordTable, _Template
from .series import Series as Series  # the snapshot's classes live in series.py; re-exported here, where they were
from .series import Snapshot as Snapshot
from .series import SnapshotMemo as SnapshotMemo
from .series import build_series, series_plan
from .values import ExpHistogramValue as ExpHistogramValue

# The value classes live in values.py; re-exported here, where they were first.
from .values import HistogramValue as HistogramValue
from .values import SummaryValue as SummaryValue
from .values import json_number as json_number

# The header words read on every poll, bound once (_read_header's repeat path).
_load = cells.load_u64
_MAGIC, _MAGIC_LEN, _HEADER_SIZE, _ALIGN = L.MAGIC, len(L.MAGIC), L.HEADER_SIZE, L.ALIGN
_OFF_STATE, _OFF_END, _OFF_CAPACITY, _OFF_CLOSED_NS = L.OFF_STATE, L.OFF_END, L.OFF_CAPACITY, L.OFF_CLOSED_NS
_READY, _CLOSED = int(L.State.READY), int(L.State.CLOSED)

#: Types whose value is a latch (format.md section 6).
_LATCHED = (L.MetricType.HISTOGRAM, L.MetricType.SUMMARY, L.MetricType.TEXT, L.MetricType.EXP_HISTOGRAM)


#: Errors of this process, not of a file: they fail a whole collection.
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM})


class _Grown(Exception):
    """The header's capacity is beyond the mapping: the file grew (or was truncated)."""


class Reader:
    """Reads one statmap file. Use ``statmap.open(path)``; call ``snapshot()`` as often as you like.

    A reader holds no descriptor between reads: a mapping outlives its
    descriptor, and liveness is probed by opening the file for a moment
    (only while its writer may still be alive). Files owned by another user
    than this process's effective user are never mapped: they are read
    through copies (``pread``), so that user truncating them cannot kill
    this process with SIGBUS (docs/reliability.md).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._fd = -1  # open only during a read
        self._ident: tuple[int, int] | None = None  # (st_dev, st_ino) of the file first opened
        self._copy = False  # owned by another user: read through copies, never mapped
        self._map: mmap.mmap | bytearray | None = None
        self._words: memoryview | None = None
        self._copies: tuple[bytearray, bytearray] | None = None  # copy mode: the reads before and after
        self._final = False  # closed, or its writer dead: liveness cannot change any more
        self._holding = False  # keeps its descriptor between reads (see filemap.py)
        self._stale = False  # the header says the file grew beyond what we hold
        self._table = RecordTable()  # the records parsed so far
        self._header: L.Header | None = None
        self._fixed: L.Header | None = None  # the validated header fields that never change
        self._last: L.Header | None = None  # the last header the repeat path returned (_read_header)
        self._closed = False
        self._open_fd()  # kept until the first read, so that opening then reading opens once

    # -- file and mapping ---------------------------------------------------

    def _fail(self, problem: str) -> FormatError:
        return FormatError(self.path, problem)

    def _resource(self, what: str, exc: OSError) -> ResourceError:
        return ResourceError(f"{self.path}: cannot {what}: {exc.strerror or exc} (errno {exc.errno})")

    def _open_fd(self) -> int:
        """Open the file for this read and check it; returns its size."""
        try:
            # O_NONBLOCK: opening a FIFO planted under a statmap name must not
            # wait for a writer; it is refused just below as not a regular file.
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno in _RESOURCE_ERRNOS:
                raise self._resource("open", exc) from None
            if exc.errno == errno.ELOOP:
                raise self._fail("is a symbolic link; refusing to follow it") from None
            raise self._fail(f"cannot open: {exc.strerror}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise self._fail("not a regular file")
            ident = (st.st_dev, st.st_ino)
            if self._ident is None:
                self._ident = ident
                self._copy = st.st_uid != os.geteuid()
            elif ident != self._ident:
                raise self._fail("replaced by another file since it was opened")
            if st.st_size > L.MAX_FILE_SIZE:
                raise self._fail(
                    f"file size {st.st_size} exceeds the reader limit of {L.MAX_FILE_SIZE} bytes (format.md 11)"
                )
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return int(st.st_size)

    def _close_fd(self) -> None:
        self._hold(False)
        if self._fd >= 0:
            os.close(self._fd)  # also drops a liveness probe's shared lock
            self._fd = -1

    def _sync(self) -> int:
        """Bring the mapping (or copy) up to the file as it is now; return the file size."""
        if self._fd < 0:
            m = self._map
            if not self._copy and m is not None and self._final and not self._stale:
                # A dead or closed file needs no descriptor (no liveness to probe):
                # one stat says whether the mapping still matches the file.
                try:
                    st = os.stat(self.path, follow_symlinks=False)
                except OSError:
                    st = None
                if st is not None and (st.st_dev, st.st_ino) == self._ident and st.st_size == len(m):
                    return len(m)
            size = self._open_fd()
        else:
            size = os.fstat(self._fd).st_size
        self._stale = False
        if self._copy:
            return self._read_copies(size)
        if self._map is not None and size == len(self._map):
            return size
        self._release_map()
        if size == 0:
            return 0
        try:
            m = filemap.map_file(self._fd, size)
        except OSError as exc:
            if exc.errno not in _RESOURCE_ERRNOS:
                raise self._fail(f"cannot map: {exc.strerror}") from None
            m = None  # out of descriptors or mappings: copies need neither
        if m is None:
            self._copy = True  # no descriptor to spare for one more mapping: read through copies
            return self._read_copies(size)
        self._map, self._words = m, L.words_view(m)
        if not self._holding and not self._final and filemap.spare():
            self._hold(True)
        return size

    def _hold(self, on: bool) -> None:
        if on != self._holding:
            self._holding = on
            filemap.hold(on)

    def _read_error(self, exc: OSError) -> Exception:
        if exc.errno in _RESOURCE_ERRNOS:
            return self._resource("read", exc)
        return self._fail(f"cannot read: {exc.strerror}")

    def _read_copies(self, size: int) -> int:
        """Copy mode: three copies of the file up to its end of records (see ``filemap.py``)."""
        try:
            first, middle, last = filemap.read_copies(self._fd, size)
        except OSError as exc:
            raise self._read_error(exc) from None
        self._release_map()
        self._map, self._copies = middle, (first, last)
        self._words = L.words_view(middle)
        n = len(middle)
        return size if n == size or n >= L.HEADER_SIZE else n

    def _prove_latches(self) -> None:
        """Copy mode: make every latch in the middle copy one the writer did not touch while it was copied."""
        assert self._copies is not None and isinstance(self._map, bytearray)
        records = self._table.records
        latches = [
            (r.value_offset, (r.value_size - 8) // 2)
            for r in records
            if r.known and r.value_size and r.spec.mtype in _LATCHED
        ]
        (first, last), middle = self._copies, self._map
        try:
            middle = filemap.prove_latches(self._fd, first, middle, last, latches)
        except OSError as exc:
            raise self._read_error(exc) from None
        if middle is not self._map:  # read again: the proved copy replaces the one held
            self._release_map()
            self._map, self._words = middle, L.words_view(middle)
        self._copies = None

    def _release_map(self) -> None:
        if self._words is not None:
            self._words.release()
            self._words = None
        if isinstance(self._map, mmap.mmap):
            filemap.unmap(self._map)
        self._map = None

    def close(self) -> None:
        self._release_map()
        self._close_fd()
        if not self._closed:
            self._closed = True
            self._table.release()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finaliser
            pass

    # -- header -------------------------------------------------------------

    def _read_header(self, size: int) -> L.Header | None:
        """The validated header, or None if the file is not ready yet."""
        m = self._map
        fixed = self._fixed
        if fixed is not None and m is not None and not self._copy:
            # The repeat read of a file validated before: its fixed part is known, and
            # when the words a writer changes are as they were, so is the header (frozen,
            # shared). Anything unusual takes the full checks below, which name the problem.
            if size >= _HEADER_SIZE and not size % _ALIGN and m[:_MAGIC_LEN] == _MAGIC:
                state = _load(m, _OFF_STATE)
                end, capacity = _load(m, _OFF_END), _load(m, _OFF_CAPACITY)  # end first (see below)
                if (state == _READY or state == _CLOSED) and capacity <= size and fixed.header_size <= end <= capacity:
                    closed_ns = _load(m, _OFF_CLOSED_NS) if state == _CLOSED else 0
                    last = self._last
                    if (
                        last is not None
                        and last.state == state
                        and last.end == end
                        and last.capacity == capacity
                        and last.closed_ns == closed_ns
                    ):
                        return last
                    self._last = last = L.Header(
                        fixed.major, fixed.minor, fixed.header_size, state, capacity, end, fixed.identity, closed_ns
                    )
                    return last
        if m is None:
            return None  # empty: a writer may be about to fill it
        if size < L.HEADER_SIZE:
            head = m[: min(size, len(L.MAGIC))]
            if any(head) and head != L.MAGIC[: len(head)]:
                raise self._fail(f"{size} bytes that do not start with the statmap magic: not a statmap file")
            return None  # a header being written (zeros or the magic so far)
        magic = m[: len(L.MAGIC)]
        if magic != L.MAGIC:
            if magic == L.MAGIC_BIG_ENDIAN:
                raise self._fail("big-endian statmap file; only little-endian files are defined")
            if magic == bytes(len(L.MAGIC)):
                return None  # header not written yet
            raise self._fail(f"bad magic {magic!r}: not a statmap file")
        if size % L.ALIGN:  # before any word access: word views of such a mapping are refused
            raise self._fail(f"file size {size} is not a multiple of 8")
        state = cells.load_u64(m, L.OFF_STATE)  # acquire: the header is complete if ready
        if state == L.State.INITIALISING:
            return None  # a writer may be half-way through the header: check nothing else yet
        fixed = self._fixed
        if fixed is not None:
            # Version, header size and identity never change once a file is ready
            # and were validated already: re-read only the words a writer changes.
            closed_ns = cells.load_u64(m, L.OFF_CLOSED_NS) if state == L.State.CLOSED else 0
            header = L.Header(fixed.major, fixed.minor, fixed.header_size, state, 0, 0, fixed.identity, closed_ns)
        else:
            header = L.decode_header(m)
        if header.major != L.MAJOR:
            raise self._fail(f"format version {header.major}.{header.minor}; this reader knows {L.MAJOR}.x")
        if header.header_size < L.HEADER_SIZE or header.header_size % L.ALIGN or header.header_size > size:
            raise self._fail(f"bad header size {header.header_size}")
        if state not in (L.State.READY, L.State.CLOSED):
            raise self._fail(f"unknown state {state}")
        if size % L.ALIGN:
            raise self._fail(f"file size {size} is not a multiple of 8")
        # end before capacity, both acquire: a writer stores capacity before
        # any end that needs it, so this capacity is never older than end.
        end = cells.load_u64(m, L.OFF_END)  # records before end are complete
        capacity = cells.load_u64(m, L.OFF_CAPACITY)
        if capacity > size:
            raise _Grown(capacity)
        if capacity < header.header_size:
            raise self._fail(f"capacity {capacity} is less than the header size {header.header_size}")
        if not header.header_size <= end <= capacity:
            raise self._fail(f"end of records {end} outside {header.header_size}..{capacity}")
        self._fixed = header
        if self._copy:
            end = min(end, len(m))  # the copies hold the records up to the end read just before them
        return L.Header(
            header.major, header.minor, header.header_size, state, capacity, end,
            header.identity, header.closed_ns,
        )  # fmt: skip

    def _current_header(self) -> tuple[int, L.Header | None]:
        """Map the file as it is now and read its header, following growth."""
        for _ in range(3):
            size = self._sync()
            try:
                return size, self._read_header(size)
            except _Grown:
                self._stale = True
                continue  # the writer grew the file after our fstat: map again
        raise self._fail(
            f"capacity {cells.load_u64(self._map, L.OFF_CAPACITY)} exceeds the file size {size} (truncated?)"
        )

    def _parse_new_records(self, header: L.Header) -> None:
        if header.end == self._table.parsed_end:
            return  # nothing new (the repeat read of an unchanged file)
        assert self._map is not None
        try:
            self._table.parse(self._map, header.header_size, header.end, self._copy)
        except L.RecordError as exc:
            raise self._fail(str(exc)) from None

    # -- liveness -------------------------------------------------------------

    def _liveness(self, header: L.Header) -> str:
        if header.state == L.State.CLOSED:
            self._final = True
            return CLOSED
        if self._final:
            return DEAD  # no process takes a dead writer's lock again
        status = liveness.probe(self._fd, header.identity)  # a shared lock on our own open of the file
        self._final = status == DEAD
        return status

    _liveness_by_pid = staticmethod(liveness.by_pid)  # the fallback where locks don't work (tests call it)

    # -- values -------------------------------------------------------------

    def _latch(self, record: L.Record, copy_size: int) -> bytes | None:
        for _ in range(100):
            data = cells.read_latch(self._map, record.value_offset, copy_size)
            if data is not None:
                return data
            time.sleep(0)
        return None

    def _value(self, record: L.Record) -> Any:
        spec = record.spec
        mtype = spec.mtype
        words = self._words
        assert words is not None
        if mtype == L.MetricType.COUNTER:
            bits = int(words[record.value_offset // 8])
            return L.f64_from_bits(bits) if spec.flags & L.FLAG_FLOAT else bits
        if mtype == L.MetricType.GAUGE:
            return L.f64_from_bits(int(words[record.value_offset // 8]))
        if mtype == L.MetricType.ENUM:
            index = int(words[record.value_offset // 8])
            return spec.extras[index] if index < len(spec.extras) else None
        if mtype == L.MetricType.INFO:
            return dict(zip(spec.extras[::2], spec.extras[1::2], strict=True))
        if mtype == L.MetricType.SUMMARY:
            data = self._latch(record, L.SUMMARY_COPY_SIZE)
            if data is None:
                return None
            count, total = L.decode_summary(data)
            return SummaryValue(count, total, *self.extremes(record, count))
        if mtype == L.MetricType.HISTOGRAM:
            n = len(spec.bounds)
            data = self._latch(record, L.histogram_copy_size(n))
            if data is None:
                return None
            count, total, raw = L.decode_histogram(data, n)
            if sum(raw) != count:
                raise self._fail(f"histogram {spec.name}: bucket counts sum to {sum(raw)}, count is {count}")
            cumulative, buckets = 0, []
            for bound, c in zip((*spec.bounds, float("inf")), raw, strict=True):
                cumulative += c
                buckets.append((bound, cumulative))
            log = bool(spec.flags & L.FLAG_LOG_BUCKETS)
            return HistogramValue(count, total, tuple(buckets), log, *self.extremes(record, count))
        if mtype == L.MetricType.EXP_HISTOGRAM:  # format 1.2
            data = self._latch(record, L.exp_copy_size(spec.capacity))
            if data is None:
                return None
            try:
                return ExpHistogramValue.from_copy(data, spec.capacity, spec.bounds[0])
            except ValueError as exc:
                raise self._fail(f"exponential histogram {spec.name}: {exc}") from None
        if mtype == L.MetricType.TEXT:
            data = self._latch(record, L.text_copy_size(spec.capacity))
            if data is None:
                return None
            text = L.decode_text(data, spec.capacity)
            if text is None:
                raise self._fail(f"text {spec.name}: stored length exceeds its capacity {spec.capacity}")
            return text.decode("utf-8", "replace")
        raise AssertionError(f"unknown type {mtype}")  # unknown types are skipped before this

    # -- the public API -------------------------------------------------------

    def poll(self) -> tuple[str, L.Header | None, int]:
        """Refresh the header and parse new records, without reading any value.

        Returns (liveness, header, file size); the header is None when the
        file is not ready. The parsed records are in ``records``. This is the
        cheap half of ``snapshot()``, for collectors that read values in bulk
        (``load_words``, ``read_latch``) and keep their own per-record caches.
        Raises ``FormatError`` for a corrupt file and ``ResourceError`` when
        this process is out of descriptors or memory.
        """
        if self._closed:
            raise ValueError("reader is closed")
        try:
            size, header = self._current_header()
            if header is None:
                return NOT_READY, None, size
            self._header = header
            self._parse_new_records(header)
            if self._copies is not None:
                self._prove_latches()
            return self._liveness(header), header, size
        finally:
            self._copies = None
            if not self._holding or self._final:
                self._close_fd()

    @property
    def records(self) -> list[L.Record]:
        """Every record parsed so far (known and unknown types), in file order. Do not modify."""
        return self._table.records

    @property
    def template(self) -> _Template | None:
        """The files parsed before whose records this file's first ones are (``record_table``), if any.

        Files with the same template have the same records up to its end: a
        collector classifies them once. Compare by identity.
        """
        template = self._table.template
        return template if template is None or template.users > 0 else None

    @property
    def inode(self) -> int | None:
        """The inode number of the file this reader opened (it reads no other), or None before that."""
        return None if self._ident is None else self._ident[1]

    @property
    def header(self) -> L.Header | None:
        """The header as of the last ``poll()`` or ``snapshot()``."""
        return self._header

    @property
    def buffer(self) -> Any:
        """The current read-only mapping (valid until the next ``poll()``), for bulk reads with ``cells``."""
        return self._map

    def steady(self) -> tuple[Any, int, int, int, int] | None:
        """(mapping, descriptor, size, end, capacity) for ``steady.poll``, when the last poll left this
        reader where an unchanged file needs no more than those checks (see ``steady.py``); else None.
        When that poll answers 0, ``poll()`` would return (ALIVE, ``header``, size): the caller uses those."""
        h, m = self._header, self._map
        if self._fd < 0 or self._final or self._copy or self._stale or m is None or self._closed:
            return None
        if h is None or h is not self._last or h.state != _READY or self._table.parsed_end != h.end:
            return None
        return (m, self._fd, len(m), h.end, h.capacity)

    @property
    def copied(self) -> bool:
        """True when the file is read through copies (it belongs to another user), not mapped."""
        return self._copy

    def load_words(self, offsets: list[int]) -> list[int]:
        """The u64 words at these absolute offsets (values of counters, gauges, enums)."""
        if not offsets:
            return []
        assert self._map is not None
        return cells.load_words(self._map, offsets)

    def extremes(self, record: L.Record, count: int) -> tuple[float | None, float | None]:
        """A histogram's or summary's lifetime (min, max), read after its latch showed ``count``
        (docs/format.md 5.1); (None, None) without observations or from a writer older than 1.2."""
        h = self._header
        at = L.extremes_at(record, h.minor) if count and h is not None else None
        if at is None:
            return None, None
        lo, hi = L.floats_from_bits(self.load_words([at, at + 8]))
        return (lo, hi) if lo <= hi else (None, None)  # (NaN or crossed: not a 1.2 writer's)

    def read_latch(self, record: L.Record, copy_size: int) -> bytes | None:
        """The stable copy of a record's latch, or None if the writer kept it moving."""
        data = cells.read_latch(self._map, record.value_offset, copy_size)
        return data if data is not None else self._latch(record, copy_size)

    def value(self, record: L.Record) -> Any:
        """One record's value, decoded as in a snapshot; raises FormatError for a corrupt value."""
        return self._value(record)

    def snapshot(self) -> Snapshot:
        """Every series with a consistent value, the writer's identity and liveness."""
        return self._snapshot(SnapshotMemo())

    def _snapshot(self, memo: SnapshotMemo) -> Snapshot:
        """``snapshot()``; ``memo`` kept by a caller across files whose readers share record objects
        (``render.read_snapshots``): the series of one record in several files then share its
        ``labels`` dict (read-only by contract, as the frozen Series holding it)."""
        status, header, size = self.poll()
        if header is None:
            return Snapshot(self.path, NOT_READY, None, [], None, size)
        records = self._table.records
        template = self._table.template
        plan = None
        if template is not None and template.users > 0 and len(template.records) <= len(records):
            plan = memo.plans.get(template)
            if plan is None:
                plan = memo.plans[template] = series_plan(template.records, memo)
        if plan is None:
            plan, start = series_plan([], memo), 0
        else:
            start = len(plan[3])
        protos, offsets, others, _ = plan
        if start < len(records):  # records beyond the template (or no template): planned for this file alone
            more = series_plan(records[start:], memo)
            n = len(protos)
            protos, offsets = protos + more[0], offsets + more[1]
            others = others + [(n + i, r) for i, r in more[2]]
        # The integer counters' words in one bulk read, then the few others decoded (series_plan).
        assert self._map is not None
        values: list[Any] = cells.load_words(self._map, offsets) if offsets else []
        value = self._value
        for i, r in others:
            values[i] = value(r)
        series = build_series(protos, values)
        return Snapshot(self.path, status, header.identity, series, (header.major, header.minor), size)


def open(path: str | os.PathLike[str]) -> Reader:  # noqa: A001 - the plain name is the point
    """A reader for one statmap file. Raises FormatError if it cannot be opened."""
    return Reader(path)
