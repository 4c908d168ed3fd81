"""The ``statmap`` command: show what processes publish, and a live demo.

Each subcommand is a function ``cmd_NAME(args) -> int`` registered in
``build_parser``; later subcommands (ls, top, clean, export, serve) plug in
the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any

from .directory import default_directory
from .discover import statmap_files
from .errors import CollectionError, FormatError
from .reader import Series, Snapshot
from .reader import open as open_reader
from .render import value_text


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


def format_value(series: Series) -> str:
    return value_text(series.value, missing="(unreadable: writer busy)")


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
    if getattr(args, "aggregate", False):
        return cmd_show_aggregate(args)
    snapshots, errors = read_snapshots(target_paths(args))
    if getattr(args, "match", None):
        import re

        rx = re.compile(args.match)
        snapshots = [
            Snapshot(s.path, s.status, s.identity, [x for x in s.series if rx.search(x.name)], s.version, s.size)
            for s in snapshots
        ]
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


# -- many processes: aggregate, ls, export, clean, top (collect.py, expose.py, archive.py, top.py) --


def _collector(args: argparse.Namespace, **options: Any) -> Any:
    from .collect import Collector

    publishers = getattr(args, "publisher", None) or None
    return Collector(args.dir or default_directory(), publishers=publishers, **options)


def _report_errors(collection: Any) -> int:
    for err in collection.errors:
        print(f"statmap: {err}", file=sys.stderr)
    return 1 if collection.errors else 0


def cmd_show_aggregate(args: argparse.Namespace) -> int:
    from .expose import Exposer
    from .top import aggregate_lines

    if args.paths:
        print("statmap show --aggregate reads a directory (--dir), not single files", file=sys.stderr)
        return 2
    with _collector(args) as collector:
        collection = collector.collect()
    if args.json:
        sys.stdout.write(Exposer(match=args.match).json(collection) + "\n")
    else:
        print("\n".join(aggregate_lines(collection, args.match)))
    return 1 if collection.errors else 0


def cmd_ls(args: argparse.Namespace) -> int:
    from .top import ls_lines

    with _collector(args) as collector:
        collection = collector.collect()
    if args.json:
        json.dump([f.to_json() for f in collection.files], sys.stdout, indent=2, allow_nan=False)
        sys.stdout.write("\n")
    elif not collection.files:
        print(f"no statmap files in {collection.directory}")
    else:
        print("\n".join(ls_lines(collection)))
    return 1 if any(f.status == "corrupt" for f in collection.files) else 0


def cmd_export(args: argparse.Namespace) -> int:
    from .expose import Exposer

    exposer = Exposer(publisher_label=args.publisher_label, include_text=args.include_text, match=args.match)
    with _collector(args, clean=args.clean) as collector:
        collection = collector.collect()
    sys.stdout.write(exposer.render(collection, args.format))
    for problem in exposer.problems:
        print(f"statmap: {problem}", file=sys.stderr)
    return _report_errors(collection)


def cmd_clean(args: argparse.Namespace) -> int:
    from .archive import clean
    from .errors import DirectoryError

    directory = args.dir or default_directory()
    try:
        report = clean(directory, dry_run=args.dry_run, older_than=args.older_than, publishers=args.publisher or None)
    except DirectoryError as exc:
        print(f"statmap: {exc}", file=sys.stderr)
        return 1
    if args.json:
        json.dump(report.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        verb = "would fold" if args.dry_run else "folded"
        for path in report.folded:
            print(f"{verb} {os.path.basename(path)} into its archive{'' if args.dry_run else ' and removed it'}")
        for path in report.removed:
            print(
                f"{'would remove' if args.dry_run else 'removed'} {os.path.basename(path)} (already archived or stale)"
            )
        for path, why in report.kept:
            print(f"kept {os.path.basename(path)}: {why}")
        for path in report.archives:
            print(f"wrote {path}")
        if not (report.folded or report.removed or report.kept or report.errors):
            print(f"nothing to clean in {directory}")
    for path, problem in report.errors:
        print(f"statmap: {path}: {problem}", file=sys.stderr)
    return 1 if report.errors else 0


def cmd_top(args: argparse.Namespace) -> int:
    import re

    from .top import TopModel, run_curses, run_plain

    if args.match:
        re.compile(args.match)
    with _collector(args) as collector:
        model = TopModel(collector)
        interactive = sys.stdout.isatty() and not args.plain and args.count is None
        if interactive:
            return run_curses(model, interval=args.interval, match=args.match, sort=args.sort, reverse=args.reverse)
        return run_plain(
            model, interval=args.interval, count=args.count, match=args.match, sort=args.sort, reverse=args.reverse
        )


def _add_ops_commands(sub: Any) -> None:
    dir_help = f"statmap directory (default: $STATMAP_DIR or {default_directory()})"

    ls = sub.add_parser("ls", help="one line per file: name, pid, state, age, size, series")
    ls.add_argument("--dir", help=dir_help)
    ls.add_argument("--publisher", action="append", metavar="NAME", help="only this publisher name (repeatable)")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(func=cmd_ls)

    export = sub.add_parser("export", help="print the aggregated metrics as OpenMetrics, Prometheus text or JSON")
    export.add_argument("--dir", help=dir_help)
    export.add_argument("--format", choices=("openmetrics", "prometheus", "json"), default="openmetrics")
    export.add_argument("--match", metavar="REGEX", help="only metrics whose name matches")
    export.add_argument("--publisher", action="append", metavar="NAME", help="only this publisher name (repeatable)")
    export.add_argument(
        "--publisher-label", choices=("auto", "always"), default="auto",
        help="add a publisher label only where names are shared (auto) or always",
    )  # fmt: skip
    export.add_argument("--include-text", action="store_true", help="also export text metrics (as info)")
    export.add_argument("--clean", action="store_true", help="archive ended processes first (statmap clean)")
    export.set_defaults(func=cmd_export)

    clean = sub.add_parser("clean", help="fold the files of ended processes into archives and remove them")
    clean.add_argument("--dir", help=dir_help)
    clean.add_argument("--dry-run", action="store_true", help="say what would be done, change nothing")
    clean.add_argument(
        "--older-than", type=float, default=0.0, metavar="SECONDS",
        help="only processes that ended at least this long ago",
    )  # fmt: skip
    clean.add_argument("--publisher", action="append", metavar="NAME", help="only this publisher name (repeatable)")
    clean.add_argument("--json", action="store_true", help="print what was done as JSON")
    clean.set_defaults(func=cmd_clean)

    top = sub.add_parser("top", help="a live view of the aggregated metrics, with rates and percentiles")
    top.add_argument("--dir", help=dir_help)
    top.add_argument(
        "--interval", "-n", type=float, default=1.0, metavar="SECONDS", help="refresh interval (default 1)"
    )
    top.add_argument("--count", "-c", type=int, default=None, help="stop after this many samples (implies --plain)")
    top.add_argument("--match", metavar="REGEX", help="only series whose metric name matches")
    top.add_argument("--sort", choices=("name", "value", "rate"), default="name")
    top.add_argument("--reverse", action="store_true", help="reverse the sort order")
    top.add_argument(
        "--plain", action="store_true", help="print samples one after another (the default when not a tty)"
    )
    top.add_argument("--publisher", action="append", metavar="NAME", help="only this publisher name (repeatable)")
    top.set_defaults(func=cmd_top)


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import serve

    return serve(
        args.dir or default_directory(), args.host, args.port, token=args.token, access_log=args.access_log,
        max_age=args.max_age, publishers=args.publisher or None, publisher_label=args.publisher_label,
        include_text=args.include_text,
    )  # fmt: skip


def _add_serve_command(sub: Any) -> None:
    from .server import DEFAULT_HOST, DEFAULT_PORT

    serve = sub.add_parser("serve", help="serve /metrics (Prometheus, OpenMetrics), a JSON API and a live dashboard")
    serve.add_argument("--dir", help=f"statmap directory (default: $STATMAP_DIR or {default_directory()})")
    serve.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST}: loopback)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free)")
    serve.add_argument(
        "--token", default=None,
        help="require Authorization: Bearer TOKEN (or Basic with TOKEN as password) on every route "
        "(default: $STATMAP_TOKEN)",
    )  # fmt: skip
    serve.add_argument(
        "--max-age", type=float, default=0.5, metavar="SECONDS",
        help="share one collection between requests for this long (default 0.5)",
    )  # fmt: skip
    serve.add_argument("--publisher", action="append", metavar="NAME", help="only this publisher name (repeatable)")
    serve.add_argument("--publisher-label", choices=("auto", "always"), default="auto")
    serve.add_argument("--include-text", action="store_true", help="also export text metrics (as info)")
    serve.add_argument("--access-log", action="store_true", help="log every request on stderr")
    serve.set_defaults(func=cmd_serve)


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(seconds=args.seconds, workers=args.workers, directory=args.dir, port=args.port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="statmap", description="Read what running programs publish with statmap.")
    sub = parser.add_subparsers(dest="command", required=True)

    show = sub.add_parser("show", help="print every series of every process file")
    show.add_argument("paths", nargs="*", metavar="PATH", help="files to show (default: every file in --dir)")
    show.add_argument("--dir", help=f"statmap directory (default: $STATMAP_DIR or {default_directory()})")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.add_argument("--aggregate", action="store_true", help="the aggregated view of every process in --dir")
    show.add_argument("--match", metavar="REGEX", help="only metrics whose name matches")
    show.add_argument("--publisher", action="append", metavar="NAME", help="with --aggregate: only this publisher name")
    show.set_defaults(func=cmd_show)
    _add_ops_commands(sub)
    _add_serve_command(sub)

    demo = sub.add_parser("demo", help="start worker processes publishing metrics and show them live")
    demo.add_argument("--seconds", type=float, default=None, help="stop after this many seconds (default: Ctrl-C)")
    demo.add_argument("--workers", type=int, default=3, help="number of worker processes (default 3)")
    demo.add_argument("--dir", help="directory for the demo's files (default: a new temporary directory)")
    demo.add_argument(
        "--port", type=int, default=9464, help="dashboard port on 127.0.0.1 (default 9464, else any free port; 0: any)"
    )
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except CollectionError as exc:  # a collection that cannot read what it needs reports nothing partial
        print(f"statmap: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # stdout closed early (e.g. piped into head): not an error worth a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
