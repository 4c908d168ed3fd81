"""Disk space for a file's bytes, reserved before they are mapped.

A store into a mapped page that the filesystem cannot back is a SIGBUS,
not an error: so a file's range is allocated before it is mapped (creation,
growth), and a full disk is a ``PublishError`` then, never a crash later.
"""

from __future__ import annotations

import errno
import os


def reserve(fd: int, start: int, end: int) -> None:
    """Allocate disk space for bytes ``start..end`` now, so later stores never SIGBUS.

    Only that range is touched: bytes before ``start`` are live (readers and
    this process's cells use them) and are never rewritten, even where the
    filesystem has no fallocate. (glibc then emulates it by writing a byte per
    block of the range asked for; musl does not emulate, and we do.)
    """
    try:
        os.posix_fallocate(fd, start, end - start)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise
        reserve_by_writing(fd, start, end)


def reserve_by_writing(fd: int, start: int, end: int) -> None:
    """No fallocate: extend, then write a zero into each block of ``start..end`` that holds no data."""
    size = os.fstat(fd).st_size
    if size < end:
        os.ftruncate(fd, end)
    pos = start
    while pos < end:
        if pos < size:  # the file already had bytes here (an earlier attempt): skip its data, fill its holes
            try:
                hole = os.lseek(fd, pos, os.SEEK_HOLE)
            except OSError:  # no SEEK_HOLE: treat it all as data, never overwrite it
                hole = size
            if hole > pos:
                pos = min(end, (hole + 4095) // 4096 * 4096)
                continue
        os.pwrite(fd, b"\0", pos)  # a hole, or beyond the old end: nothing there to lose
        pos += 4096
