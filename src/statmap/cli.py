"""The ``statmap`` command: show what processes publish, and a live demo.

Each subcommand is a function ``cmd_NAME(args) -> int`` registered in
``build_parser``; later subcommands (ls, top, clean, export, serve) plug in
the same way.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any

from .directory import default_directory
from .discover import statmap_files
from .errors import FormatError
from .reader import HistogramValue, Series, Snapshot, SummaryValue
from .reader import open as open_reader


def read_snapshots(paths: Iterable[str]) -> tuple[list[Snapshot], list[FormatError]]:
    """Snapshots of every readable file; corrupt ones are returned as errors, not raised."""
    snapshots, errors = [], []
    for path in paths:
        try:
            with open_reader(path) as reader:
                snapshots.append(reader.snapshot())
        except FormatError as exc:
            errors.append(exc)
    return snapshots, errors


def series_label(series: Series) -> str:
    if not series.labels:
        return series.name
    inner = ",".join(f'{k}="{v}"' for k, v in series.labels.items())
    return f"{series.name}{{{inner}}}"


def format_number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"


def format_value(series: Series) -> str:
    value = series.value
    if value is None:
        return "(unreadable: writer busy)"
    if isinstance(value, HistogramValue):
        if not value.count:
            return "count=0"
        pct = " ".join(f"p{int(q * 100)}={format_number(value.percentile(q))}" for q in (0.5, 0.9, 0.99))
        return f"count={value.count} sum={format_number(value.sum)} {pct}"
    if isinstance(value, SummaryValue):
        return f"count={value.count} sum={format_number(value.sum)} avg={format_number(value.average)}"
    if isinstance(value, dict):
        return " ".join(f"{k}={v!r}" for k, v in value.items())
    if isinstance(value, str):
        return repr(value)
    return format_number(value)


def describe(snapshot: Snapshot, now: float | None = None) -> str:
    now = time.time() if now is None else now
    ident = snapshot.identity
    if ident is None:
        return f"{snapshot.path}  {snapshot.status}"
    age = now - ident.created_ns / 1e9
    return f"{ident.publisher}  pid {ident.pid}  {snapshot.status}  age {age:.0f}s  {ident.program}  {snapshot.path}"


def render_text(snapshots: Sequence[Snapshot], errors: Sequence[FormatError]) -> str:
    lines: list[str] = []
    for snap in snapshots:
        lines.append(describe(snap))
        width = max((len(series_label(s)) for s in snap.series), default=0)
        for s in snap.series:
            unit = f" {s.unit}" if s.unit else ""
            lines.append(f"  {series_label(s):<{width}}  {s.type:<9}  {format_value(s)}{unit}")
        lines.append("")
    for err in errors:
        lines.append(f"corrupt: {err}")
    return "\n".join(lines)


def target_paths(args: argparse.Namespace) -> list[str]:
    if args.paths:
        return list(args.paths)
    return statmap_files(args.dir or default_directory())


def cmd_show(args: argparse.Namespace) -> int:
    snapshots, errors = read_snapshots(target_paths(args))
    if args.json:
        doc: dict[str, Any] = {"processes": [s.to_json() for s in snapshots]}
        if errors:
            doc["errors"] = [{"path": e.path, "problem": e.problem} for e in errors]
        json.dump(doc, sys.stdout, indent=2, allow_nan=False)
        sys.stdout.write("\n")
    else:
        if not snapshots and not errors:
            where = ", ".join(args.paths) if args.paths else args.dir or default_directory()
            print(f"no statmap files in {where}")
        else:
            print(render_text(snapshots, errors))
    return 1 if errors else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(seconds=args.seconds, workers=args.workers, directory=args.dir)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="statmap", description="Read what running programs publish with statmap.")
    sub = parser.add_subparsers(dest="command", required=True)

    show = sub.add_parser("show", help="print every series of every process file")
    show.add_argument("paths", nargs="*", metavar="PATH", help="files to show (default: every file in --dir)")
    show.add_argument("--dir", help=f"statmap directory (default: $STATMAP_DIR or {default_directory()})")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=cmd_show)

    demo = sub.add_parser("demo", help="start worker processes publishing metrics and show them live")
    demo.add_argument("--seconds", type=float, default=None, help="stop after this many seconds (default: Ctrl-C)")
    demo.add_argument("--workers", type=int, default=3, help="number of worker processes (default 3)")
    demo.add_argument("--dir", help="directory for the demo's files (default: a new temporary directory)")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # stdout closed early (e.g. piped into head): not an error worth a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
