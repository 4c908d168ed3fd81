"""Values of the multi-word metric types, which can be added and differenced.

``HistogramValue + HistogramValue`` and ``SummaryValue + SummaryValue`` are
the sums the collector takes across processes and the archive keeps for the
dead; ``later.since(earlier)`` is what happened in between (for rates and
interval percentiles). Integers and floats already do both (``+``, ``-``).
Re-exported by ``reader`` (where they lived first).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from itertools import accumulate
from typing import Any

from . import _layout as L


def json_number(value: float) -> float | str:
    """JSON has no NaN or infinities: they become the strings "NaN", "+Inf", "-Inf"."""
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return value


def joined_extremes(a: Any, b: Any) -> tuple[float | None, float | None]:
    """The (min, max) of two readings added up: the smaller min and the larger max, over the sides with
    observations; unknown (None) when such a side has none (a file from a writer older than format 1.2)."""
    if not b.count:
        return a.min, a.max
    if not a.count:
        return b.min, b.max
    if a.min is None or b.min is None:
        return None, None
    return min(a.min, b.min), max(a.max, b.max)


@dataclass(frozen=True)
class HistogramValue:
    """A consistent histogram reading. ``buckets``: (upper bound, cumulative count), +Inf last.

    ``min`` and ``max``: the smallest and largest observation over the series' lifetime (never reset,
    also in ``since``); None without observations, or when a writer older than format 1.2 wrote it.
    """

    count: int
    sum: float
    buckets: tuple[tuple[float, int], ...]
    log_buckets: bool = False
    min: float | None = None
    max: float | None = None

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
        lo, hi = joined_extremes(self, other)
        return HistogramValue(self.count + other.count, self.sum + other.sum, buckets, self.log_buckets, lo, hi)

    def since(self, previous: HistogramValue) -> HistogramValue:
        """The observations made after ``previous`` (an earlier reading of the same series)."""
        self._same_bounds(previous)
        buckets = tuple((b, c - d) for (b, c), (_, d) in zip(self.buckets, previous.buckets, strict=True))
        return replace(self, count=self.count - previous.count, sum=self.sum - previous.sum, buckets=buckets)

    def percentile(self, q: float) -> float:
        """Estimate the q-th quantile (0 <= q <= 1); NaN without observations.

        Log buckets are estimated by the harmonic midpoint of the bucket,
        which bounds the relative error by the buckets' relative_error;
        other buckets by linear interpolation, like PromQL's histogram_quantile.
        With min and max known, the first bucket starts at the min and the +Inf
        bucket ends at the max, and every estimate is kept within them.
        """
        if not 0 <= q <= 1:
            raise ValueError("q must be between 0 and 1")
        if self.count == 0:
            return float("nan")
        estimate = self._estimate(q)
        if self.min is not None and self.max is not None:
            return min(max(estimate, self.min), self.max)
        return estimate

    def _estimate(self, q: float) -> float:
        rank = q * self.count
        lower, below = 0.0, 0
        for i, (upper, cumulative) in enumerate(self.buckets):
            if cumulative >= rank and cumulative > below:
                if i == 0:  # below the first bound: from the min when known
                    lower = min(0.0, upper) if self.min is None else self.min
                if upper == float("inf"):
                    if self.max is None:
                        return lower  # beyond the last bound: the best we can say
                    upper = self.max  # up to the max when known
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
            **_json_extremes(self),
        }


@dataclass(frozen=True)
class SummaryValue:
    """count and sum; ``min`` and ``max`` as HistogramValue's (lifetime; None when absent)."""

    count: int
    sum: float
    min: float | None = None
    max: float | None = None

    def __add__(self, other: SummaryValue) -> SummaryValue:
        if not isinstance(other, SummaryValue):
            return NotImplemented
        return SummaryValue(self.count + other.count, self.sum + other.sum, *joined_extremes(self, other))

    def since(self, previous: SummaryValue) -> SummaryValue:
        """The observations made after ``previous`` (an earlier reading of the same series)."""
        return replace(self, count=self.count - previous.count, sum=self.sum - previous.sum)

    @property
    def average(self) -> float:
        return self.sum / self.count if self.count else float("nan")

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "sum": json_number(self.sum), **_json_extremes(self)}


