"""The repeat poll of many files in one call: are they as the last poll left them?

A collector polls every file at every scrape. For a live file it holds (its
descriptor kept, mapped, not read through copies) and whose records are all
parsed, a poll that finds nothing changed comes down to: the file's size
(``fstat``), its magic and the header words a writer changes (state, end of
records, capacity) as they were, and its writer still holding its lock (a
shared lock on our descriptor is refused). ``poll_steady`` checks exactly
that for many files at once: in C with the C cells (``_cells._poll_steady``,
private), else its pure-Python twin here, kept equal by the tests. Any file
that differs in any way is left to the reader's full poll, which checks
everything again and names what changed; so the two paths give the same
results.

Below ``reader.py`` (``Reader.steady`` gives a file's item).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Sequence
from typing import Any

from . import _layout as L
from . import cells

#: The header as the C call needs it: magic, the offsets of state, end and capacity, the ready state.
LAYOUT = (L.MAGIC, L.OFF_STATE, L.OFF_END, L.OFF_CAPACITY, int(L.State.READY))

#: (mapping, descriptor, size, end of records, capacity), as the last full poll left a file.
Item = tuple[Any, int, int, int, int]


def poll_steady(items: Sequence[Item | None], layout: tuple[bytes, int, int, int, int] = LAYOUT) -> bytes:
    """Per item one byte: 0 when the file is as it was and its writer alive, else 1 (take the full poll)."""
    magic, off_state, off_end, off_capacity, ready = layout
    load = cells.load_u64
    out = bytearray(len(items))
    for i, item in enumerate(items):
        out[i] = 1
        if item.__class__ is not tuple or len(item) != 5:  # type: ignore[union-attr]
            continue
        m, fd, size, end, capacity = item  # type: ignore[misc]
        try:
            same = (
                fd.__class__ is int
                and size.__class__ is int
                and 0 <= fd <= 2**31 - 1
                and len(m) == size
                and os.fstat(fd).st_size == size
                and m[: len(magic)] == magic
                and load(m, off_state) == ready  # state, end, capacity: the full poll's order
                and load(m, off_end) == end
                and load(m, off_capacity) == capacity
            )
        except (OSError, ValueError, TypeError, OverflowError):
            continue  # a closed descriptor or mapping, not what a reader leaves: the full poll
        if not same:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            out[i] = 0  # the writer holds its exclusive lock: alive
            continue
        except OSError:
            continue
        fcntl.flock(fd, fcntl.LOCK_UN)  # no writer holds it: the full poll says dead
    return bytes(out)


#: In C with the C cells (a private helper of the extension), else the twin above.
poll: Callable[[Sequence[Item | None], tuple[bytes, int, int, int, int]], bytes] = poll_steady
if cells.BACKEND == "c":
    from . import _cells

    poll = getattr(_cells, "_poll_steady", poll_steady)
