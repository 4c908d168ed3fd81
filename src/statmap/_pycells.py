"""Pure-Python value cells: the same interface and encodings as the C cells.

Used where the C extension is not built, or when ``STATMAP_PURE=1``. It exports exactly what the C
module ``statmap._cells`` exports (``__all__``; the interface is ``_cells.pyi``; tests/test_cells.py checks).

What they guarantee (see docs/format.md and the README):

* Every single-word store is one aligned 8-byte store through a memoryview
  cast, so a reader never sees a half-written counter or gauge.
* Counter and gauge updates are read-modify-write in Python: increments of
  the *same* series from several threads at once can be lost (the GIL may
  switch threads between the load and the store). Use the C cells for that.
* Multi-word values (histogram, summary, text) are written through a
  per-cell queue drained by whoever holds its one-token lock, so
  concurrent threads and signal handlers never interleave two writes, never
  deadlock, and lose nothing. The sequence protocol is followed in program
  order; CPython issues no memory fences, so readers on weakly ordered CPUs
  (ARM64) may see torn values: there, use the C cells.
"""

from __future__ import annotations

import bisect
import math
import sys
import time
from collections import deque
from typing import Any

from ._layout import (
    ALIGN,
    EXTREMES_SIZE,
    MAX_PARAMS,
    MAX_TEXT_CAPACITY,
    SUMMARY_COPY_SIZE,
    VALUE_COPIES,
    VALUE_SEQ,
    align8,
    histogram_copy_size,
    text_copy_size,
)
from ._pycells_exp import ExpHistogramLogic
from ._pyexemplar import after as _exemplar
from ._pyexemplar import set_exemplar_hook as set_exemplar_hook
from ._pyfamily import Family as Family  # the labelled-family lookup (_family.c in C)
from ._pypending import PendingView as _Pending  # a forked child's cell before its file exists
from ._timing import InProgress, Timing

if sys.byteorder != "little":  # pragma: no cover - the format is little-endian
    raise ImportError("statmap's pure-Python cells need a little-endian CPU")

# Exactly the C module's names: the cells and stores (_cells.c), Family
# (_family.c), the bulk reads (_reads.c), and the format's sizes the C files
# use (exported by both so that the tests can compare them with _layout's).
# fmt: off
__all__ = [
    "ALIGN", "MAX_PARAMS", "MAX_TEXT_CAPACITY", "SUMMARY_COPY_SIZE", "VALUE_COPIES", "VALUE_SEQ", "Counter", "Enum",
    "ExpHistogram", "Family", "FloatCounter", "Gauge", "Histogram", "Summary", "Text", "load_u64", "load_words",
    "move_cells", "read_latch", "set_exemplar_hook", "store_u64", "sum_latches", "sum_words",
]
# fmt: on

_U64 = (1 << 64) - 1
_COPY0 = VALUE_COPIES // 8  # word index of a double-buffered value's first copy, from its sequence word
_bisect_left = bisect.bisect_left


def _views(buffer: Any, offset: int, size: int) -> tuple[memoryview[int], memoryview[float]]:
    raw = memoryview(buffer)
    if raw.readonly:
        raise TypeError("cells need a writable buffer")
    if offset < 0 or offset % ALIGN or offset + size > raw.nbytes:
        raise ValueError(f"value area {offset}+{size} does not fit a buffer of {raw.nbytes} bytes")
    raw = raw.cast("B")
    return raw.cast("Q"), raw.cast("d")


