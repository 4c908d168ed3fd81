"""Operator views of a collection: ``statmap ls``, ``show --aggregate`` and ``top``.

``top`` refreshes a view of the aggregate: value, per-second rate for
counters (and histogram/summary counts), percentiles for histograms over
the last interval, sortable and filterable, with process counts and
warnings for dead and corrupt files; values in their units (durations in
ms/us, bytes in KiB/MiB, other numbers with SI prefixes). On a terminal it
is interactive (``top_screen.py``, stdlib ``curses``: help, descriptions,
per-process view); otherwise it prints one sample per interval, like
vmstat.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from .breakdown import ProcessValues, SeriesKey
from .collect import ARCHIVE, CORRUPT, Collection, Collector, FileInfo, match_families
from .rates import QUANTILES, Rates
from .reader import ALIVE, CLOSED, DEAD, NOT_READY, ExpHistogramValue, HistogramValue, SummaryValue
from .render import amount, printable, printable_lines, total, value_text

# -- small formatting helpers ----------------------------------------------------


def duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def size(n: int) -> str:
    for unit in ("B", "K", "M", "G"):
        if n < 1024 or unit == "G":
            return f"{n}{unit}" if unit == "B" else f"{n:.0f}{unit}" if n >= 10 else f"{n:.1f}{unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def sample_label(name: str, labels: dict[str, str]) -> str:
    """``name{k="v",...}``, escaped for a terminal (here, so column widths are those shown)."""
    if not labels:
        return printable(name)
    return printable(name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}")


# -- ls -----------------------------------------------------------------------


def ls_lines(collection: Collection, now: float | None = None) -> list[str]:
    """One line per file: publisher name, pid, state, age, size, series count, file."""
    now = time.time() if now is None else now
    rows = [("NAME", "PID", "STATE", "AGE", "SIZE", "SERIES", "FILE")]
    for f in sorted(collection.files, key=_file_order):
        ident = f.identity
        state = f.status + (" (archived)" if f.absorbed else "")
        if f.status == ARCHIVE:
            state = f"archive of {f.absorbed_count}"
        age = duration(now - ident.created_ns / 1e9) if ident else "-"
        rows.append(
            (
                f.name or "?",
                str(f.pid) if ident and f.status != ARCHIVE else "-",
                state,
                age,
                size(f.size),
                str(f.series) if ident else "-",
                os.path.basename(f.path),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)).rstrip() for r in rows]
    for f in collection.files:
        if f.error:
            lines.append(f"{f.path}: {f.error}")
    return lines


def _file_order(f: FileInfo) -> tuple[str, int, int]:
    return (f.name, 1 if f.status == ARCHIVE else 0, f.identity.created_ns if f.identity else 0)


def status_line(collection: Collection) -> str:
    counts = collection.counts()
    parts = [f"{counts.get(s, 0)} {s}" for s in (ALIVE, CLOSED, DEAD) if counts.get(s) or s == ALIVE]
    archived = sum(f.absorbed_count for f in collection.files if f.status == ARCHIVE)
    if archived:
        parts.append(f"{archived} archived")
    for s in (NOT_READY, CORRUPT):
        if counts.get(s):
            parts.append(f"{counts[s]} {s}")
    return "processes: " + ", ".join(parts)


def aggregate_lines(collection: Collection, match: str | None = None) -> list[str]:
    """``statmap show --aggregate``: every aggregated family and series."""
    lines = [f"{collection.directory}  {status_line(collection)}", ""]
    for fam in match_families(collection.families, match):
        unit = f" [{fam.unit}]" if fam.unit else ""
        mode = f", {fam.aggregation}" + (" live only" if fam.live_only else "") if fam.type == "gauge" else ""
        lines.append(f"{fam.name}  {fam.type}{unit}  ({fam.publisher}{mode})  {fam.help}".rstrip())
        rows = [(sample_label("", s.labels) or "-", value_text(s.value)) for s in fam.samples]
        width = max((len(r[0]) for r in rows), default=0)
        lines += [f"  {a:<{width}}  {b}" for a, b in rows]
    for err in collection.errors:
        lines.append(f"error: {err}")
    return lines


# -- top ----------------------------------------------------------------------


@dataclass
class Row:
    key: Any
    label: str
    type: str
    value: str
    rate: float | None  # per second; None when not a rate-able series or no previous sample
    sort_value: float
    unit: str = ""
    help: str = ""
    series: SeriesKey | None = None  # a total over processes (can be broken down); None when per process

    @property
    def rate_text(self) -> str:
        if self.rate is None:
            return ""
        return amount(self.rate, self.unit if self.type == "counter" else "", "")


SORTS = ("name", "value", "rate")
AnyHistogram = HistogramValue | ExpHistogramValue  # both have percentile(), buckets and since()


def histogram_text(now: AnyHistogram, delta: AnyHistogram | None, unit: str) -> str:
    """count, p50/p90/p99 over the interval, and the lifetime max when the file has it (format 1.2),
    else the top of the highest bucket used in the interval, in the unit."""
    window, when = (delta, "") if delta is not None and delta.count > 0 else (now, " (all time)")
    if window.count == 0:
        return f"n={total(now.count)}  (no observations)"
    pct = " ".join(f"p{round(q * 100)}={amount(window.percentile(q), unit, '')}" for q in QUANTILES)
    lower, top = 0.0, 0.0
    for bound, cumulative in window.buckets:
        if cumulative >= window.count:
            top = bound
            break
        lower = bound
    most = f"max>{amount(lower, unit, '')}" if top == math.inf else f"max<={amount(top, unit, '')}"
    if now.max is not None:  # the real one (lifetime: an interval's own max is not recorded)
        most = f"max={amount(now.max, unit, '')}"
    return f"n={total(now.count)} {pct} {most}{when}"


def summary_text(now: SummaryValue, delta: SummaryValue | None, unit: str) -> str:
    window, when = (delta, "") if delta is not None and delta.count > 0 else (now, " (all time)")
    avg = amount(window.average, unit, "") if window.count else "-"
    most = "" if now.max is None else f" min={amount(now.min, unit, '')} max={amount(now.max, unit, '')}"
    return f"n={total(now.count)} avg={avg} sum={amount(now.sum, unit, '')}{most}{when if window.count else ''}"


class TopModel:
    """Turns successive collections into rows with rates and interval percentiles; breaks a row down by process."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector
        self._rates = Rates()  # each sample against the previous one
        self._process_rates = Rates()
        self._per_process = ProcessValues()
        self.collection: Collection | None = None

    def close(self) -> None:
        self._per_process.close()

    def sample(self, match: str | None = None, sort: str = "name", reverse: bool = False) -> list[Row]:
        collection = self.collector.collect()
        self.collection = collection
        interval = self._rates.start(collection.time)
        rows: list[Row] = []
        for fam in match_families(collection.families, match):
            unit = fam.unit
            for s in fam.samples:
                key = (fam.publisher, fam.name, s.key)
                value = s.value
                rate = None
                shown = value_text(value)
                sort_value = 0.0
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    sort_value = float(value)
                    shown = amount(value, unit)
                    if fam.type == "counter":
                        rate = interval.change(key, value)[0]
                elif isinstance(value, (HistogramValue, ExpHistogramValue)):
                    sort_value = float(value.count)
                    rate, delta = interval.change(key, value)
                    shown = histogram_text(value, delta, unit)
                elif isinstance(value, SummaryValue):
                    sort_value = float(value.count)
                    rate, delta = interval.change(key, value)
                    shown = summary_text(value, delta, unit)
                series = (fam.publisher, fam.name, tuple(s.labels.items())) if s.pid is None else None
                label = sample_label(fam.name, s.labels)
                rows.append(Row(key, label, fam.type, shown, rate, sort_value, unit, fam.help, series))
        if sort == "value":
            rows.sort(key=lambda r: r.sort_value, reverse=not reverse)
        elif sort == "rate":
            rows.sort(key=lambda r: -math.inf if r.rate is None else r.rate, reverse=not reverse)
        else:
            rows.sort(key=lambda r: r.label, reverse=reverse)
        return rows

    def per_process(self, row: Row) -> list[Row]:
        """The row's series in each process file (after ``sample``): value and rate per process, by pid."""
        if row.series is None or self.collection is None:
            return []
        found = self._per_process.read(self.collection, [row.series]).get(row.series, [])
        interval = self._process_rates.start(self.collection.time)
        out = []
        for pkey, f, value in found:
            rate, delta = None, None
            shown = value_text(value)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                shown = amount(value, row.unit)
                if row.type == "counter":
                    rate = interval.change(pkey, value)[0]
            elif isinstance(value, (HistogramValue, ExpHistogramValue)):
                rate, delta = interval.change(pkey, value)
                shown = histogram_text(value, delta, row.unit)
            elif isinstance(value, SummaryValue):
                rate, delta = interval.change(pkey, value)
                shown = summary_text(value, delta, row.unit)
            label = f"pid {pkey}" + ("" if f.status == ALIVE else f" ({f.status})")
            out.append(Row(pkey, label, row.type, shown, rate, 0.0, row.unit, row.help, None))
        return out


