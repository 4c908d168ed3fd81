"""``statmap top``'s knobs view (the ``k`` key): every knob of the live processes, read-only.

Per publisher name, one line per knob: its value (per process when the
processes differ), origin, who set it (uid, pid) and when, the default and
the allowed values, and whether a request is pending or was refused. The
lines are plain text; the screen passes them through ``render.printable``
(knob help, string values and refusal reasons come from files). Changing a
knob is ``statmap set`` (docs/knobs.md): top only shows.
"""

from __future__ import annotations

import time

from .knob_state import KnobView, ProcessKnobs, read_desired, read_knobs
from .liveness import ALIVE

COLUMNS = ("KNOB", "VALUE", "ORIGIN", "SET BY", "WHEN", "DEFAULT", "ALLOWED")


def _when(ns: int, now: float) -> str:
    if not ns:
        return "-"
    seconds = ns / 1e9
    ago = max(0, int(now - seconds))
    age = f"{ago}s" if ago < 120 else f"{ago // 60}m" if ago < 7200 else f"{ago // 3600}h"
    return time.strftime("%H:%M:%S", time.localtime(seconds)) + f" ({age} ago)"


def _value(view: KnobView) -> str:
    if view.state is None:
        return f"({view.problem or 'not published yet'})"
    return view.state.value


def knob_lines(directory: str, now: float | None = None) -> list[str]:
    """The knobs view: a heading per publisher, a table of its knobs, then pending and refused requests."""
    now = time.time() if now is None else now
    processes, errors = read_knobs(directory)
    by_name: dict[str, list[ProcessKnobs]] = {}
    for proc in processes:
        if proc.status == ALIVE:
            by_name.setdefault(proc.publisher, []).append(proc)
    if not by_name:
        lines = ["knobs: no live process declares a knob (docs/knobs.md)"]
        return lines + [f"error: {e}" for e in errors]
    lines = ["knobs (read-only here; change them with: statmap set NAME KNOB=VALUE)"]
    for name in sorted(by_name):
        procs = sorted(by_name[name], key=lambda p: p.pid)
        control, problem = read_desired(directory, name)
        seq = control.seq if control else 0
        lines += ["", f"{name}  ({len(procs)} process{'es' if len(procs) != 1 else ''})"]
        if problem:
            lines.append(f"  control file: {problem}")
        knobs: list[str] = []
        for p in procs:
            knobs += [k for k in p.knobs if k not in knobs]
        rows = [COLUMNS]
        notes: list[str] = []
        for knob in knobs:
            views = [(p.pid, p.knobs[knob]) for p in procs if knob in p.knobs]
            values = {_value(v) for _, v in views}
            value = values.pop() if len(values) == 1 else " ".join(f"{pid}={_value(v)}" for pid, v in views)
            states = [v.state for _, v in views if v.state is not None]
            latest = max(states, key=lambda s: s.when_ns, default=None)
            origins = sorted({s.origin for s in states})
            decl = next((v.decl for _, v in views if v.decl is not None), None)
            rules = [(pid, v.decl.allowed() if v.decl else "-") for pid, v in views]
            same_rules = len({r for _, r in rules}) == 1
            allowed = rules[0][1] if same_rules else " ".join(f"{pid}:{r}" for pid, r in rules)
            by = "-" if latest is None or latest.origin == "default" else f"uid {latest.uid} pid {latest.pid}"
            rows.append(
                (
                    knob,
                    value,
                    ",".join(origins) or "-",
                    by,
                    _when(latest.when_ns, now) if latest else "-",
                    decl.default if decl else "-",
                    allowed,
                )
            )
            pending = [pid for pid, v in views if v.state is not None and seq > v.state.seen_seq]
            if pending:
                notes.append(f"  {knob}: request pending in pid {', '.join(map(str, pending))}")
            for pid, v in views:
                st = v.state
                if st is not None and st.refused_seq:
                    notes.append(f"  {knob}: pid {pid} refused {st.refused_value}: {st.refused_reason}")
        widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
        lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        lines += notes
    return lines + [f"error: {e}" for e in errors]
