"""The fleet options of the ``statmap`` command: process metrics, attach by pid, push.

``register(sub)`` adds ``--process-metrics`` to show, top, export and serve
and the ``push`` command; cli.py calls it once and reads the options
through ``collector_options(args)``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from .reader import ALIVE, Snapshot

_READERS = ("show", "top", "export", "serve")


def register(sub: Any) -> None:
    for name in _READERS:
        parser = sub.choices[name]
        parser.add_argument(
            "--process-metrics", action="store_true",
            help="add CPU, memory, descriptors and threads of each live writer, read from /proc "
            "(process_* with a pid label, and statmap_processes_* sums; docs/integrations.md)",
        )  # fmt: skip
        parser.add_argument(
            "--pid", type=int, metavar="PID",
            help="read the statmap files process PID has mapped, wherever they are (through /proc/PID/root; "
            "instead of --dir)" + ("" if name == "show" else ", aggregated with its directory's files of the same "
            "publisher names"),
        )  # fmt: skip
    serve = sub.choices["serve"]
    otlp = serve.add_argument_group("OpenTelemetry (needs the otel extra: pip install 'statmap[otel]')")
    otlp.add_argument(
        "--otlp", metavar="URL",
        help="also push the aggregate to this OTLP/HTTP endpoint (e.g. http://collector:4318/v1/metrics)",
    )  # fmt: skip
    otlp.add_argument(
        "--otlp-interval", type=float, default=10.0, metavar="SECONDS", help="seconds between pushes (default 10)"
    )
    otlp.add_argument(
        "--otlp-header", action="append", type=key_value, default=[], metavar="K=V",
        help="an HTTP header for the OTLP endpoint (repeatable), e.g. an API key",
    )  # fmt: skip
    _add_push(sub)


def key_value(text: str) -> tuple[str, str]:
    """An argparse type: ``K=V``."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, not {text!r}")
    return key, value


def _add_push(sub: Any) -> None:
    from .directory import default_directory

    push = sub.add_parser(
        "push", help="push the aggregate to a Prometheus Pushgateway (batch jobs) or an OTLP endpoint, once"
    )
    push.add_argument("--gateway", metavar="URL", help="Pushgateway address (http://HOST:9091)")
    push.add_argument(
        "--otlp", metavar="URL",
        help="OTLP/HTTP endpoint (http://HOST:4318/v1/metrics; needs the otel extra: pip install 'statmap[otel]')",
    )  # fmt: skip
    push.add_argument("--job", metavar="NAME", help="the job label (required with --gateway)")
    push.add_argument(
        "--grouping", action="append", type=key_value, default=[], metavar="K=V",
        help="more grouping labels (repeatable), e.g. --grouping instance=batch-7",
    )  # fmt: skip
    source = push.add_mutually_exclusive_group()
    source.add_argument("--dir", help=f"statmap directory (default: $STATMAP_DIR or {default_directory()})")
    source.add_argument("--file", metavar="FILE", help="push this one file alone (e.g. a finished process's)")
    push.add_argument("--add", action="store_true", help="POST: replace only metrics of the same names in the group")
    push.add_argument("--publisher", action="append", metavar="NAME", help="only this publisher name (repeatable)")
    push.add_argument("--publisher-label", choices=("auto", "always"), default="auto")
    push.add_argument("--include-text", action="store_true", help="also push text metrics (as info)")
    push.add_argument("--match", metavar="PATTERN", help="only metrics whose name matches (docs/serve.md#patterns)")
    push.add_argument(
        "--process-metrics", action="store_true", help="add each live writer's /proc metrics (see export)"
    )
    push.add_argument(
        "--header", action="append", type=key_value, default=[], metavar="K=V",
        help="an HTTP header to send (repeatable), e.g. --header 'Authorization=Bearer T'",
    )  # fmt: skip
    push.add_argument("--retries", type=int, default=3, help="retries after a failure that may pass (default 3)")
    push.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS", help="per attempt (default 10)")
    push.set_defaults(func=cmd_push)


def cmd_push(args: argparse.Namespace) -> int:
    from .errors import DirectoryError
    from .pushgateway import PushError, push

    if not args.gateway and not args.otlp:
        print("statmap push: --gateway URL or --otlp URL is required", file=sys.stderr)
        return 2
    if args.gateway and not args.job:
        print("statmap push: --gateway needs --job NAME", file=sys.stderr)
        return 2
    if args.dir and not os.path.isdir(args.dir):
        raise DirectoryError(f"{args.dir}: directory does not exist")
    if args.file and not os.path.isfile(args.file):
        raise DirectoryError(f"{args.file}: no such file")
    if args.otlp:
        if args.file:
            print("statmap push: --otlp pushes a directory (--dir), not one file", file=sys.stderr)
            return 2
        status = _push_otlp(args)
        if status or not args.gateway:
            return status
    try:
        result = push(
            args.gateway, args.job, grouping=dict(args.grouping), directory=args.dir, file=args.file,
            publishers=args.publisher or None, add=args.add, headers=dict(args.header), retries=max(0, args.retries),
            timeout=args.timeout, process_metrics=args.process_metrics, publisher_label=args.publisher_label,
            include_text=args.include_text, match=args.match,
        )  # fmt: skip
    except ValueError as exc:
        print(f"statmap push: {exc}", file=sys.stderr)
        return 2
    except PushError as exc:
        print(f"statmap push: {exc}", file=sys.stderr)
        return 1
    print(f"pushed {result.series} samples to {result.url} ({result.status})")
    return 0