def top_header(collection: Collection, sort: str, match: str | None) -> list[str]:
    stamp = time.strftime("%H:%M:%S", time.localtime(collection.time))
    head = f"statmap top  {stamp}  {collection.directory}  {status_line(collection)}"
    lines = [head]
    counts = collection.counts()
    warnings = []
    if counts.get(DEAD):
        warnings.append(f"{counts[DEAD]} dead process file(s): run `statmap clean` to archive them")
    if counts.get(CORRUPT):
        warnings.append(f"{counts[CORRUPT]} corrupt file(s)")
    if collection.errors:
        warnings.append(f"{len(collection.errors)} error(s): {collection.errors[0]}")
    if warnings:
        lines.append("WARNING: " + "; ".join(warnings))
    lines.append(f"sort: {sort}" + (f"  filter: {match}" if match else ""))
    return lines


def _fit(label: str, width: int) -> str:
    """``label`` in ``width`` columns: cut in the middle (``~``), so the metric and the last labels both show."""
    if len(label) <= width:
        return label
    keep = max(1, width - 1)
    head = keep * 2 // 3
    return label[:head] + "~" + label[len(label) - (keep - head) :]


def row_lines(rows: Sequence[Row], width: int = 200, descriptions: bool = False) -> list[str]:
    """The table: the value column is never cut when it fits the screen; labels give way first."""
    value_w = max((len(r.value) for r in rows), default=5)
    rate_w = max([6, *(len(r.rate_text) for r in rows)])
    fixed = 9 + rate_w + 6
    longest = max((len(r.label) for r in rows), default=10)
    label_w = min(longest, max(width - fixed - value_w - 1, min(longest, 36)))  # labels keep 36 columns
    out = [f"{'SERIES':<{label_w}}  {'TYPE':<9}  {'RATE/s':>{rate_w}}  VALUE"]
    for r in rows:
        out.append(f"{_fit(r.label, label_w):<{label_w}}  {r.type:<9}  {r.rate_text:>{rate_w}}  {r.value}"[:width])
        if descriptions:
            unit = f" [{r.unit}]" if r.unit else ""
            out.append(f"    {r.help or '(no description)'}{unit}"[:width])
    return out


def run_plain(
    model: TopModel, *, interval: float, count: int | None, match: str | None, sort: str, reverse: bool,
    out: TextIO = sys.stdout,
) -> int:  # fmt: skip
    """Non-interactive: one sample per interval (the first has no rates)."""
    n = 0
    while True:
        rows = model.sample(match, sort, reverse)
        assert model.collection is not None
        lines = top_header(model.collection, sort, match) + row_lines(rows) + [""]
        out.write(printable_lines(lines) + "\n")
        out.flush()
        n += 1
        if count is not None and n >= count:
            return 0
        time.sleep(interval)
