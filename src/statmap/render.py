"""Values as short human-readable text, for the terminal views (show, top, demo)."""

from __future__ import annotations

import math
from typing import Any

from .reader import HistogramValue, SummaryValue

PERCENTILES = (0.5, 0.9, 0.99)


def number(value: Any) -> str:
    """A number without noise: integers as integers, others to 6 significant digits."""
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"


def value_text(value: Any, missing: str = "(none)") -> str:
    """One series value on one line: histograms as count, sum and percentiles."""
    if value is None:
        return missing
    if isinstance(value, HistogramValue):
        if not value.count:
            return "count=0"
        pct = " ".join(f"p{int(q * 100)}={number(value.percentile(q))}" for q in PERCENTILES)
        return f"count={value.count} sum={number(value.sum)} {pct}"
    if isinstance(value, SummaryValue):
        return f"count={value.count} sum={number(value.sum)} avg={number(value.average)}"
    if isinstance(value, dict):
        return " ".join(f"{k}={v!r}" for k, v in value.items())
    if isinstance(value, str):
        return repr(value)
    return number(value)
