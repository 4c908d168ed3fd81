"""``statmap set`` and ``statmap knobs``: the operator's side of knobs (docs/knobs.md).

``set`` checks the request against what the processes declare (an unknown
name or knob, or a value no process accepts, is a usage error: exit 2 and
nothing written), writes the desired state into the control file (whole,
under a lock), then waits for every targeted live process to answer (its
published ``seen_seq`` reaching the request's sequence) and prints per
process applied or refused with the reason. Exit 0 when every one applied,
1 when any refused or did not answer in time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from . import control_file
from .directory import check_private, default_directory
from .errors import DirectoryError
from .knob_set import set_knobs
from .knob_state import KnobView, knobs_json, read_desired, read_each, read_knobs
from .liveness import ALIVE
from .render import printable


def _say(message: str, stream: Any = None) -> None:
    print(printable(message), file=stream or sys.stdout, flush=True)


def _error(message: str) -> None:
    _say(f"statmap: {message}", sys.stderr)


def owned_directory(arg: str | None) -> str:
    """The directory, refused unless it is this user's and private: only the owner sets knobs."""
    path = os.path.abspath(arg or default_directory())
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise DirectoryError(f"{path}: {exc.strerror}") from None
    check_private(path, st)
    return path


def _parse_requests(items: list[str], reset: bool) -> dict[str, str | None] | str:
    out: dict[str, str | None] = {}
    for item in items:
        if reset:
            if "=" in item:
                return f"{item!r}: --reset takes knob names, not KNOB=VALUE"
            out[item] = None
        else:
            knob, sep, value = item.partition("=")
            if not sep or not knob:
                return f"{item!r}: expected KNOB=VALUE (or KNOB --reset)"
            out[knob] = value
    return out


def cmd_set(args: argparse.Namespace) -> int:
    directory = owned_directory(args.dir)
    requests = _parse_requests(args.assignments, args.reset)
    if isinstance(requests, str):
        _error(requests)
        return 2
    result = set_knobs(directory, args.name, requests, args.pid, args.timeout)
    if result.replaced:
        _error(f"{control_file.control_path(directory, args.name)}: {result.replaced}; replaced it")
    if result.error:
        _error(result.error)
    if result.note:
        _say(result.note)
    for publisher, pid, knob, value, outcome in result.answers:
        what = f"{knob}={value}" if value is not None else f"{knob} --reset"
        _say(f"{publisher} pid {pid}: {what}: {outcome}")
    return result.code


# -- statmap knobs ---------------------------------------------------------------------


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds)) if seconds else "-"


def _knob_line(view: KnobView, seq: int) -> str:
    st, decl = view.state, view.decl
    if st is None or decl is None:
        return f"{view.name}: {view.problem or 'not published yet'}"
    line = (
        f"{view.name} = {st.value}  ({st.origin}; by uid {st.uid} pid {st.pid} at {_when(st.when_ns / 1e9)}; "
        f"default {decl.default}; allowed {decl.allowed()})"
    )
    if seq > st.seen_seq:
        line += "  [request pending]"
    if st.refused_seq:
        line += f"  [refused {st.refused_value!r}: {st.refused_reason}]"
    return line


def cmd_knobs(args: argparse.Namespace) -> int:
    directory = os.path.abspath(args.dir or default_directory())
    if not os.path.isdir(directory):
        raise DirectoryError(f"{directory}: directory does not exist")
    if args.json:
        doc = knobs_json(directory, args.name, live_only=not args.all)
        json.dump(doc, sys.stdout, indent=2, allow_nan=False)
        sys.stdout.write("\n")
        return 1 if doc.get("errors") else 0
    processes, errors = read_knobs(directory, args.name)
    shown = [p for p in processes if args.all or p.status == ALIVE]
    if not shown:
        _say(f"no live process declares knobs in {directory}" + (f" under {args.name!r}" if args.name else ""))
    seqs: dict[str, int] = {}
    for proc in shown:
        if proc.publisher not in seqs:
            control, problem = read_desired(directory, proc.publisher)
            seqs[proc.publisher] = control.seq if control else 0
            if problem:
                _say(f"{proc.publisher}: control file: {problem}")
        _say(f"{proc.publisher} pid {proc.pid} ({proc.status})")
        for view in proc.knobs.values():
            _say("  " + _knob_line(view, seqs[proc.publisher]))
            if args.history and view.state is not None:
                for c in view.state.history:
                    _say(f"      {_when(c.when_ns / 1e9)}  {c.old} -> {c.new}  ({c.origin}; uid {c.uid} pid {c.pid})")
    for err in errors:
        _error(str(err))
    return 1 if errors else 0


def add_commands(sub: Any) -> None:
    """Register ``set`` and ``knobs`` (called from cli.build_parser)."""
    dir_help = f"statmap directory (default: $STATMAP_DIR or {default_directory()})"
    set_ = sub.add_parser("set", help="change knobs of every live process of a publisher (docs/knobs.md)")
    set_.add_argument("name", metavar="NAME", help="publisher name")
    set_.add_argument("assignments", nargs="+", metavar="KNOB=VALUE", help="KNOB=VALUE, or KNOB names with --reset")
    set_.add_argument("--reset", action="store_true", help="return the knobs to their start value (default/env)")
    set_.add_argument("--pid", type=int, help="only this process")
    set_.add_argument("--dir", help=dir_help)
    set_.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the answers (default 5)")
    set_.set_defaults(func=cmd_set)
    knobs = sub.add_parser("knobs", help="list knobs: value, origin, who set it, allowed values, refusals")
    knobs.add_argument("name", nargs="?", metavar="NAME", help="only this publisher")
    knobs.add_argument("--dir", help=dir_help)
    knobs.add_argument("--json", action="store_true", help="print JSON")
    knobs.add_argument("--history", action="store_true", help="the last changes each process kept")
    knobs.add_argument("--all", action="store_true", help="closed and dead processes too")
    knobs.set_defaults(func=cmd_knobs)


def show_lines(paths: list[str]) -> list[str]:
    """``statmap show``: the knobs of these files, after their series."""
    lines: list[str] = []
    for path, proc, _error in read_each(paths):  # show reports a corrupt file itself
        if proc is None:
            continue
        control, _problem = read_desired(os.path.dirname(os.path.abspath(path)), proc.publisher)
        lines.append(f"knobs of {proc.publisher} pid {proc.pid}:")
        lines += ["  " + _knob_line(v, control.seq if control else 0) for v in proc.knobs.values()]
    return lines