class _Cell:
    __slots__ = ("_d", "_i", "_offset", "_q", "_size")
    _q: memoryview[int]
    _d: memoryview[float]

    def _attach(self, buffer: Any, offset: int, size: int) -> None:
        self._q, self._d = _views(buffer, offset, size)
        self._i = offset // 8
        self._offset = offset
        self._size = size

    @property
    def offset(self) -> int:
        return self._offset

    def _rebind(self, buffer: Any, offset: int | None = None, pending: Any = None) -> None:
        """Point the cell at the same value in ``buffer``; ``pending``: see ``_Pending``."""
        old = (self._q, self._d)
        self._attach(buffer, self._offset if offset is None else offset, self._size)
        if pending is not None:
            self._q, self._d = _Pending(self._q, pending), _Pending(self._d, pending)  # type: ignore[assignment]
        views: tuple[Any, Any] = old
        for view, new in zip(views, (self._q, self._d), strict=True):
            if isinstance(view, _Pending):  # an update may hold it in a local: it now writes here
                view._retarget(new)
        # The other old views are not released: another thread may be in the
        # middle of an update that loaded them before this swap (close() runs
        # while updates go on). They are freed, and the mapping's export with
        # them, when the last method using them returns; until then the
        # mapping stays valid (the publisher cannot unmap it while a view exists).


def move_cells(cells: Any, dst: Any, src: Any, start: int, end: int) -> None:
    """Copy ``src[start:end]`` into ``dst``, then re-point every cell at the same offset in ``dst``.

    (The C version does it all in one call; here a signal handler can run
    between the copy and the re-pointing and its update to a cell not yet
    re-pointed is lost: see docs/reliability.md.)
    """
    memoryview(dst)[start:end] = memoryview(src)[start:end]
    for cell in cells:
        _Cell._rebind(cell, dst)  # not _Latched's: its queue and token stay (we may be inside its _apply)


class Counter(_Cell):
    __slots__ = ()

    def __init__(self, buffer: Any, offset: int) -> None:
        self._attach(buffer, offset, 8)

    def inc(self, n: int | None = None, exemplar: Any = None) -> None:
        q, i = self._q, self._i
        if n is None:  # the common case, kept short: one add, wrap past 2**64 - 1
            try:
                q[i] += 1
            except ValueError:
                q[i] = 0
        elif isinstance(n, int) and 0 <= n <= _U64:  # bool and IntEnum too, as in C
            q[i] = (q[i] + n) & _U64
        else:
            self._bad(n)
        if exemplar is not None:  # docs/format.md section 15
            _exemplar(self, 1 if n is None else n, exemplar)

    def __iadd__(self, n: int) -> Counter:
        if isinstance(n, int) and 0 <= n <= _U64:  # inc()'s checks, inlined: += is hot too
            q, i = self._q, self._i
            q[i] = (q[i] + n) & _U64
        else:
            self._bad(n)
        return self

    @staticmethod
    def _bad(n: object) -> None:
        if not isinstance(n, int):
            raise TypeError(
                f"counter increments must be int, not {type(n).__name__} "
                "(declare the counter with float=True for fractions)"
            )
        if n < 0:
            raise ValueError("counters only go up: negative increment rejected")
        raise OverflowError(f"counter increment {n} does not fit in 64 bits")

    def get(self) -> int:
        return int(self._q[self._i])


def _amount(n: object) -> float:
    """``n`` as a float, accepting what the C cells accept (numbers, not strings)."""
    if isinstance(n, (str, bytes, bytearray)):
        raise TypeError(f"must be real number, not {type(n).__name__}")
    return float(n)  # type: ignore[arg-type]


class FloatCounter(_Cell):
    __slots__ = ()

    def __init__(self, buffer: Any, offset: int) -> None:
        self._attach(buffer, offset, 8)

    def inc(self, n: float = 1.0, exemplar: Any = None) -> None:
        d = _amount(n)
        if not d >= 0 or math.isinf(d):
            raise ValueError("counters only go up: increment must be finite and not negative")
        self._d[self._i] += d  # type: ignore[call-overload]
        if exemplar is not None:
            _exemplar(self, d, exemplar)

    def __iadd__(self, n: float) -> FloatCounter:
        self.inc(n)
        return self

    def get(self) -> float:
        return float(self._d[self._i])


