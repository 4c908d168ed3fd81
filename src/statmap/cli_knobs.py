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
from .knob_state import KnobView, ProcessKnobs, knobs_json, read_desired, read_knobs, read_process
from .knob_values import Control, Entry, parse_value
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
    processes, _errors = read_knobs(directory, args.name)
    if not processes:
        _error(f"no process of {args.name!r} in {directory} declares knobs")
        return 2
    live = [p for p in processes if p.status == ALIVE]
    declaring = live or processes
    for knob, value in requests.items():
        decls = [d for p in declaring if knob in p.knobs and (d := p.knobs[knob].decl) is not None]
        if not decls:
            _error(f"{args.name!r} has no knob {knob!r}")
            return 2
        if value is not None:
            reasons = []
            for decl in decls:
                try:
                    parse_value(decl, value)
                    break
                except ValueError as exc:
                    reasons.append(str(exc))
            else:
                _error(f"{knob}={value}: refused: {reasons[0]} (allowed: {decls[0].allowed()}); nothing changed")
                return 2
    targets = live
    target_id = ""
    if args.pid is not None:
        targets = [p for p in live if p.pid == args.pid]
        if not targets:
            _error(f"no live process of {args.name!r} has pid {args.pid}")
            return 2
        target_id = targets[0].target
    seq = _write(directory, args.name, requests, target_id, {p.target for p in live})
    if not targets:
        _say(f"{args.name}: no live process; saved for processes that start later")
        return 0
    return _wait(targets, requests, seq, args.timeout)


def _write(directory: str, name: str, requests: dict[str, str | None], target: str, live: set[str]) -> int:
    uid, pid, now = os.getuid(), os.getpid(), time.time_ns()
    with control_file.locked(directory, name):
        old, problem = read_desired(directory, name)
        if problem:
            _error(f"{control_file.control_path(directory, name)}: {problem}; replacing it")
        entries = [e for e in (old.entries if old else ()) if not e.target or e.target in live]  # drop the gone
        for knob, value in requests.items():
            if target:
                entries = [e for e in entries if not (e.knob == knob and e.target == target)]
                if value is not None:
                    entries.append(Entry(knob, target, "set", value, uid, pid, now))
            else:  # the whole name: per-process overrides of this knob go too
                entries = [e for e in entries if e.knob != knob]
                entries.append(Entry(knob, "", "set" if value is not None else "reset", value or "", uid, pid, now))
        seq = max((old.seq + 1) if old else 1, now)
        control_file.write(directory, name, Control(seq, tuple(entries)))
    return seq


def _outcome(view: KnobView, value: str | None, seq: int) -> str | None:
    """'applied ...', 'refused: ...', or None while the process has not answered ``seq``."""
    st = view.state
    if st is None or view.decl is None or st.seen_seq < seq:
        return None
    if st.refused_seq and st.refused_seq >= seq:
        return f"refused: {st.refused_reason}"
    shown = st.value
    if value is None:
        return f"reset: {shown} ({st.origin})"
    try:
        wanted = parse_value(view.decl, value)
    except ValueError as exc:
        return f"refused: {exc}"
    if st.value == wanted and st.origin == "operator":
        return "applied"
    return f"superseded by a later request: now {shown} ({st.origin})"


def _wait(targets: list[ProcessKnobs], requests: dict[str, str | None], seq: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    results: dict[tuple[str, str], str] = {}
    pending = list(targets)
    while pending:
        still = []
        for proc in pending:
            try:
                now = read_process(proc.path)
                problem = "" if now is not None and now.status == ALIVE else "exited"
            except FileNotFoundError:
                now, problem = None, "exited"  # ended, and its file already cleaned away
            except Exception as exc:  # noqa: BLE001 - its file broken: that process's answer
                now, problem = None, str(exc)
            done = True
            for knob, value in requests.items():
                key = (proc.path, knob)
                if key in results:
                    continue
                if knob not in proc.knobs:
                    results[key] = "does not declare it"
                elif problem == "exited":
                    results[key] = "exited before answering (serves no more)"
                elif problem or now is None:
                    results[key] = f"no answer: {problem}"
                else:
                    got = _outcome(now.knobs[knob], value, seq) if knob in now.knobs else "no answer"
                    if got is None:
                        done = False
                    else:
                        results[key] = got
            if not done:
                still.append(proc)
        pending = still
        if pending and time.monotonic() >= deadline:
            for proc in pending:
                for knob in requests:
                    results.setdefault((proc.path, knob), f"no answer within {timeout:g}s")
            break
        if pending:
            time.sleep(0.02)
    failed = False
    for proc in targets:
        for knob, value in requests.items():
            got = results[(proc.path, knob)]
            ok = got.startswith(("applied", "reset", "superseded", "does not declare", "exited"))
            failed |= not ok
            what = f"{knob}={value}" if value is not None else f"{knob} --reset"
            _say(f"{proc.publisher} pid {proc.pid}: {what}: {got}")
    return 1 if failed else 0


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
    for path in paths:
        try:
            proc = read_process(path)
        except Exception:  # noqa: BLE001 - show reports a corrupt file itself
            continue
        if proc is None:
            continue
        control, _problem = read_desired(os.path.dirname(os.path.abspath(path)), proc.publisher)
        lines.append(f"knobs of {proc.publisher} pid {proc.pid}:")
        lines += ["  " + _knob_line(v, control.seq if control else 0) for v in proc.knobs.values()]
    return lines
