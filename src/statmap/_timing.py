"""Context managers that are also decorators: timing a block, tracking work in progress.

Both cell implementations return these from ``time()`` and ``track_inprogress()``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class Timing:
    """Passes the seconds a block (or each call of a decorated function) took to ``record``."""

    __slots__ = ("_record", "_start")

    def __init__(self, record: Callable[[float], Any]) -> None:
        self._record = record
        self._start = 0.0

    def __enter__(self) -> Timing:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self._record(time.perf_counter() - self._start)

    def __call__(self, func: F) -> F:
        record = self._record

        @functools.wraps(func)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                record(time.perf_counter() - start)

        return timed  # type: ignore[return-value]


class InProgress:
    """Adds 1 to a gauge on entry (or call) and takes it away on exit."""

    __slots__ = ("_gauge",)

    def __init__(self, gauge: Any) -> None:
        self._gauge = gauge

    def __enter__(self) -> InProgress:
        self._gauge.inc()
        return self

    def __exit__(self, *exc: object) -> None:
        self._gauge.dec()

    def __call__(self, func: F) -> F:
        gauge = self._gauge

        @functools.wraps(func)
        def tracked(*args: Any, **kwargs: Any) -> Any:
            gauge.inc()
            try:
                return func(*args, **kwargs)
            finally:
                gauge.dec()

        return tracked  # type: ignore[return-value]