class Gauge(_Cell):
    __slots__ = ()

    def __init__(self, buffer: Any, offset: int) -> None:
        self._attach(buffer, offset, 8)

    def set(self, value: float) -> None:
        self._d[self._i] = value if value.__class__ is float else _amount(value)  # type: ignore[call-overload]

    def inc(self, n: float = 1.0) -> None:
        self._d[self._i] += _amount(n)  # type: ignore[call-overload]

    def dec(self, n: float = 1.0) -> None:
        self._d[self._i] -= _amount(n)  # type: ignore[call-overload]

    def __iadd__(self, n: float) -> Gauge:
        self.inc(n)
        return self

    def __isub__(self, n: float) -> Gauge:
        self.dec(n)
        return self

    def get(self) -> float:
        return float(self._d[self._i])

    def set_to_current_time(self) -> None:
        self.set(time.time())

    def track_inprogress(self) -> InProgress:
        return InProgress(self)

    def time(self) -> Timing:
        return Timing(self.set)


class Enum(_Cell):
    __slots__ = ("_count",)

    def __init__(self, buffer: Any, offset: int, count: int) -> None:
        if count < 1:
            raise ValueError("an enum needs at least one state")
        self._count = count
        self._attach(buffer, offset, 8)

    def _set_index(self, index: int) -> None:
        if not 0 <= index < self._count:
            raise ValueError(f"state index {index} out of range 0..{self._count - 1}")
        self._q[self._i] = index

    def _get_index(self) -> int:
        return int(self._q[self._i])