def attached(args: argparse.Namespace) -> Any:
    """The files ``--pid`` names (``attach.Attached``), found once per command; None without ``--pid``."""
    from .attach import attach
    from .errors import DirectoryError

    pid = getattr(args, "pid", None)
    if pid is None:
        return None
    found = getattr(args, "_attached", None)
    if found is None:
        if getattr(args, "dir", None) or getattr(args, "paths", None):
            raise DirectoryError("--pid finds the files itself: give --pid or --dir/paths, not both")
        found = args._attached = attach(pid)
        for problem in found.problems:
            print(f"statmap: pid {pid}: {problem}", file=sys.stderr)
    return found


def attached_directory(args: argparse.Namespace) -> str:
    """``--pid``: the directory of the process's files, as readable from here."""
    from .errors import DirectoryError

    found = attached(args)
    dirs = found.directories
    if len(dirs) > 1:
        inner = ", ".join(sorted({os.path.dirname(p) for p in found.inner}))
        raise DirectoryError(f"pid {found.pid}: files in several directories ({inner}); choose one with --dir")
    return str(dirs[0])


def attached_publishers(args: argparse.Namespace) -> list[str] | None:
    """``--pid``: the publisher names of the process's files (None: every name, the process's files unreadable)."""
    from .errors import FormatError
    from .reader import open as open_reader

    names = []
    for path in attached(args).paths:
        try:
            with open_reader(path) as reader:
                ident = reader.snapshot().identity
        except FormatError:
            continue
        if ident is not None and ident.publisher not in names:
            names.append(ident.publisher)
    return names or None


def publishers(args: argparse.Namespace) -> list[str] | None:
    """``--publisher`` names, else with ``--pid`` the process's own."""
    given = getattr(args, "publisher", None)
    if given:
        return list(given)
    return attached_publishers(args) if getattr(args, "pid", None) is not None else None


def _push_otlp(args: argparse.Namespace) -> int:
    try:
        from .otel import ExportError, push_otlp

        points = push_otlp(
            args.otlp, directory=args.dir, headers=dict(args.header), timeout=args.timeout,
            publishers=args.publisher or None, match=args.match, include_text=args.include_text,
            process_metrics=args.process_metrics,
        )  # fmt: skip
    except ImportError as exc:
        print(f"statmap push: {exc}", file=sys.stderr)
        return 2
    except ExportError as exc:
        print(f"statmap push: {exc}", file=sys.stderr)
        return 1
    print(f"pushed {points} data points to {args.otlp}")
    return 0


def start_otlp(args: argparse.Namespace, directory: str) -> Any:
    """``serve --otlp``: the running OtlpPusher (stop it when serving stops), or None."""
    if not getattr(args, "otlp", None):
        return None
    if not args.otlp_interval > 0:
        raise ValueError("--otlp-interval must be a positive number of seconds")
    from .otel import OtlpPusher

    return OtlpPusher(
        args.otlp, directory, interval=args.otlp_interval, headers=dict(args.otlp_header),
        publishers=publishers(args), include_text=args.include_text, process_metrics=args.process_metrics,
    ).start()  # fmt: skip


def collector_options(args: argparse.Namespace) -> dict[str, Any]:
    """The Collector options the fleet flags ask for."""
    return {"process_metrics": bool(getattr(args, "process_metrics", False))}


def process_notes(snapshots: Sequence[Snapshot]) -> dict[str, str]:
    """``show --process-metrics``: path -> one line about its live writer (left out if /proc cannot say)."""
    from .kinds import number
    from .procstats import read_process

    notes = {}
    for snap in snapshots:
        ident = snap.identity
        if snap.status != ALIVE or ident is None:
            continue
        st = read_process(ident.pid, ident.start_time)
        if st is None:
            continue
        fds = "?" if st.open_fds is None else str(st.open_fds)
        notes[snap.path] = (
            f"process: cpu {number(st.cpu_seconds)}s  rss {_size(st.resident_bytes)}  "
            f"vm {_size(st.virtual_bytes)}  fds {fds}  threads {st.threads}"
        )
    return notes


def process_json(snapshots: Sequence[Snapshot]) -> dict[str, dict[str, Any]]:
    """``show --json --process-metrics``: path -> the /proc stats of its live writer."""
    from .procstats import read_process

    out = {}
    for snap in snapshots:
        ident = snap.identity
        if snap.status == ALIVE and ident is not None:
            st = read_process(ident.pid, ident.start_time)
            if st is not None:
                out[snap.path] = st.to_json()
    return out


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)  # pragma: no cover
