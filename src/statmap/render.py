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
from .kinds import BY_NAME, Kind, human
from .kinds import PERCENTILES as PERCENTILES  # re-exported: the human forms live in kinds
from .kinds import number as number
from .reader import Series, Snapshot
from .reader import open as open_reader

# C0 controls, DEL, C1 controls (incl. U+009B, a one-byte CSI), and the bidi
# marks, embeddings, overrides and isolates that reorder what a reader sees.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
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
    one of them is open, so the next file is not parsed again.
    """
    snapshots, errors = [], []
    previous: Any = None
    try:
        for path in paths:
            try:
                reader = open_reader(path)
            except FormatError as exc:
                errors.append(exc)
                continue
            try:
                snapshots.append(reader.snapshot())
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


def render_text(snapshots: Sequence[Snapshot], errors: Sequence[FormatError]) -> str:
    lines: list[str] = []
    # A series' label text by its record: the files of one program share their record objects
    # (record_table), so each distinct series is labelled once, not once per file.
    labels: dict[int, str] = {}
    forms: dict[str, Callable[[Any], str]] = {}  # type name -> its human form
    for snap in snapshots:
        lines.append(describe(snap))
        texts = []
        for s in snap.series:
            record = s.record
            text = labels.get(id(record)) if record is not None else None
            if text is None:
                text = series_label(s)
                if record is not None:
                    labels[id(record)] = text
            texts.append(text)
        width = max(map(len, texts), default=0)
        for s, text in zip(snap.series, texts, strict=True):
            unit = f" {s.unit}" if s.unit else ""
            value = s.value
            if value is None:
                shown = "(unreadable: writer busy)"
            else:  # format_value's steps, with the kind's human form looked up once per type
                form = forms.get(s.type)
                if form is None:
                    kind = BY_NAME.get(s.type)
                    form = forms[s.type] = kind.human if kind is not None else human
                shown = form(value)
            lines.append(f"  {text:<{width}}  {s.type:<9}  {shown}{unit}")
        lines.append("")
    for err in errors:
        lines.append(f"corrupt: {err}")
    return printable_lines(lines)
