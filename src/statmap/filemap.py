"""How a reader holds a file's bytes: a read-only mapping, or copies.

Mappings. Before Python 3.13 every mmap object keeps a duplicate of its
file's descriptor. Readers then map at most half of the descriptor limit's
worth of files and read the others through copies, which hold none. Readers
of live files also keep their descriptor between reads while descriptors are
plentiful (within the same budget): probing liveness then costs one flock,
not an open and a close (about 4 us per file and scrape).

Copies (``pread``). A reader maps only files of its own effective user:
another user could truncate a mapped file and kill the reading process with
SIGBUS (docs/reliability.md). Those files, and files a reader has no
descriptor to spare for, are read as copies. A copy is not one instant of
the file, so the latches in it (multi-word values) are proved whole first.
Three reads in a row, first/middle/last: a latch whose ``seq`` is the same
in the first and the last was not written at all while the middle one was
copied (``seq`` only grows, and the selected copy is written only after
``seq`` moved), so the middle copy holds it whole. Latches that moved are
copied again; after a few rounds each is read on its own with the latch
protocol through ``pread`` and patched in.

Below ``reader.py``, which owns the descriptor and turns ``OSError`` into
errors naming the file.
"""

from __future__ import annotations

import mmap
import os
import resource
import sys
import time

from . import _layout as L
from . import cells

#: Rounds of three whole copies before proving latches one by one.
COPY_ROUNDS = 20

TRACKFD = sys.version_info >= (3, 13)  # mmap objects without a duplicate descriptor
_mapped = 0  # mappings held by readers (each holding a descriptor before 3.13)
_held = 0  # descriptors readers keep between reads


def _map_budget() -> float:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return float("inf") if soft == resource.RLIM_INFINITY else soft // 2


def spare() -> bool:
    """True while one more mapping or held descriptor fits the budget."""
    return _mapped + _held < _map_budget()


def map_file(fd: int, size: int) -> mmap.mmap | None:
    """A read-only mapping of the file, counted; None when no descriptor is spare for it. Raises OSError."""
    global _mapped
    if TRACKFD:
        return mmap.mmap(fd, size, access=mmap.ACCESS_READ, trackfd=False)  # type: ignore[call-arg,unused-ignore]
    if not spare():
        return None
    m = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
    _mapped += 1
    return m


def unmap(m: mmap.mmap) -> None:
    global _mapped
    if not TRACKFD:
        _mapped -= 1
    try:
        m.close()
    except BufferError:
        pass  # a view of it is still referenced (e.g. by a traceback); it closes when that goes


def hold(on: bool) -> None:
    """Count a descriptor a reader starts (or stops) keeping between reads."""
    global _held
    _held += 1 if on else -1


def _pread(fd: int, n: int) -> bytearray:
    buf = bytearray(n)
    got = os.preadv(fd, [buf], 0)
    if got < n:
        del buf[got:]  # shrunk since fstat: the header checks see what is there
    return buf


def read_copies(fd: int, size: int) -> tuple[bytearray, bytearray, bytearray]:
    """Three copies in a row of the file up to its end of records, cut to one length (raises OSError)."""
    head = _pread(fd, min(size, L.HEADER_SIZE))
    n = len(head)
    if n == L.HEADER_SIZE and head[: len(L.MAGIC)] == L.MAGIC:
        end = cells.load_u64(head, L.OFF_END)
        n = max(L.HEADER_SIZE, min(end, size))  # records before end are complete; end only grows
    first, middle, last = _pread(fd, n), _pread(fd, n), _pread(fd, n)
    n = min(len(first), len(middle), len(last))
    del first[n:], middle[n:], last[n:]
    return first, middle, last


def prove_latches(
    fd: int, first: bytearray, middle: bytearray, last: bytearray, latches: list[tuple[int, int]]
) -> bytearray:
    """The middle copy with every latch proved whole (see above); ``latches``: (value offset, copy size).

    Returns ``middle`` patched, or a middle copy read again. Raises OSError.
    """
    for attempt in range(COPY_ROUNDS + 1):
        moving = [
            (off, size)
            for off, size in latches
            if off + 8 <= len(first) and first[off : off + 8] != last[off : off + 8]
        ]
        if not moving or attempt == COPY_ROUNDS:
            break
        time.sleep(0)
        first, middle, last = read_copies(fd, os.fstat(fd).st_size)
    for off, copy_size in moving:
        for _ in range(10_000):
            s1 = os.pread(fd, 8, off)
            which = cells.load_u64(bytearray(s1), 0) & 1 if len(s1) == 8 else 0
            start = off + 8 + which * copy_size
            data = os.pread(fd, copy_size, start)
            if os.pread(fd, 8, off) == s1 and len(data) == copy_size:
                middle[off : off + 8] = s1
                middle[start : start + copy_size] = data
                break
        # A writer that kept this value moving through every attempt: the
        # middle copy stays, as a mapped read would give up and use the last value.
    return middle
