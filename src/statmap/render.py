"""Terminal text: values, series and files as short human-readable text (show, top, demo).

``printable`` is the one place where text read from files (names, labels,
help, units, text values, file names, error messages) is made safe for a
terminal: a publisher must not be able to move the operator's cursor, set
the window title or reorder what they read.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .errors import FormatError
from .gcpause import paused
from .kinds import BY_NAME, Kind, human
from .kinds import PERCENTILES as PERCENTILES  # re-exported: the human forms live in kinds
from .kinds import number as number
from .reader import Series, Snapshot, SnapshotMemo
from .reader import open as open_reader

# C0 controls, DEL, C1 controls (incl. U+009B, a one-byte CSI), and the bidi
# marks, embeddings, overrides and isolates that reorder what a reader sees.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_ASCII_CONTROLS = bytes([*range(0x0A), *range(0x0B, 0x20), 0x7F])  # what _UNSAFE matches in ASCII, but "\n"
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    c = match.group()
    if c in _NAMED:
        return _NAMED[c]
    return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"


def printable(text: str) -> str:
    """``text`` with every control and bidi-override character written as a visible escape (``\\x1b``).

    Backslashes are left alone, so escaping twice changes nothing. For human
    output only: the exported formats (OpenMetrics, JSON) stay exact.
    """
    # every character _UNSAFE matches is one str.isprintable() refuses (Cc, Cf, Zl, Zp): the usual
    # text, all printable, is returned by one C scan, without the regular expression
    return text if text.isprintable() else _UNSAFE.sub(_escape, text)


def printable_lines(lines: Iterable[str]) -> str:
    """Lines for a terminal, each escaped (a newline inside one cannot fake another), joined."""
    return "\n".join(printable(line) for line in lines)


def value_text(value: Any, missing: str = "(none)", kind: Kind | None = None) -> str:
    """One series value on one line (its kind's human form): histograms as count, sum and percentiles."""
    if value is None:
        return missing
    return human(value, kind)


def read_snapshots(paths: Iterable[str]) -> tuple[list[Snapshot], list[FormatError]]:
    """Snapshots of every readable file; corrupt ones are returned as errors, not raised.

    Each reader stays open until the next file is read: the files of one
    program share their parsed metadata (record_table) while a reader of
    one of them is open, so the next file is not parsed again, and the
    series of one record in several files share its ``labels`` dict: treat
    it as read-only, like the frozen ``Series`` holding it.
    """
    snapshots, errors = [], []
    previous: Any = None
    memo = SnapshotMemo()  # the Series' fields by record and plans by template, for the files alike
    with paused:
        try:
            for path in paths:
                try:
                    reader = open_reader(path)
                except FormatError as exc:
                    errors.append(exc)
                    continue
                try:
                    snapshots.append(reader._snapshot(memo))
                except FormatError as exc:
                    errors.append(exc)
                    reader.close()
                    continue
                if previous is not None:
                    previous.close()
                previous = reader
        finally:
            if previous is not None:
                previous.close()
    return snapshots, errors


def series_label(series: Series) -> str:
    if not series.labels:
        return printable(series.name)
    inner = ",".join(f'{k}="{v}"' for k, v in series.labels.items())
    return printable(f"{series.name}{{{inner}}}")


def format_value(series: Series) -> str:
    return value_text(series.value, "(unreadable: writer busy)", BY_NAME.get(series.type))


def describe(snapshot: Snapshot, now: float | None = None) -> str:
    now = time.time() if now is None else now
    ident = snapshot.identity
    if ident is None:
        return f"{snapshot.path}  {snapshot.status}"
    age = now - ident.created_ns / 1e9
    return f"{ident.publisher}  pid {ident.pid}  {snapshot.status}  age {age:.0f}s  {ident.program}  {snapshot.path}"


def render_text(
    snapshots: Sequence[Snapshot], errors: Sequence[FormatError], notes: dict[str, str] | None = None
) -> str:
    """``statmap show``; ``notes``: path -> a line under its file's (``--process-metrics``)."""
    lines: list[str] = []
    # A series' label text by its record: the files of one program share their record objects
    # (record_table), so each distinct series is labelled once, not once per file; likewise the text
    # before its value and after it (unit) for a given column width, and its kind's human form.
    labels: dict[int, str] = {}
    around: dict[int, dict[int, tuple[str, str, Callable[[Any], str]]]] = {}  # width -> id(record) -> parts
    plain = BY_NAME["counter"].human  # number(): an int is shown as str(int)
    no_record = id(None)
    for snap in snapshots:
        lines.append(describe(snap))
        if notes and snap.path in notes:
            lines.append(f"  {notes[snap.path]}")
        series = snap.series
        ids = [id(s.record) for s in series]
        if no_record in ids:  # series built by hand: nothing to share
            ids = [-1 - i for i in range(len(series))]  # never an id, never kept below
        try:
            texts = [labels[i] for i in ids]  # a file of a program seen before: every one known
        except KeyError:
            texts = []
            for i, s in zip(ids, series, strict=True):
                text = labels.get(i)
                if text is None:
                    text = series_label(s)
                    if i >= 0:
                        labels[i] = text
                texts.append(text)
        width = max(map(len, texts), default=0)
        parts = around.get(width)
        if parts is None:
            parts = around[width] = {}
        try:
            found = [parts[i] for i in ids]
        except KeyError:
            found = []
            for i, s, text in zip(ids, series, texts, strict=True):
                part = parts.get(i)
                if part is None:
                    kind = BY_NAME.get(s.type)
                    part = (
                        f"  {text:<{width}}  {s.type:<9}  ",
                        f" {s.unit}" if s.unit else "",
                        kind.human if kind is not None else human,
                    )
                    if i >= 0:
                        parts[i] = part
                found.append(part)
        busy = "(unreadable: writer busy)"  # format_value's steps, the kind's form from the parts
        lines += [
            before + (busy if v is None else str(v) if form is plain and type(v) is int else form(v)) + after
            for (before, after, form), v in zip(found, [s.value for s in series], strict=True)
        ]
        lines.append("")
    for err in errors:
        lines.append(f"corrupt: {err}")
    text = "\n".join(lines)
    # When no line holds a character printable() escapes, the escaped lines are the lines: one scan
    # instead of one call per line. ASCII text (the usual) is checked as bytes: no control character
    # but the newlines that join the lines (printable() escapes a newline inside a line).
    if text.isascii():
        data = text.encode("ascii")
        safe = len(data.translate(None, _ASCII_CONTROLS)) == len(data) and data.count(b"\n") == len(lines) - 1
    else:
        safe = "".join(lines).isprintable()
    return text if safe else printable_lines(lines)


# -- human units (top; the dashboard's chart.js writes the same forms) ----------------

_SI = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def _digits(value: float) -> str:
    """Three significant digits, no exponent for everyday sizes: 468, 10.6, 0.123."""
    a = abs(value)
    if a >= 100 or a == 0:
        return f"{value:.0f}"
    if a >= 0.001:
        return f"{value:.3g}"
    return f"{value:.2e}"


def si(value: float) -> str:
    """A number with an SI prefix and three significant digits: 7.44M, 4.82k, 468, 0.123."""
    if value != value or value in (float("inf"), float("-inf")):
        return number(value)
    a = abs(value)
    for factor, prefix in _SI:
        if a >= factor * 0.9995:
            return _digits(value / factor) + prefix
    return _digits(value)


def total(value: Any) -> str:
    """A running total: exact below 100,000 (so a change by one shows), with an SI prefix above."""
    if isinstance(value, int) and abs(value) < 100_000:
        return str(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 100_000:
        return str(int(value))
    return si(float(value))


def amount(value: float | None, unit: str = "", sep: str = " ") -> str:
    """A value in its unit: seconds as ns/us/ms/s, bytes as B/KiB/MiB/GiB, anything else with an SI prefix."""
    if value is None:
        return "-"
    if value != value or value in (float("inf"), float("-inf")):
        return number(value)
    a = abs(value)
    if unit == "seconds":
        if a == 0:
            return f"0{sep}s"
        for factor, name in ((1e-6, "ns"), (1e-3, "us"), (1.0, "ms")):
            if a < factor:
                return _digits(value / factor * 1000) + sep + name
        if a < 600:
            return _digits(value) + sep + "s"
        return f"{int(value // 60)}m{int(value % 60):02d}s"
    if unit == "bytes":
        x, step = float(value), 0
        names = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
        while abs(x) >= 1024 and step < len(names) - 1:
            x /= 1024
            step += 1
        return (str(int(x)) if step == 0 and x.is_integer() else _digits(x)) + sep + names[step]
    text = total(value) if isinstance(value, int) or float(value).is_integer() else si(value)
    return text + (sep + printable(unit) if unit else "")
