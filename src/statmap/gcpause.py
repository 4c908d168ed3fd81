"""The cyclic garbage collector paused across a bulk read, its deferred pass paid at the end.

A first scrape (and ``show``, ``export``) builds a few objects per record
and series, none in reference cycles. While the heap grows like that,
CPython's collector runs passes over it again and again: a quarter of a
first scrape's time for 10,000 series. Paused, the new objects are
traversed once: when the outermost pause ends with more new objects than
the collector's first threshold, the collection the interpreter would have
run is run there, inside the caller's time (not left for the program's
next allocation), of the generations the interpreter's own thresholds pick.
(A young-generation pass of our own would move the new objects to the
middle generation, where the interpreter's next pass over it would
traverse them again.)

The pause nests and is shared by threads (a lock and a depth): the
collector is enabled again, if it was enabled when the first pause began,
only when the last one ends. A program that disables the collector itself
while a pause is in progress will find it enabled again afterwards; the
pause lasts one collection or one render.
"""

from __future__ import annotations

import gc
import threading
from types import TracebackType

_lock = threading.Lock()
_depth = 0
_resume = False


class _Paused:
    __slots__ = ()

    def __enter__(self) -> None:
        global _depth, _resume
        with _lock:
            if _depth == 0:
                _resume = gc.isenabled()
                gc.disable()
            _depth += 1

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        global _depth
        with _lock:
            _depth -= 1
            if _depth or not _resume:
                return
            gc.enable()
        if gc.get_count()[0] > gc.get_threshold()[0]:
            _Nudge()  # an allocation the collector counts: it collects now, as it would have in the pause


class _Nudge:
    """A class whose instances the cyclic collector tracks: making one lets the interpreter collect."""


#: ``with paused:`` (one shared, stateless object: entering it costs no allocation).
paused = _Paused()
