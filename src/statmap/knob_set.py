"""Setting knobs: the operator's request, written and answered (``statmap set``, ``POST /api/knobs``).

``set_knobs`` checks the request against what the processes declare (an
unknown name or knob, or a value no process accepts, is a usage error and
nothing is written), writes the desired state into the control file (whole,
under a lock), then waits for every targeted live process to answer: its
published ``seen_seq`` reaching the request's sequence. It prints nothing;
the CLI and the HTTP API present its ``SetResult``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from . import control_file
from .knob_state import KnobView, ProcessKnobs, read_desired, read_knobs, read_process
from .knob_values import Control, Entry, parse_value
from .liveness import ALIVE

#: Outcomes that count as success (exit 0): the process applied it, or serves no more.
SUCCESS = ("applied", "reset", "superseded", "does not declare", "exited")


@dataclass
class SetResult:
    """``code`` 0 all applied, 1 any refused or unanswered, 2 usage error (``error`` says why)."""

    code: int
    error: str = ""
    note: str = ""
    seq: int = 0
    replaced: str = ""  # a control file that could not be read and was replaced: why
    answers: list[tuple[str, int, str, str | None, str]] = field(
        default_factory=list
    )  # publisher, pid, knob, value, outcome


def set_knobs(
    directory: str, name: str, requests: dict[str, str | None], pid: int | None = None, timeout: float = 5.0
) -> SetResult:
    """Apply ``requests`` (knob -> text, or None to reset) to the live processes of ``name`` (or ``pid``)."""
    processes, _errors = read_knobs(directory, name)
    if not processes:
        return SetResult(2, f"no process of {name!r} in {directory} declares knobs")
    live = [p for p in processes if p.status == ALIVE]
    declaring = live or processes
    for knob, value in requests.items():
        decls = [d for p in declaring if knob in p.knobs and (d := p.knobs[knob].decl) is not None]
        if not decls:
            return SetResult(2, f"{name!r} has no knob {knob!r}")
        if value is not None:
            reasons = []
            for decl in decls:
                try:
                    parse_value(decl, value)
                    break
                except ValueError as exc:
                    reasons.append(str(exc))
            else:
                return SetResult(
                    2, f"{knob}={value}: refused: {reasons[0]} (allowed: {decls[0].allowed()}); nothing changed"
                )
    targets = live
    target_id = ""
    if pid is not None:
        targets = [p for p in live if p.pid == pid]
        if not targets:
            return SetResult(2, f"no live process of {name!r} has pid {pid}")
        target_id = targets[0].target
    seq, replaced = _write(directory, name, requests, target_id, {p.target for p in live})
    if pid is None:
        # Every process alive now, after the write: one that declared its knobs between the look above and
        # the write read the file before it and is waited for too (one that declares them later reads it).
        after, _errors = read_knobs(directory, name)
        targets = [p for p in after if p.status == ALIVE]
    if not targets:
        return SetResult(
            0, note=f"{name}: no live process; saved for processes that start later", seq=seq, replaced=replaced
        )
    answers = _wait(targets, requests, seq, timeout)
    failed = any(not outcome.startswith(SUCCESS) for *_, outcome in answers)
    return SetResult(1 if failed else 0, seq=seq, replaced=replaced, answers=answers)


def _write(directory: str, name: str, requests: dict[str, str | None], target: str, live: set[str]) -> tuple[int, str]:
    uid, pid, now = os.getuid(), os.getpid(), time.time_ns()
    with control_file.locked(directory, name):
        old, problem = read_desired(directory, name)
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
    return seq, problem or ""


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


def _wait(
    targets: list[ProcessKnobs], requests: dict[str, str | None], seq: int, timeout: float
) -> list[tuple[str, int, str, str | None, str]]:
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
    return [(p.publisher, p.pid, k, v, results[(p.path, k)]) for p in targets for k, v in requests.items()]