class _Latched(_Cell):
    """A double-buffered value: writes are queued and applied one at a time.

    The writer's lock is a list of one token: ``pop()`` is a non-blocking acquire (IndexError: taken),
    ``append`` the release; atomic calls like ``Lock.acquire(False)``/``release()``, a third of their cost.
    """

    __slots__ = ("_free", "_queue", "_words")

    def _setup(self, buffer: Any, offset: int, copy_size: int, tail: int = 0) -> None:
        self._words = copy_size // 8
        self._queue: deque[Any] = deque()
        self._free = [True]
        self._attach(buffer, offset, 8 + 2 * copy_size + tail)

    def _rebind(self, buffer: Any, offset: int | None = None, pending: Any = None) -> None:
        # After fork the token may be held by a thread that no longer exists.
        self._queue = deque()
        self._free = [True]
        super()._rebind(buffer, offset, pending)

    def _submit(self, item: Any) -> None:
        queue, free = self._queue, self._free
        try:
            free.pop()
        except IndexError:  # another thread, or the code a signal handler interrupted, is writing
            queue.append(item)
        else:  # uncontended: apply at once
            try:
                self._apply(item)
                while queue:
                    self._apply(queue.popleft())
            finally:
                free.append(True)
        self._drain()

    def _queue_item(self, item: Any) -> None:
        self._queue.append(item)
        self._drain()

    def _drain(self) -> None:
        # Whoever holds the token drains the queue; re-check after giving it
        # back so an item queued during the release is never stranded.
        queue, free = self._queue, self._free
        while queue:
            try:
                free.pop()
            except IndexError:
                return  # its holder drains it
            try:
                while queue:
                    self._apply(queue.popleft())
            finally:
                free.append(True)

    def _apply(self, item: Any) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _consistent(self, read: Any) -> Any:
        """``read(word index of the stable copy)``, retried until the sequence held still."""
        q, seq = self._q, self._i
        while True:
            s = q[seq]
            out = read(seq + VALUE_COPIES // 8 + (s & 1) * self._words)
            if q[seq] == s:
                return out

    def _write(self, words: dict[int, int]) -> None:
        """Store ``words`` (word index in a copy -> u64) into both copies, latch style."""
        q, seq = self._q, self._i
        c0 = seq + VALUE_COPIES // 8
        c1 = c0 + self._words
        s = q[seq] + 1
        q[seq] = s & _U64  # odd: readers take copy 1
        for w, v in words.items():
            q[c0 + w] = v
        q[seq] = (s + 1) & _U64  # even: readers take copy 0
        for w, v in words.items():
            q[c1 + w] = v


def _extremes(f: memoryview[float], at: int, d: float, first: bool) -> None:  # as _cells.c's note_extremes
    f[at], f[at + 1] = (d, d) if first else (min(f[at], d), max(f[at + 1], d))  # type: ignore[call-overload]


class Summary(_Latched):
    __slots__ = ()

    def __init__(self, buffer: Any, offset: int) -> None:
        self._setup(buffer, offset, SUMMARY_COPY_SIZE, EXTREMES_SIZE)

    def observe(self, value: float) -> None:
        d = value if value.__class__ is float else _amount(value)
        if d != d:
            raise ValueError("cannot observe NaN")
        free = self._free
        try:
            free.pop()  # the writer's token (see _Latched)
        except IndexError:  # another thread, or the code a signal handler interrupted, is writing
            self._queue_item(d)
            return
        # _submit's uncontended case with _apply's stores inlined: observe is the hot path and
        # each Python call saved is ~50 ns (keep the two alike; the queued path runs _apply)
        try:
            q, f, seq = self._q, self._d, self._i  # (up to 3 names: no tuple is built)
            c0, c1 = seq + 1, seq + 3  # the copies: VALUE_COPIES // 8, + SUMMARY_COPY_SIZE // 8 (asserted below)
            count, s = q[c1] + 1, q[seq] + 1
            if count > _U64 or s >= _U64:  # past 2**64 - 1: _apply wraps (masks cost ~30 ns each, compares ~0)
                self._apply(d)
            else:
                total = f[c1 + 1] + d
                if count == 1 or d < f[c1 + 2]:  # the lifetime min and max after the latch, as _extremes
                    f[c1 + 2] = d
                if count == 1 or d > f[c1 + 3]:
                    f[c1 + 3] = d
                q[seq] = s  # odd: readers take copy 1
                q[c0], f[c0 + 1] = count, total  # type: ignore[call-overload]
                q[seq] = s + 1  # even: readers take copy 0
                q[c1], f[c1 + 1] = count, total  # type: ignore[call-overload]
        finally:
            free.append(True)
        if self._queue:  # queued meanwhile by a signal handler or another thread
            self._drain()

    def time(self) -> Timing:
        return Timing(self.observe)

    def get(self) -> tuple[int, float]:
        q, d = self._q, self._d
        return self._consistent(lambda c: (int(q[c]), float(d[c + 1])))  # type: ignore[no-any-return]

    def _apply(self, d: float) -> None:
        q, f, seq = self._q, self._d, self._i
        c0 = seq + VALUE_COPIES // 8
        c1 = c0 + self._words
        count, total = (q[c1] + 1) & _U64, f[c1 + 1] + d
        _extremes(f, c1 + self._words, d, q[c1] == 0)
        s = q[seq] + 1
        q[seq] = s & _U64
        q[c0], f[c0 + 1] = count, total  # type: ignore[call-overload]
        q[seq] = (s + 1) & _U64
        q[c1], f[c1 + 1] = count, total  # type: ignore[call-overload]


assert _COPY0 == 1 and SUMMARY_COPY_SIZE == 16  # Summary.observe's word offsets


class Histogram(_Latched):
    __slots__ = ("_bounds",)

    def __init__(self, buffer: Any, offset: int, bounds: Any) -> None:
        bounds = [float(b) for b in bounds]
        for i, b in enumerate(bounds):
            if not math.isfinite(b) or (i and not b > bounds[i - 1]):
                raise ValueError("bounds must be finite and strictly increasing")
        self._bounds = bounds
        self._setup(buffer, offset, histogram_copy_size(len(bounds)), EXTREMES_SIZE)

    @property
    def bounds(self) -> tuple[float, ...]:
        return tuple(self._bounds)

    def time(self) -> Timing:
        return Timing(self.observe)

    def get(self) -> tuple[int, float, tuple[int, ...]]:
        q, d, n = self._q, self._d, len(self._bounds) + 1
        return self._consistent(lambda c: (int(q[c]), float(d[c + 1]), tuple(q[c + 2 : c + 2 + n])))  # type: ignore[no-any-return]

    def observe(self, value: float, exemplar: Any = None) -> None:
        d = value if value.__class__ is float else _amount(value)
        if d != d:
            raise ValueError("cannot observe NaN")
        if exemplar is not None:  # docs/format.md section 15: the update, then the exemplar, as in C
            return _exemplar(self, d, exemplar, self.observe)
        free = self._free
        try:
            free.pop()  # the writer's token (see _Latched)
        except IndexError:  # another thread, or the code a signal handler interrupted, is writing
            self._queue_item(d)
            return
        try:  # as in Summary.observe: _apply's stores inlined (keep the two alike)
            q, f, seq = self._q, self._d, self._i  # (up to 3 names: no tuple is built)
            c0 = seq + _COPY0
            c1 = c0 + self._words
            b = 2 + _bisect_left(self._bounds, d)
            count, bucket, s = q[c1] + 1, q[c1 + b] + 1, q[seq] + 1
            if count > _U64 or bucket > _U64 or s >= _U64:  # past 2**64 - 1: _apply wraps
                self._apply(d)
            else:
                total = f[c1 + 1] + d
                m = c1 + self._words  # the lifetime min and max after the latch, as _extremes
                if count == 1 or d < f[m]:
                    f[m] = d
                if count == 1 or d > f[m + 1]:
                    f[m + 1] = d
                q[seq] = s  # odd: readers take copy 1
                q[c0], f[c0 + 1], q[c0 + b] = count, total, bucket  # type: ignore[call-overload]
                q[seq] = s + 1  # even: readers take copy 0
                q[c1], f[c1 + 1], q[c1 + b] = count, total, bucket  # type: ignore[call-overload]
        finally:
            free.append(True)
        if self._queue:
            self._drain()

    def _apply(self, d: float) -> None:
        # _write's steps, unrolled for the three words an observation changes
        q, f, seq = self._q, self._d, self._i
        c0 = seq + VALUE_COPIES // 8
        c1 = c0 + self._words
        b = 2 + bisect.bisect_left(self._bounds, d)
        count, total, bucket = (q[c1] + 1) & _U64, f[c1 + 1] + d, (q[c1 + b] + 1) & _U64
        _extremes(f, c1 + self._words, d, q[c1] == 0)
        s = q[seq] + 1
        q[seq] = s & _U64  # odd: readers take copy 1
        q[c0], f[c0 + 1], q[c0 + b] = count, total, bucket  # type: ignore[call-overload]
        q[seq] = (s + 1) & _U64  # even: readers take copy 0
        q[c1], f[c1 + 1], q[c1 + b] = count, total, bucket  # type: ignore[call-overload]


class ExpHistogram(ExpHistogramLogic, _Latched):  # the logic in _pycells_exp (format 1.2)
    __slots__ = ("_m", "_max_scale", "_zt")


class Text(_Latched):
    __slots__ = ("_capacity",)

    def __init__(self, buffer: Any, offset: int, capacity: int) -> None:
        if not 0 <= capacity <= MAX_TEXT_CAPACITY:
            raise ValueError(f"text capacity must be 0..{MAX_TEXT_CAPACITY} bytes")
        self._capacity = capacity
        self._setup(buffer, offset, text_copy_size(capacity))

    @property
    def capacity(self) -> int:
        return self._capacity

    def get(self) -> str:
        q, capacity = self._q, self._capacity

        def read(c: int) -> bytes:
            length = min(int(q[c]), capacity)
            return q[c + 1 : c + 1 + (length + 7) // 8].tobytes()[:length]

        raw: bytes = self._consistent(read)
        return raw.decode("utf-8", "replace")

    def set(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"text value must be str, not {type(value).__name__}")
        data = value.encode("utf-8")
        if len(data) > self._capacity:
            cut = self._capacity
            while cut > 0 and data[cut] & 0xC0 == 0x80:
                cut -= 1
            data = data[:cut]
        self._submit(data)

    def _apply(self, data: bytes) -> None:
        c0 = self._i + VALUE_COPIES // 8
        # Zero what a longer, older text left behind, as the C cells do.
        old = max(self._q[c0], self._q[c0 + self._words])
        padded = data.ljust(max(align8(len(data)), align8(min(old, self._capacity))), b"\0")
        words = {0: len(data)}
        for w in range(len(padded) // 8):
            words[1 + w] = int.from_bytes(padded[8 * w : 8 * w + 8], "little")
        self._write(words)


# -- Reading ----------------------------------------------------------------


def read_latch(buffer: Any, offset: int, copy_size: int, tries: int = 10000) -> bytes | None:
    """The stable copy of the latch at ``offset``, or None if the writer kept moving."""
    raw = memoryview(buffer).cast("B")
    size = VALUE_COPIES + 2 * copy_size
    if offset < 0 or offset % ALIGN or copy_size < 0 or copy_size % ALIGN or offset + size > raw.nbytes:
        raise ValueError(f"latch {offset}+{size} outside buffer of {raw.nbytes} bytes")
    q = raw.cast("Q")
    i = (offset + VALUE_SEQ) // 8
    start = offset + VALUE_COPIES
    for _ in range(tries):
        s1 = q[i]
        at = start + (s1 & 1) * copy_size
        data = raw[at : at + copy_size].tobytes()
        if q[i] == s1:
            return data
    return None


def load_u64(buffer: Any, offset: int) -> int:
    raw = memoryview(buffer).cast("B")
    if offset < 0 or offset % ALIGN or offset + 8 > raw.nbytes:
        raise ValueError(f"word at {offset} outside buffer of {raw.nbytes} bytes")
    return int(raw.cast("Q")[offset // 8])


def store_u64(buffer: Any, offset: int, value: int) -> None:
    raw = memoryview(buffer).cast("B")
    if offset < 0 or offset % ALIGN or offset + 8 > raw.nbytes:
        raise ValueError(f"word at {offset} outside buffer of {raw.nbytes} bytes")
    raw.cast("Q")[offset // 8] = value


def load_words(buffer: Any, offsets: Any) -> list[int]:
    raw = memoryview(buffer).cast("B")
    q = raw.cast("Q")
    limit = raw.nbytes - 8
    out = []
    for off in offsets:
        if off < 0 or off % ALIGN or off > limit:
            raise ValueError(f"word at {off} outside buffer of {raw.nbytes} bytes")
        out.append(q[off // 8])
    return out


def sum_words(buffers: Any, offsets: Any) -> list[int]:
    """For each offset, the sum of the u64 words at that offset in every buffer."""
    totals = [0] * len(offsets)
    for buffer in buffers:
        totals = [t + w for t, w in zip(totals, load_words(buffer, offsets), strict=True)]
    return totals


def sum_latches(buffers: Any, offsets: Any, sizes: Any) -> list[tuple[Any, ...]] | None:
    """Latched values (count, sum[, bucket counts]) summed across buffers; see _cells.c."""
    if len(offsets) != len(sizes):
        raise ValueError("offsets and sizes differ in length")
    totals: list[list[Any]] = []
    for off, size in zip(offsets, sizes, strict=True):
        if size < SUMMARY_COPY_SIZE or size % ALIGN or size > histogram_copy_size(MAX_PARAMS):
            raise ValueError(f"latch {off} with copy size {size} is not valid")
        totals.append([0, 0.0] + [0] * (size // 8 - 2))
    for b, buffer in enumerate(buffers):
        for i, (off, size) in enumerate(zip(offsets, sizes, strict=True)):
            data = read_latch(buffer, off, size)
            if data is None:
                return None
            words = memoryview(data).cast("Q")
            count, total = words[0], memoryview(data).cast("d")[1]
            if size > SUMMARY_COPY_SIZE and sum(words[2:]) != count:
                raise ValueError(f"buffer {b}: histogram at {off}: bucket counts do not sum to its count {count}")
            acc = totals[i]
            acc[0], acc[1] = acc[0] + count, acc[1] + total
            for k in range(2, size // 8):
                acc[k] += words[k]
            if acc[0] > _U64 or any(acc[k] > _U64 for k in range(2, size // 8)):
                raise OverflowError("a summed count passed 2**64")
    return [tuple(t) for t in totals]
