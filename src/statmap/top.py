"""Operator views of a collection: ``statmap ls``, ``show --aggregate`` and ``top``.

``top`` refreshes a view of the aggregate: value, per-second rate for
counters (and histogram/summary counts), percentiles for histograms over
the last interval, sortable and filterable, with process counts and
warnings for dead and corrupt files. On a terminal it is interactive
(stdlib ``curses``); otherwise it prints one sample per interval, like
vmstat.
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from .collect import ARCHIVE, CORRUPT, Collection, Collector, FileInfo, match_families
from .rates import QUANTILES, Rates
from .reader import ALIVE, CLOSED, DEAD, NOT_READY, HistogramValue, SummaryValue
from .render import number, printable, printable_lines, value_text

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


SORTS = ("name", "value", "rate")


class TopModel:
    """Turns successive collections into rows with rates and interval percentiles."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector
        self._rates = Rates()  # each sample against the previous one
        self.collection: Collection | None = None

    def sample(self, match: str | None = None, sort: str = "name", reverse: bool = False) -> list[Row]:
        collection = self.collector.collect()
        self.collection = collection
        interval = self._rates.start(collection.time)
        rows: list[Row] = []
        for fam in match_families(collection.families, match):
            for s in fam.samples:
                key = (fam.publisher, fam.name, s.key)
                value = s.value
                rate = None
                shown = value_text(value)
                sort_value = 0.0
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    sort_value = float(value)
                    if fam.type == "counter":
                        rate = interval.change(key, value)[0]
                elif isinstance(value, (HistogramValue, SummaryValue)):
                    sort_value = float(value.count)
                    rate, delta = interval.change(key, value)
                    if isinstance(value, HistogramValue) and delta is not None and delta.count > 0:
                        shown = self._interval(value, delta)
                rows.append(Row(key, sample_label(fam.name, s.labels), fam.type, shown, rate, sort_value))
        if sort == "value":
            rows.sort(key=lambda r: r.sort_value, reverse=not reverse)
        elif sort == "rate":
            rows.sort(key=lambda r: -math.inf if r.rate is None else r.rate, reverse=not reverse)
        else:
            rows.sort(key=lambda r: r.label, reverse=reverse)
        return rows

    @staticmethod
    def _interval(now: HistogramValue, delta: HistogramValue) -> str:
        """The cumulative count and the percentiles of the observations made in the last interval."""
        pct = " ".join(f"p{int(q * 100)}={number(delta.percentile(q))}" for q in QUANTILES)
        return f"count={now.count} {pct} (last interval)"


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


def row_lines(rows: Sequence[Row], width: int = 200) -> list[str]:
    label_w = min(max((len(r.label) for r in rows), default=10), max(20, width // 2))
    out = [f"{'SERIES':<{label_w}}  {'TYPE':<9}  {'RATE/s':>10}  VALUE"]
    for r in rows:
        rate = "" if r.rate is None else number(round(r.rate, 2))
        label = r.label if len(r.label) <= label_w else r.label[: label_w - 1] + "~"
        out.append(f"{label:<{label_w}}  {r.type:<9}  {rate:>10}  {r.value}"[:width])
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


def run_curses(model: TopModel, *, interval: float, match: str | None, sort: str, reverse: bool) -> int:
    """Interactive: q quits, s cycles the sort, r reverses it, / sets the filter, space pauses."""
    import curses

    def main(screen: Any) -> int:
        nonlocal match, sort, reverse
        curses.use_default_colors()
        curses.curs_set(0)
        screen.timeout(100)
        paused = False
        next_at = 0.0
        rows: list[Row] = []
        offset = 0
        message = ""
        while True:
            now = time.monotonic()
            if not paused and now >= next_at:
                try:
                    rows = model.sample(match, sort, reverse)
                    message = ""
                except re.error as exc:
                    message = f"bad filter: {exc}"
                    match = None
                next_at = now + interval
                draw(screen, rows, offset, paused, message)
            key = screen.getch()
            if key == -1:
                continue
            if key in (ord("q"), 27):
                return 0
            if key == ord("s"):
                sort = SORTS[(SORTS.index(sort) + 1) % len(SORTS)]
                next_at = 0
            elif key == ord("r"):
                reverse = not reverse
                next_at = 0
            elif key == ord(" "):
                paused = not paused
                next_at = 0
            elif key == ord("/"):
                match = prompt(screen, "filter (regex, empty for none): ") or None
                next_at = 0
            elif key in (curses.KEY_DOWN, ord("j")):
                offset += 1
            elif key in (curses.KEY_UP, ord("k")):
                offset = max(0, offset - 1)
            elif key == curses.KEY_NPAGE:
                offset += screen.getmaxyx()[0] - 5
            elif key == curses.KEY_PPAGE:
                offset = max(0, offset - (screen.getmaxyx()[0] - 5))
            offset = max(0, min(offset, max(0, len(rows) - 1)))
            draw(screen, rows, offset, paused, message)

    def draw(screen: Any, rows: list[Row], offset: int, paused: bool, message: str) -> None:
        height, width = screen.getmaxyx()
        screen.erase()
        assert model.collection is not None
        head = top_header(model.collection, sort + (" (reversed)" if reverse else ""), match)
        if paused:
            head[0] += "  [paused]"
        body = row_lines(rows[offset:], width - 1)
        lines = [printable(line) for line in head + body]
        for y, line in enumerate(lines[: height - 1]):
            attr = curses.A_BOLD if y < len(head) + 1 else curses.A_NORMAL
            if line.startswith("WARNING"):
                attr = curses.A_REVERSE
            try:
                screen.addnstr(y, 0, line, width - 1, attr)
            except curses.error:
                pass
        help_line = printable(message) or "q quit  s sort  r reverse  / filter  space pause  arrows scroll"
        try:
            screen.addnstr(height - 1, 0, help_line, width - 1, curses.A_DIM)
        except curses.error:
            pass
        screen.refresh()

    def prompt(screen: Any, text: str) -> str:
        height, width = screen.getmaxyx()
        curses.echo()
        curses.curs_set(1)
        screen.timeout(-1)
        screen.move(height - 1, 0)
        screen.clrtoeol()
        screen.addnstr(height - 1, 0, text, width - 1)
        raw = screen.getstr(height - 1, min(len(text), width - 2), 200)
        curses.noecho()
        curses.curs_set(0)
        screen.timeout(100)
        return str(raw.decode("utf-8", "replace")).strip()

    wrapper: Callable[..., int] = curses.wrapper
    return wrapper(main)
