"""The ``statmap`` command: show what processes publish, and a live demo.

Each subcommand is a function ``cmd_NAME(args) -> int`` registered in
``build_parser``; later subcommands (ls, top, clean, export, serve) plug in
the same way.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

# imported here, not when the parser is built: a process out of descriptors still runs (P18)
from . import cli_fleet, cli_knobs
from .directory import ENV_DIR, default_directory
from .discover import statmap_files
from .errors import CollectionError, DirectoryError, ResourceError
from .gcpause import paused
from .reader import Snapshot
from .render import printable, printable_lines, read_snapshots, render_text


def readable_directory(args: argparse.Namespace) -> str:
    """The directory a command reads (``--dir``, else the default), refused if missing or unreadable.

    A mistyped ``--dir`` must not look like an idle system ("no statmap
    files", an empty export): main() turns the DirectoryError into exit 2.
    ``--pid``: the directory of that process's files (cli_fleet.py).
    """
    if getattr(args, "pid", None) is not None:
        from .cli_fleet import attached_directory

        return attached_directory(args)
    path = str(args.dir or default_directory())
    where = "" if args.dir else f" (the default; set --dir or ${ENV_DIR})"
    try:
        with os.scandir(path):
            pass
    except FileNotFoundError:
        raise DirectoryError(f"{path}: directory does not exist{where}") from None
    except NotADirectoryError:
        raise DirectoryError(f"{path}: not a directory") from None
    except PermissionError:
        raise DirectoryError(f"{path}: cannot read directory: permission denied") from None
    except OSError as exc:
        if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM):  # this process's limits, not a bad --dir
            raise ResourceError(f"{path}: cannot read directory: {exc.strerror}") from None
        raise DirectoryError(f"{path}: cannot read directory: {exc.strerror}") from None
    if not os.access(path, os.X_OK):
        raise DirectoryError(f"{path}: cannot read directory: permission denied (no search permission)")
    return path


def error(message: object) -> None:
    """One problem on stderr, escaped: messages quote file names and contents."""
    print(f"statmap: {printable(str(message))}", file=sys.stderr)


def target_paths(args: argparse.Namespace) -> list[str]:
    if getattr(args, "pid", None) is not None:
        from .cli_fleet import attached

        return list(attached(args).paths)
    if args.paths:
        return list(args.paths)
    return statmap_files(readable_directory(args))


def cmd_show(args: argparse.Namespace) -> int:
    if getattr(args, "aggregate", False):
        return cmd_show_aggregate(args)
    with paused:  # ~3 objects per series, no cycles: the collector's passes were most of the rest (gcpause.py)
        return _show_files(args)


def _show_files(args: argparse.Namespace) -> int:
    snapshots, errors = read_snapshots(target_paths(args))
    if getattr(args, "match", None):
        from .pattern import compile_pattern

        rx = compile_pattern(args.match)
        snapshots = [
            Snapshot(s.path, s.status, s.identity, [x for x in s.series if rx.search(x.name)], s.version, s.size)
            for s in snapshots
        ]
    if args.json:
        doc: dict[str, Any] = {"processes": [s.to_json() for s in snapshots]}
        if args.process_metrics:
            from .cli_fleet import process_json

            found = process_json(snapshots)
            for proc, snap in zip(doc["processes"], snapshots, strict=True):
                proc["process"] = found.get(snap.path)
        if errors:
            doc["errors"] = [{"path": e.path, "problem": e.problem} for e in errors]
        json.dump(doc, sys.stdout, indent=2, allow_nan=False)
        sys.stdout.write("\n")
    else:
        if not snapshots and not errors:
            where = ", ".join(args.paths) if args.paths else args.dir or default_directory()
            print(printable(f"no statmap files in {where}"))
        else:
            from .cli_fleet import process_notes

            print(render_text(snapshots, errors, process_notes(snapshots) if args.process_metrics else None))
            if knob_lines := cli_knobs.show_lines([s.path for s in snapshots]):  # knobs (docs/knobs.md)
                print(printable_lines(knob_lines))
    return 1 if errors else 0


# -- many processes: aggregate, ls, export, clean, top (collect.py, expose.py, archive.py, top.py) --


def _collector(args: argparse.Namespace, **options: Any) -> Any:
    from .cli_fleet import collector_options, publishers
    from .collect import Collector

    return Collector(readable_directory(args), publishers=publishers(args), **collector_options(args), **options)


def _report_errors(collection: Any) -> int:
    for err in collection.errors:
        error(err)
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
        print(printable_lines(aggregate_lines(collection, args.match)))
    return 1 if collection.errors else 0


def cmd_ls(args: argparse.Namespace) -> int:
    from .top import ls_lines

    with _collector(args) as collector:
        collection = collector.collect()
    if args.json:
        json.dump([f.to_json() for f in collection.files], sys.stdout, indent=2, allow_nan=False)
        sys.stdout.write("\n")
    elif not collection.files:
        print(printable(f"no statmap files in {collection.directory}"))
    else:
        print(printable_lines(ls_lines(collection)))
    return 1 if any(f.status == "corrupt" for f in collection.files) else 0


def cmd_export(args: argparse.Namespace) -> int:
    from .expose import Exposer

    exposer = Exposer(publisher_label=args.publisher_label, include_text=args.include_text, match=args.match)
    if args.output:
        writable_parent(args.output)  # before collecting (and cleaning): fail early, change nothing
    clean_errors = _clean_before_export(args) if args.clean else []
    with _collector(args) as collector:
        collection = collector.collect()
    text = exposer.render(collection, args.format)  # exact: exported formats are not escaped
    if args.output:
        write_atomically(args.output, text)
    else:
        sys.stdout.write(text)
    for problem in exposer.problems:
        error(problem)
    # A fold that failed (e.g. a full disk) loses nothing: the files stay and are exported
    # above. Say so on stderr, without changing the exit status: the metrics are complete.
    reported = {e.path for e in collection.errors}
    for path, problem in clean_errors:
        if path not in reported:
            error(f"clean: {path}: {problem}")
    return _report_errors(collection)


def _clean_before_export(args: argparse.Namespace) -> list[tuple[str, str]]:
    """``export --clean``: fold ended processes; the problems found, never raised (export what can be read)."""
    from .archive import clean

    directory = args.dir or default_directory()
    try:
        return clean(directory, publishers=args.publisher or None).errors
    except (DirectoryError, OSError) as exc:
        return [(directory, str(exc))]


def writable_parent(path: str) -> str:
    """The directory ``path`` will be written into, refused (DirectoryError) if missing or not writable."""
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise DirectoryError(f"cannot write {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DirectoryError(f"cannot write {path}: directory {parent}: permission denied")
    return parent


def write_atomically(path: str, text: str) -> None:
    """Replace ``path`` with ``text`` all at once: a reader (node_exporter's textfile
    collector) sees the old file or the new one, never a partial one.

    A hidden temporary in the same directory (node_exporter reads only
    ``*.prom``), written, fsynced, then renamed over ``path``; on any failure
    the temporary is removed and the old file is left as it was. The new
    file keeps the old one's mode, else gets the usual 0666 minus umask,
    like a shell redirect: the reader is often another user.
    """
    import tempfile

    parent = writable_parent(path)
    try:
        mode = os.stat(path).st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=parent)
    except OSError as exc:
        raise DirectoryError(f"cannot write {path}: {parent}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise DirectoryError(f"cannot write {path}: {exc.strerror}") from None
        raise
    # the rename itself survives a crash only once the directory is synced
    try:
        dfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


EXPORT_FORMATS = "{openmetrics,prometheus,json}"


class _FormatNames:
    """``export --format``'s choices: the text formats of ``expose.FORMATS`` (the table of export formats;
    protobuf is binary, for scrapers), looked up only when argparse checks or lists them, so that other
    commands never import expose."""

    def __contains__(self, name: object) -> bool:
        return name in list(self)

    def __iter__(self) -> Iterator[str]:
        from .expose import FORMATS

        return iter([n for n, f in FORMATS.items() if not f.binary])


def cmd_clean(args: argparse.Namespace) -> int:
    from .archive import clean

    directory = readable_directory(args)
    try:
        report = clean(directory, dry_run=args.dry_run, older_than=args.older_than, publishers=args.publisher or None)
    except DirectoryError as exc:
        error(exc)
        return 1
    except OSError as exc:  # the directory itself cannot be listed
        print(f"statmap: {directory}: cannot clean: {exc.strerror}", file=sys.stderr)
        return 1
    if args.json:
        json.dump(report.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        verb = "would fold" if args.dry_run else "folded"
        lines = [
            f"{verb} {os.path.basename(path)} into its archive{'' if args.dry_run else ' and removed it'}"
            for path in report.folded
        ]
        lines += [
            f"{'would remove' if args.dry_run else 'removed'} {os.path.basename(path)} (already archived or stale)"
            for path in report.removed
        ]
        lines += [f"kept {os.path.basename(path)}: {why}" for path, why in report.kept]
        lines += [f"wrote {path}" for path in report.archives]
        if not (report.folded or report.removed or report.kept or report.errors):
            lines.append(f"nothing to clean in {directory}")
        if lines:
            print(printable_lines(lines))
    for path, problem in report.errors:
        error(f"{path}: {problem}")
    return 1 if report.errors else 0


def cmd_top(args: argparse.Namespace) -> int:
    from .pattern import compile_pattern
    from .top import TopModel, run_plain
    from .top_screen import run_curses

    if args.match:
        compile_pattern(args.match)
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
    # the names are expose.FORMATS' (a test holds them equal); written out so that argparse, which
    # formats every argument as it is added, does not import expose for the other commands
    export.add_argument("--format", choices=_FormatNames(), default="openmetrics", metavar=EXPORT_FORMATS)
    export.add_argument(
        "--match",
        metavar="PATTERN",
        help="only metrics whose name matches (a regular expression, docs/serve.md#patterns)",
    )
    export.add_argument("--publisher", action="append", metavar="NAME", help="only this publisher name (repeatable)")
    export.add_argument(
        "--publisher-label", choices=("auto", "always"), default="auto",
        help="add a publisher label only where names are shared (auto) or always",
    )  # fmt: skip
    export.add_argument("--include-text", action="store_true", help="also export text metrics (as info)")
    export.add_argument("--clean", action="store_true", help="archive ended processes first (statmap clean)")
    export.add_argument(
        "--output", "-o", metavar="FILE",
        help="write to FILE atomically (temporary file, fsync, rename) instead of stdout, "
        "e.g. for node_exporter's textfile collector",
    )  # fmt: skip
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
    top.add_argument(
        "--match", metavar="PATTERN", help="only series whose metric name matches (docs/serve.md#patterns)"
    )
    top.add_argument("--sort", choices=("name", "value", "rate"), default="name")
    top.add_argument("--reverse", action="store_true", help="reverse the sort order")
    top.add_argument(
        "--plain", action="store_true", help="print samples one after another (the default when not a tty)"
    )
    top.add_argument("--publisher", action="append", metavar="NAME", help="only this publisher name (repeatable)")
    top.set_defaults(func=cmd_top)


def cmd_serve(args: argparse.Namespace) -> int:
    from .cleaning import PeriodicCleaner
    from .cli_fleet import publishers, start_otlp
    from .server import serve

    directory = readable_directory(args)
    if args.clean_interval <= 0:
        print("statmap serve: --clean-interval must be a positive number of seconds", file=sys.stderr)
        return 2
    if args.allow_set and not (args.token or os.environ.get("STATMAP_TOKEN")):
        print("statmap serve: --allow-set needs a token (--token or $STATMAP_TOKEN)", file=sys.stderr)
        return 2
    try:
        pusher = start_otlp(args, directory)  # --otlp: a thread pushing the aggregate (cli_fleet.py)
    except (ImportError, ValueError) as exc:
        print(f"statmap serve: {exc}", file=sys.stderr)
        return 2
    # --clean: fold ended processes in a thread beside the HTTP server (its failures are logged, never fatal)
    cleaner = PeriodicCleaner(directory, args.clean_interval, publishers=args.publisher or None) if args.clean else None
    if cleaner is not None:
        cleaner.start()
    try:
        return serve(
            directory, args.host, args.port, token=args.token, access_log=args.access_log,
            max_age=args.max_age, publishers=publishers(args), publisher_label=args.publisher_label,
            include_text=args.include_text, header_timeout=args.header_timeout, idle_timeout=args.idle_timeout,
            write_timeout=args.write_timeout, max_connections=args.max_connections, threads=args.threads,
            process_metrics=args.process_metrics,
            allow_set=args.allow_set,
        )  # fmt: skip
    finally:
        if pusher is not None:
            pusher.stop()
        if cleaner is not None:
            cleaner.stop()


def _positive(kind: type[int] | type[float]) -> Callable[[str], float]:
    """An argparse type: a number above zero (the error names the option)."""

    def convert(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value > 0 or not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
        return value

    return convert


def _add_serve_command(sub: Any) -> None:
    from . import hostdefaults as S  # not the server: building the parser must stay cheap
    from .hostdefaults import DEFAULT_HOST, DEFAULT_PORT

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
    serve.add_argument("--allow-set", action="store_true", help="enable POST /api/knobs (needs --token; docs/knobs.md)")
    limits = serve.add_argument_group("limits (docs/serve.md#limits)")
    limits.add_argument(
        "--header-timeout", type=_positive(float), default=S.DEFAULT_HEADER_TIMEOUT, metavar="SECONDS",
        help=f"time for a client to send a request head (default {S.DEFAULT_HEADER_TIMEOUT:g})",
    )  # fmt: skip
    limits.add_argument(
        "--idle-timeout", type=_positive(float), default=S.DEFAULT_IDLE_TIMEOUT, metavar="SECONDS",
        help=f"close keep-alive connections idle this long (default {S.DEFAULT_IDLE_TIMEOUT:g})",
    )  # fmt: skip
    limits.add_argument(
        "--write-timeout", type=_positive(float), default=S.DEFAULT_WRITE_TIMEOUT, metavar="SECONDS",
        help=f"time for a client to take a response (default {S.DEFAULT_WRITE_TIMEOUT:g})",
    )  # fmt: skip
    limits.add_argument(
        "--max-connections", type=_positive(int), default=S.DEFAULT_MAX_CONNECTIONS, metavar="N",
        help=f"open connections at most (default {S.DEFAULT_MAX_CONNECTIONS}, at most half the descriptor limit)",
    )  # fmt: skip
    limits.add_argument(
        "--threads", type=_positive(int), default=S.DEFAULT_THREADS, metavar="N",
        help=f"worker threads (default {S.DEFAULT_THREADS})",
    )  # fmt: skip
    serve.add_argument(
        "--clean", action="store_true",
        help="fold the files of ended processes into archives every --clean-interval seconds "
        "(as statmap clean; for servers without hooks that do it)",
    )  # fmt: skip
    serve.add_argument(
        "--clean-interval", type=float, default=10.0, metavar="SECONDS",
        help="with --clean: seconds between cleanings (default 10)",
    )  # fmt: skip
    serve.set_defaults(func=cmd_serve)


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(seconds=args.seconds, workers=args.workers, directory=args.dir, port=args.port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="statmap", description="Read what running programs publish with statmap.")
    parser.add_argument("--version", action=_VersionAction, nargs=0, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True)

    show = sub.add_parser("show", help="print every series of every process file")
    show.add_argument("paths", nargs="*", metavar="PATH", help="files to show (default: every file in --dir)")
    show.add_argument("--dir", help=f"statmap directory (default: $STATMAP_DIR or {default_directory()})")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.add_argument("--aggregate", action="store_true", help="the aggregated view of every process in --dir")
    show.add_argument(
        "--match",
        metavar="PATTERN",
        help="only metrics whose name matches (a regular expression, docs/serve.md#patterns)",
    )
    show.add_argument("--publisher", action="append", metavar="NAME", help="with --aggregate: only this publisher name")
    show.set_defaults(func=cmd_show)
    _add_ops_commands(sub)
    _add_serve_command(sub)
    cli_fleet.register(sub)  # --process-metrics, push (cli_fleet.py)
    cli_knobs.add_commands(sub)  # statmap set, statmap knobs

    demo = sub.add_parser("demo", help="start worker processes publishing metrics and show them live")
    demo.add_argument("--seconds", type=float, default=None, help="stop after this many seconds (default: Ctrl-C)")
    demo.add_argument("--workers", type=int, default=3, help="number of worker processes (default 3)")
    demo.add_argument("--dir", help="directory for the demo's files (default: a new temporary directory)")
    demo.add_argument(
        "--port", type=int, default=9464, help="dashboard port on 127.0.0.1 (default 9464, else any free port; 0: any)"
    )
    demo.set_defaults(func=cmd_demo)
    return parser


class _VersionAction(argparse.Action):
    """``--version``, looked up only when asked: building the parser opens no file
    (a process out of descriptors must still be able to report why)."""

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        print(f"statmap {version()}")
        parser.exit()


def version() -> str:
    """The installed distribution's version, else the package's own (running from a checkout)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("statmap")
    except PackageNotFoundError:
        from . import __version__

        return __version__


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except DirectoryError as exc:
        # a missing/unreadable --dir or --output directory: a usage error, like argparse's
        error(exc)
        return 2
    except KeyboardInterrupt:
        return 130
    except CollectionError as exc:  # a collection that cannot read what it needs reports nothing partial
        print(f"statmap: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # stdout closed early (e.g. piped into head): not an error worth a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        # --match: a pattern statmap refuses (docs/serve.md#patterns). Only raised once pattern.py
        # is imported, so it is not imported here (start-up time of the commands that do not match).
        pattern = sys.modules.get(f"{__package__}.pattern")
        if pattern is None or not isinstance(exc, pattern.PatternError):
            raise
        error(f"--match: {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
