"""Opt-in garbage-collector counters for a publisher, gathered through ``gc.callbacks``.

``statmap.gc_metrics(publisher)`` publishes, per generation (``generation``
label), prometheus_client's ``python_gc_collections_total``,
``python_gc_objects_collected_total`` and
``python_gc_objects_uncollectable_total``, plus ``python_gc_seconds_total``
(time spent collecting). The interpreter calls the callback at the start
and the end of every collection: a ``perf_counter()`` and four counter
increments per collection, measured in benchmarks/gc_callbacks.py
(docs/benchmarks.md, "GC counters"). Nothing runs between collections.

Cells are re-pointed at fork like every other cell of the publisher, so a
forked worker counts into its own file.
"""

from __future__ import annotations

import gc
import threading
import time
import weakref
from typing import Any

_GENERATIONS = 3


class GCMetrics:
    """The GC counters of one publisher; ``close()`` stops counting."""

    def __init__(self, publisher: Any) -> None:
        collections = publisher.counter(
            "python_gc_collections", "Number of times this generation was collected", labels=("generation",)
        )
        collected = publisher.counter(
            "python_gc_objects_collected", "Objects collected during gc", labels=("generation",)
        )
        uncollectable = publisher.counter(
            "python_gc_objects_uncollectable", "Uncollectable objects found during GC", labels=("generation",)
        )
        seconds = publisher.counter(
            "python_gc_seconds", "Time spent in garbage collection", labels=("generation",), float=True,
            unit="seconds",
        )  # fmt: skip
        # bound once: the callback does no label lookup
        self._cells = [
            (collections.labels(str(g)), collected.labels(str(g)), uncollectable.labels(str(g)), seconds.labels(str(g)))
            for g in range(_GENERATIONS)
        ]
        self._started = 0.0
        self._clock = time.perf_counter
        self.start()

    def start(self) -> None:
        """Count collections (again, after ``close()``)."""
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = self._clock()
            return
        generation = info.get("generation", 0)
        if 0 <= generation < _GENERATIONS:
            count, collected, uncollectable, seconds = self._cells[generation]
            seconds.inc(self._clock() - self._started)
            count.inc()
            collected.inc(info.get("collected", 0))
            uncollectable.inc(info.get("uncollectable", 0))

    def close(self) -> None:
        try:
            gc.callbacks.remove(self._callback)
        except ValueError:
            pass


_made: weakref.WeakKeyDictionary[Any, GCMetrics] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def gc_metrics(publisher: Any) -> GCMetrics:
    """Count this interpreter's garbage collections into ``publisher`` (until ``close()``).

    Asking again for the same publisher gives the same counters (started
    again if closed). ``statmap.gc_metrics()`` uses the default publisher.
    """
    with _lock:
        found = _made.get(publisher)
        if found is None:
            found = _made[publisher] = GCMetrics(publisher)
        else:
            found.start()
        return found
