"""Histogram bucket bounds: prometheus_client's defaults and geometric (log) buckets.

Re-exported by ``metrics`` (``statmap.DEFAULT_BUCKETS``, ``statmap.LogBuckets``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from . import _layout as L

#: prometheus_client's default buckets, in seconds.
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


@dataclass(frozen=True)
class LogBuckets:
    """Geometric buckets from ``low`` to at least ``high``.

    Any percentile estimated from them (by the harmonic midpoint of its
    bucket) is within ``relative_error`` of the true value, for values in
    [low, high].
    """

    low: float = 1e-6
    high: float = 1e3
    relative_error: float = 0.02

    def bounds(self) -> tuple[float, ...]:
        if not (0 < self.low < self.high) or not math.isfinite(self.high):
            raise ValueError("LogBuckets needs 0 < low < high < inf")
        if not 0 < self.relative_error < 1:
            raise ValueError("relative_error must be between 0 and 1")
        growth = (1 + self.relative_error) / (1 - self.relative_error)
        # The first bound is low / growth, so low itself falls in a bounded bucket.
        count = math.ceil(math.log(self.high / self.low) / math.log(growth)) + 2
        if count > L.MAX_PARAMS:
            raise ValueError(f"LogBuckets would need {count} buckets; the limit is {L.MAX_PARAMS}")
        return tuple(self.low * growth ** (i - 1) for i in range(count))


@dataclass(frozen=True)
class Exponential:
    """Base-2 exponential buckets (Prometheus native / OpenTelemetry exponential histograms).

    ``max_buckets`` slots per sign; the writer starts at ``max_scale`` (base
    2**2**-max_scale; 8 is Prometheus' finest) and halves the resolution
    whenever the observed range would need more slots. Observations with
    ``|v| <= zero_threshold`` count in the zero bucket. A percentile is
    within (base - 1) / (base + 1) of the true value at the final scale
    (0.14% at scale 8, 2.7% at scale 4, 17% at scale 1).
    """

    max_buckets: int = 160
    zero_threshold: float = 0.0
    max_scale: int = 8

    def check(self) -> None:
        if not 1 <= self.max_buckets <= L.EXP_MAX_BUCKETS:
            raise ValueError(f"max_buckets must be 1..{L.EXP_MAX_BUCKETS}")
        if not 0 <= self.zero_threshold < math.inf:
            raise ValueError("zero_threshold must be finite and not negative")
        if not L.EXP_MIN_SCALE <= self.max_scale <= L.EXP_MAX_SCALE:
            raise ValueError(f"max_scale must be {L.EXP_MIN_SCALE}..{L.EXP_MAX_SCALE}")
