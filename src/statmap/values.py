"""Values of the multi-word metric types, which can be added and differenced.

``HistogramValue + HistogramValue`` and ``SummaryValue + SummaryValue`` are
the sums the collector takes across processes and the archive keeps for the
dead; ``later.since(earlier)`` is what happened in between (for rates and
interval percentiles). Integers and floats already do both (``+``, ``-``).
Re-exported by ``reader`` (where they lived first).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate
from typing import Any


def json_number(value: float) -> float | str:
    """JSON has no NaN or infinities: they become the strings "NaN", "+Inf", "-Inf"."""
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return value


@dataclass(frozen=True)
class HistogramValue:
    """A consistent histogram reading. ``buckets``: (upper bound, cumulative count), +Inf last."""

    count: int
    sum: float
    buckets: tuple[tuple[float, int], ...]
    log_buckets: bool = False

    @classmethod
    def from_counts(
        cls, count: int, total: float, bounds: tuple[float, ...], counts: Any, log_buckets: bool = False
    ) -> HistogramValue:
        """From the stored form: count, sum and non-cumulative bucket counts (the +Inf bucket last)."""
        buckets = tuple(zip((*bounds, float("inf")), accumulate(counts), strict=False))
        return cls(count, total, buckets, log_buckets)

    def counts(self) -> list[int]:
        """The non-cumulative bucket counts (the stored form), +Inf bucket last."""
        out, previous = [], 0
        for _bound, cumulative in self.buckets:
            out.append(cumulative - previous)
            previous = cumulative
        return out

    def _same_bounds(self, other: HistogramValue) -> None:
        if len(self.buckets) != len(other.buckets) or any(
            a[0] != b[0] for a, b in zip(self.buckets, other.buckets, strict=True)
        ):
            raise ValueError("histograms with different bucket bounds cannot be combined")

    def __add__(self, other: HistogramValue) -> HistogramValue:
        if not isinstance(other, HistogramValue):
            return NotImplemented
        self._same_bounds(other)
        buckets = tuple((b, c + d) for (b, c), (_, d) in zip(self.buckets, other.buckets, strict=True))
        return HistogramValue(self.count + other.count, self.sum + other.sum, buckets, self.log_buckets)

    def since(self, previous: HistogramValue) -> HistogramValue:
        """The observations made after ``previous`` (an earlier reading of the same series)."""
        self._same_bounds(previous)
        buckets = tuple((b, c - d) for (b, c), (_, d) in zip(self.buckets, previous.buckets, strict=True))
        return HistogramValue(self.count - previous.count, self.sum - previous.sum, buckets, self.log_buckets)

    def percentile(self, q: float) -> float:
        """Estimate the q-th quantile (0 <= q <= 1); NaN without observations.

        Log buckets are estimated by the harmonic midpoint of the bucket,
        which bounds the relative error by the buckets' relative_error;
        other buckets by linear interpolation, like PromQL's histogram_quantile.
        """
        if not 0 <= q <= 1:
            raise ValueError("q must be between 0 and 1")
        if self.count == 0:
            return float("nan")
        rank = q * self.count
        lower, below = 0.0, 0
        for i, (upper, cumulative) in enumerate(self.buckets):
            if cumulative >= rank and cumulative > below:
                if upper == float("inf"):
                    return lower  # beyond the last bound: the best we can say
                if i == 0:
                    lower = min(0.0, upper)
                if self.log_buckets and lower > 0:
                    return 2 * lower * upper / (lower + upper)
                return lower + (upper - lower) * (rank - below) / (cumulative - below)
            lower, below = upper, cumulative
        return lower

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "sum": json_number(self.sum),
            "buckets": [[json_number(b), c] for b, c in self.buckets],
        }


@dataclass(frozen=True)
class SummaryValue:
    count: int
    sum: float

    def __add__(self, other: SummaryValue) -> SummaryValue:
        if not isinstance(other, SummaryValue):
            return NotImplemented
        return SummaryValue(self.count + other.count, self.sum + other.sum)

    def since(self, previous: SummaryValue) -> SummaryValue:
        """The observations made after ``previous`` (an earlier reading of the same series)."""
        return SummaryValue(self.count - previous.count, self.sum - previous.sum)

    @property
    def average(self) -> float:
        return self.sum / self.count if self.count else float("nan")

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "sum": json_number(self.sum)}
