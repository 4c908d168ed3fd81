"""Rates of cumulative series between collections: ``/api/series`` and ``statmap top`` share them.

A ``Rates`` remembers, per series key, the values of earlier collections;
``Rates.start(now)`` picks the baseline (the newest earlier collection at
least about ``window`` seconds old: 0 means the previous one) and
``Interval.change(key, value)`` gives the per-second rate since it and what
was added in between (``since``): a number for a counter, a
``HistogramValue`` / ``SummaryValue`` of the interval's observations only
(the interval percentiles and averages come from it).

A value that went back (a counter reset: a process' file went away without
being archived) has no rate over that interval, never a negative one, and
neither has a value whose kind or buckets changed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Any

from .reader import ExpHistogramValue, HistogramValue, SummaryValue

CUMULATIVE = (HistogramValue, ExpHistogramValue, SummaryValue)  # values with a count and their own since()

QUANTILES = (0.5, 0.9, 0.99)  # the interval percentiles both views show


def since(value: Any, previous: Any) -> Any:
    """What a cumulative ``value`` gained after ``previous``: a number, ``HistogramValue`` or ``SummaryValue``.

    None when there is nothing to compare: another kind of value, other
    bucket bounds, or fewer observations than before (a reset).
    """
    if isinstance(value, CUMULATIVE):
        if not isinstance(previous, type(value)):
            return None
        try:
            earlier: Any = previous  # the same class as value (checked above)
            delta = value.since(earlier)  # the values' own difference (values.py)
        except ValueError:  # other bucket bounds
            return None
        return delta if delta.count >= 0 else None
    if isinstance(value, (int, float)) and isinstance(previous, (int, float)) and not isinstance(previous, bool):
        gained = value - previous
        return gained if gained >= 0 else None  # NaN (a NaN counter) is no rate either
    return None


class Interval:
    """One collection compared with its baseline; ``change`` records each series' value for later ones."""

    __slots__ = ("_before", "_point", "dt")

    def __init__(self, dt: float, before: dict[Hashable, Any], point: dict[Hashable, Any]) -> None:
        self.dt = dt  # seconds since the baseline; 0 when there is none
        self._before = before
        self._point = point

    def change(self, key: Hashable, value: Any) -> tuple[float | None, Any]:
        """(per-second rate of the count or number, what was added since the baseline), or (None, None).

        Call it for cumulative series only (counters, histograms, summaries).
        """
        self._point[key] = value
        previous = self._before.get(key)
        if previous is None or self.dt <= 0:
            return None, None
        delta = since(value, previous)
        if delta is None:
            return None, None
        count = delta.count if isinstance(delta, CUMULATIVE) else delta
        return count / self.dt, delta


class Rates:
    """The values of recent collections, enough to find a baseline about ``window`` seconds back."""

    def __init__(self, window: float = 0.0) -> None:
        self.window = window
        self._history: deque[tuple[float, dict[Hashable, Any]]] = deque()

    def start(self, now: float) -> Interval:
        """The interval from the baseline to the collection taken at ``now`` (which becomes a later baseline)."""
        baseline: tuple[float, dict[Hashable, Any]] | None = None
        for at, earlier in self._history:
            if at < now and (baseline is None or now - at >= self.window * 0.9):
                baseline = (at, earlier)
        point: dict[Hashable, Any] = {}
        self._history.append((now, point))
        while len(self._history) > 2 and now - self._history[1][0] >= self.window:
            self._history.popleft()  # keep just enough to find a baseline about a window back
        if baseline is None:
            return Interval(0.0, {}, point)
        return Interval(now - baseline[0], baseline[1], point)


__all__ = ["CUMULATIVE", "QUANTILES", "Interval", "Rates", "since"]