def _json_extremes(value: HistogramValue | SummaryValue) -> dict[str, Any]:
    """JSON's ``min`` and ``max``: null when unknown (no observation, or a writer older than format 1.2)."""
    known = value.min is not None and value.max is not None
    return {"min": json_number(value.min) if known else None, "max": json_number(value.max) if known else None}  # type: ignore[arg-type]


# -- Exponential histograms (format 1.2) -----------------------------------------


def exp_bound(index: int, scale: int) -> float:
    """The lower bound of bucket ``index`` at ``scale``: base**index, base = 2**2**-scale (inf past f64)."""
    if scale <= 0:
        e = index << -scale
        return math.ldexp(1.0, e) if e <= 1023 else math.inf
    whole, part = divmod(index, 1 << scale)  # base**index = 2**whole * 2**(part / 2**scale)
    try:
        return math.ldexp(float(2.0 ** (part / (1 << scale))), whole)
    except OverflowError:
        return math.inf


def exp_relative_error(scale: int) -> float:
    """The most a percentile can be off, relatively, at ``scale``: (base - 1) / (base + 1)."""
    base = float(2.0 ** (2.0**-scale))
    return (base - 1) / (base + 1)


Buckets = tuple[int, tuple[int, ...]]  # (index of the first bucket, counts of consecutive buckets)


def _downscale(buckets: Buckets, by: int) -> Buckets:
    """Buckets merged ``2**by`` into one: index i becomes i >> by (exact: each old bucket fits one new)."""
    offset, counts = buckets
    if by == 0 or not counts:
        return buckets
    first = offset >> by
    out = [0] * (((offset + len(counts) - 1) >> by) - first + 1)
    for i, c in enumerate(counts):
        out[((offset + i) >> by) - first] += c
    return first, tuple(out)


def _combine(a: Buckets, b: Buckets, sign: int) -> Buckets:
    """a + sign * b, bucket by bucket, with empty edges trimmed."""
    if not b[1]:
        return a
    if not a[1]:
        a = (b[0], ())
    first = min(a[0], b[0])
    out = [0] * (max(a[0] + len(a[1]), b[0] + len(b[1])) - first)
    for i, c in enumerate(a[1]):
        out[a[0] - first + i] += c
    for i, c in enumerate(b[1]):
        out[b[0] - first + i] += sign * c
    lo, hi = 0, len(out)
    while lo < hi and not out[lo]:
        lo += 1
    while hi > lo and not out[hi - 1]:
        hi -= 1
    return (first + lo, tuple(out[lo:hi])) if lo < hi else (0, ())


@dataclass(frozen=True)
class ExpHistogramValue:
    """A consistent exponential histogram reading (Prometheus native / OpenTelemetry exponential).

    Bucket ``i`` of ``positive`` counts observations in (base**i, base**(i+1)],
    of ``negative`` those in [-base**(i+1), -base**i), with base = 2**2**-scale;
    ``zero_count`` those with ``|v| <= zero_threshold``. ``min`` and ``max`` are
    over the series' lifetime (NaN without observations). Values of different
    scales add up exactly: the finer one is downscaled to the coarser.
    """

    count: int
    sum: float
    min: float
    max: float
    scale: int
    zero_threshold: float
    zero_count: int
    positive: Buckets
    negative: Buckets

    def _key(self) -> tuple[Any, ...]:
        # NaN (min and max without observations; a sum of +inf and -inf) equals NaN here: from Python
        # 3.13 on a dataclass compares field by field, where nan != nan made two empty readings differ.
        floats = (None if v != v else v for v in (self.sum, self.min, self.max))
        return (self.count, *floats, self.scale, self.zero_threshold, self.zero_count, self.positive, self.negative)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._key() == other._key()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._key())

    @classmethod
    def empty(cls, zero_threshold: float = 0.0) -> ExpHistogramValue:
        return cls(0, 0.0, math.nan, math.nan, L.EXP_MAX_SCALE, zero_threshold, 0, (0, ()), (0, ()))

    @classmethod
    def from_cell(cls, got: tuple[Any, ...], zero_threshold: float) -> ExpHistogramValue:
        """From an ``ExpHistogram`` cell's ``get()``."""
        count, total, lo, hi, scale, zero, pos, neg = got
        if not pos[1] and not neg[1]:
            scale = L.EXP_MAX_SCALE  # no buckets: any scale holds it; the finest merges without loss
        if not count:
            lo = hi = math.nan
        return cls(count, total, lo, hi, scale, zero_threshold, zero, pos, neg)

    @classmethod
    def from_copy(cls, copy: bytes, max_buckets: int, zero_threshold: float) -> ExpHistogramValue:
        """From one stable copy of the latch (docs/format.md section 13); ValueError names what is wrong."""
        head, pos_slots, neg_slots = L.decode_exp_copy(copy, max_buckets)
        count, total, lo, hi, zero, scale, plo, plen, nlo, nlen = head
        if not L.EXP_MIN_SCALE <= scale <= L.EXP_MAX_SCALE:
            raise ValueError(f"scale {scale} outside {L.EXP_MIN_SCALE}..{L.EXP_MAX_SCALE}")
        if plen > max_buckets or nlen > max_buckets:
            raise ValueError(f"bucket range longer than its {max_buckets} slots")
        pos = (plo, tuple(pos_slots[(plo + j) % max_buckets] for j in range(plen)))
        neg = (nlo, tuple(neg_slots[(nlo + j) % max_buckets] for j in range(nlen)))
        if zero + sum(pos[1]) + sum(neg[1]) != count:
            raise ValueError(f"bucket counts do not add up to the count {count}")
        return cls.from_cell((count, total, lo, hi, scale, zero, pos, neg), zero_threshold)

    def downscaled(self, scale: int) -> ExpHistogramValue:
        """The same observations at a coarser (smaller) ``scale``."""
        by = self.scale - scale
        if by < 0:
            raise ValueError("a histogram can only be downscaled")
        return replace(
            self, scale=scale, positive=_downscale(self.positive, by), negative=_downscale(self.negative, by)
        )

    def fitted(self, max_buckets: int) -> ExpHistogramValue:
        """Downscaled until each sign's buckets span at most ``max_buckets`` (to store a merged total)."""
        v = self
        while v.scale > L.EXP_MIN_SCALE and max(len(v.positive[1]), len(v.negative[1])) > max_buckets:
            v = v.downscaled(v.scale - 1)
        return v

    def slots(self, max_buckets: int) -> tuple[tuple[Any, ...], list[int], list[int]]:
        """The stored form (``_layout.encode_exp_copy``'s arguments) of ``fitted(max_buckets)``.

        At the coarsest scale a span still too long keeps its lowest buckets
        and folds the rest into the last one (only with fewer than 132 slots).
        """
        v = self.fitted(max_buckets)
        out: list[list[int]] = []
        ranges: list[int] = []
        for offset, counts in (v.positive, v.negative):
            slots = [0] * max_buckets
            kept = list(counts[:max_buckets])
            if len(counts) > max_buckets:
                kept[-1] += sum(counts[max_buckets:])
            for j, c in enumerate(kept):
                slots[(offset + j) % max_buckets] = c
            out.append(slots)
            ranges += [offset if kept else 0, len(kept)]
        lo, hi = (self.min, self.max) if self.count else (0.0, 0.0)
        head = (self.count, self.sum, lo, hi, self.zero_count, v.scale if ranges[1] or ranges[3] else 0, *ranges)
        return head, out[0], out[1]

    def _aligned(self, other: ExpHistogramValue) -> tuple[ExpHistogramValue, ExpHistogramValue]:
        if not isinstance(other, ExpHistogramValue):
            raise TypeError("not an exponential histogram")
        if self.zero_threshold != other.zero_threshold:
            raise ValueError("exponential histograms with different zero thresholds cannot be combined")
        scale = min(self.scale, other.scale)
        return self.downscaled(scale), other.downscaled(scale)

    def __add__(self, other: ExpHistogramValue) -> ExpHistogramValue:
        if not isinstance(other, ExpHistogramValue):
            return NotImplemented
        a, b = self._aligned(other)
        return ExpHistogramValue(
            a.count + b.count,
            a.sum + b.sum,
            min(a.min, b.min) if b.count and a.count else (a.min if a.count else b.min),
            max(a.max, b.max) if b.count and a.count else (a.max if a.count else b.max),
            a.scale,
            a.zero_threshold,
            a.zero_count + b.zero_count,
            _combine(a.positive, b.positive, 1),
            _combine(a.negative, b.negative, 1),
        )

    def since(self, previous: ExpHistogramValue) -> ExpHistogramValue:
        """The observations made after ``previous``; min and max stay the lifetime's."""
        a, b = self._aligned(previous)
        return replace(
            a,
            count=a.count - b.count,
            sum=a.sum - b.sum,
            zero_count=a.zero_count - b.zero_count,
            positive=_combine(a.positive, b.positive, -1),
            negative=_combine(a.negative, b.negative, -1),
        )

    @property
    def relative_error(self) -> float:
        """The bound on a percentile's relative error (outside the zero bucket) at this scale."""
        return exp_relative_error(self.scale)

    def ordered(self) -> list[tuple[float, float, int]]:
        """Every non-empty bucket as (lower, upper, count), from the most negative up."""
        out: list[tuple[float, float, int]] = []
        offset, counts = self.negative
        for i in range(len(counts) - 1, -1, -1):
            if counts[i]:
                idx = offset + i
                out.append((-exp_bound(idx + 1, self.scale), -exp_bound(idx, self.scale), counts[i]))
        if self.zero_count:
            out.append((-self.zero_threshold, self.zero_threshold, self.zero_count))
        offset, counts = self.positive
        for i, c in enumerate(counts):
            if c:
                out.append((exp_bound(offset + i, self.scale), exp_bound(offset + i + 1, self.scale), c))
        return out

    def percentile(self, q: float) -> float:
        """The q-th quantile (0 <= q <= 1), NaN without observations.

        The estimate is the harmonic midpoint of the bucket holding the
        observation of rank ceil(q * count), kept within [min, max]: within
        ``relative_error`` of that observation (a zero-bucket one: within the
        zero threshold).
        """
        if not 0 <= q <= 1:
            raise ValueError("q must be between 0 and 1")
        if self.count <= 0:
            return math.nan
        rank = max(math.ceil(q * self.count), 1)
        base = float(2.0 ** (2.0**-self.scale))
        midpoint = 2 * base / (1 + base)  # the harmonic midpoint of (b, b * base] is b * midpoint
        seen = 0
        estimate = self.max
        for lower, upper, c in self.ordered():
            seen += c
            if seen >= rank:
                if lower > 0:
                    estimate = lower * midpoint
                elif upper < 0:
                    estimate = upper * midpoint
                else:  # the zero bucket
                    estimate = 0.0
                break
        return min(max(estimate, self.min), self.max)

    @property
    def buckets(self) -> tuple[tuple[float, int], ...]:
        """Classic cumulative buckets (upper bound, count), +Inf last: for scrapers without native histograms."""
        out, total = [], 0
        for _lower, upper, c in self.ordered():
            total += c
            out.append((upper, total))
        if not out or out[-1][0] != math.inf:
            out.append((math.inf, self.count))
        return tuple(out)

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "sum": json_number(self.sum),
            "min": json_number(self.min),
            "max": json_number(self.max),
            "scale": self.scale,
            "zero_threshold": json_number(self.zero_threshold),
            "zero_count": self.zero_count,
            "positive": {"offset": self.positive[0], "counts": list(self.positive[1])},
            "negative": {"offset": self.negative[0], "counts": list(self.negative[1])},
        }
