"""``statmap top`` on a terminal: the interactive screen (stdlib ``curses``).

The keys follow top, htop and varnishstat: ``q`` quits, arrows (and j/k,
PgUp/PgDn, Home/End) move the selection, ``/`` filters, space pauses, ``?``
shows the keys, ``d`` shows each series' description and unit, Enter (or
``p``) shows the selected series process by process (Esc, Backspace or the
left arrow go back), ``s`` cycles the sort (name, value, rate) and ``r``
reverses it; ``k`` shows the knobs (``top_knobs.py``, read-only). The rows come from ``top.TopModel``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from .render import printable
from .top import SORTS, Row, TopModel, row_lines, top_header
from .top_knobs import knob_lines

HELP = [
    "statmap top: keys",
    "",
    "  q             quit (Esc too, on the main view)",
    "  ?             this help (any key closes it)",
    "  Up Down j k   move the selection; PgUp PgDn Home End",
    "  Enter p       the selected series process by process (Esc, Backspace or Left: back)",
    "  d             descriptions: each series' help text and unit under it",
    "  k             knobs: value, origin, who set it and when (read-only; k again: back)",
    "  s             sort by name, value, rate (cycles); r reverses",
    "  /             filter by metric name (a regular expression; empty: all)",
    "  space         pause / resume",
    "",
    "Counters show their rate per second; histograms the count, then p50 p90 p99",
    "and the top of the highest bucket used (max) over the last interval;",
    "durations in ns/us/ms/s, bytes in KiB/MiB/GiB, other numbers with SI prefixes.",
]
FOOTER = "q quit  ? help  Enter per-process  d descriptions  k knobs  s sort  / filter  space pause"


class _State:
    def __init__(self, match: str | None, sort: str, reverse: bool) -> None:
        self.match, self.sort, self.reverse = match, sort, reverse
        self.paused = False
        self.rows: list[Row] = []
        self.selected = 0
        self.offset = 0
        self.descriptions = False
        self.help = False
        self.focus: Row | None = None  # the series of the per-process view
        self.processes: list[Row] = []
        self.knobs: list[str] | None = None  # the knobs view's lines while it is shown
        self.message = ""


def run_curses(model: TopModel, *, interval: float, match: str | None, sort: str, reverse: bool) -> int:
    """Interactive until ``q``; see the module's docstring for the keys."""
    import curses

    st = _State(match, sort, reverse)

    def refresh_rows() -> None:
        key = st.rows[st.selected].key if st.rows else None
        try:
            st.rows = model.sample(st.match, st.sort, st.reverse)
            st.message = ""
        except re.error as exc:
            st.message = f"bad filter: {exc}"
            st.match = None
            st.rows = model.sample(None, st.sort, st.reverse)
        keys = [r.key for r in st.rows]
        if key in keys:  # the selection follows its series when the order changes
            st.selected = keys.index(key)
        st.selected = max(0, min(st.selected, len(st.rows) - 1))
        if st.focus is not None:
            now = next((r for r in st.rows if r.key == st.focus.key), st.focus)
            st.focus = now
            st.processes = model.per_process(now)
        if st.knobs is not None:
            st.knobs = knob_lines(model.collector.directory)

    def main(screen: Any) -> int:
        curses.use_default_colors()
        curses.curs_set(0)
        screen.timeout(100)
        next_at = 0.0
        while True:
            now = time.monotonic()
            if not st.paused and now >= next_at:
                refresh_rows()
                next_at = now + interval
                draw(screen)
            key = screen.getch()
            if key == -1:
                continue
            if st.help:  # any key closes the help
                st.help = False
            elif key == ord("q"):
                return 0
            elif st.knobs is not None and (key == ord("k") or key in (27, curses.KEY_BACKSPACE, 127, 8)):
                st.knobs = None
            elif key == ord("k"):
                st.knobs = knob_lines(model.collector.directory)
            elif key == 27 or key in (curses.KEY_BACKSPACE, 127, 8, curses.KEY_LEFT):
                if st.focus is None:
                    if key == 27:
                        return 0
                else:
                    st.focus = None
            elif key == ord("?"):
                st.help = True
            elif key == ord("d"):
                st.descriptions = not st.descriptions
            elif key in (10, 13, curses.KEY_ENTER, ord("p"), curses.KEY_RIGHT) and st.rows and st.focus is None:
                st.focus = st.rows[st.selected]
                if st.focus.series is None:
                    st.message = "this series is already one process's (it has a pid label)"
                    st.focus = None
                else:
                    st.processes = model.per_process(st.focus)
            elif key == ord("s"):
                st.sort = SORTS[(SORTS.index(st.sort) + 1) % len(SORTS)]
                next_at = 0
            elif key == ord("r"):
                st.reverse = not st.reverse
                next_at = 0
            elif key == ord(" "):
                st.paused = not st.paused
                next_at = 0
            elif key == ord("/"):
                st.match = prompt(screen, "filter (regex, empty for none): ") or None
                st.selected = st.offset = 0
                next_at = 0
            else:
                move(screen, key)
            draw(screen)

    def move(screen: Any, key: int) -> None:
        page = max(1, screen.getmaxyx()[0] - 6)
        steps = {curses.KEY_DOWN: 1, ord("j"): 1, curses.KEY_UP: -1, ord("k"): -1}
        steps.update(
            {curses.KEY_NPAGE: page, curses.KEY_PPAGE: -page, curses.KEY_HOME: -(10**9), curses.KEY_END: 10**9}
        )
        if key in steps:
            st.selected = max(0, min(len(st.rows) - 1, st.selected + steps[key]))

    def draw(screen: Any) -> None:
        height, width = screen.getmaxyx()
        screen.erase()
        if model.collection is None:
            return
        head = top_header(model.collection, st.sort + (" (reversed)" if st.reverse else ""), st.match)
        if st.paused:
            head[0] += "  [paused]"
        lines: list[tuple[str, int]] = [(printable(h), curses.A_BOLD) for h in head]
        if st.help:
            lines += [(h, curses.A_NORMAL) for h in HELP]
        elif st.knobs is not None:
            heading = curses.A_BOLD  # publisher names; their knobs are indented
            lines += [(printable(k), heading if k and not k.startswith(" ") else curses.A_NORMAL) for k in st.knobs]
        elif st.focus is not None:
            lines.append((printable(f"per process: {st.focus.label}   (Esc: back)"), curses.A_BOLD))
            body = row_lines(st.processes, width - 1, st.descriptions)
            lines.append((printable(body[0].replace("SERIES", "PROCESS", 1)), curses.A_BOLD))
            lines += [(printable(b), curses.A_NORMAL) for b in body[1:]]
            if not st.processes:
                lines.append(("(no process file has this series now)", curses.A_DIM))
        else:
            body = row_lines(st.rows, width - 1, st.descriptions)
            per = 2 if st.descriptions else 1
            room = max(1, (height - len(lines) - 2) // per)
            if st.selected < st.offset:
                st.offset = st.selected
            elif st.selected >= st.offset + room:
                st.offset = st.selected - room + 1
            lines.append((printable(body[0]), curses.A_BOLD))
            for i in range(st.offset, min(len(st.rows), st.offset + room)):
                attr = curses.A_REVERSE if i == st.selected else curses.A_NORMAL
                lines.append((printable(body[1 + i * per]), attr))
                if st.descriptions:
                    lines.append((printable(body[2 + i * per]), curses.A_DIM))
        for y, (line, attr) in enumerate(lines[: height - 1]):
            if line.startswith("WARNING"):
                attr = curses.A_REVERSE
            try:
                screen.addnstr(y, 0, line, width - 1, attr)
            except curses.error:
                pass
        try:
            screen.addnstr(height - 1, 0, printable(st.message) or FOOTER, width - 1, curses.A_DIM)
        except curses.error:
            pass
        screen.refresh()

    def prompt(screen: Any, text: str) -> str:
        height, width = screen.getmaxyx()
        curses.echo()
        curses.curs_set(1)
        screen.timeout(-1)
        screen.move(height - 1, 0)
        screen.clrtoeol()
        screen.addnstr(height - 1, 0, text, width - 1)
        raw = screen.getstr(height - 1, min(len(text), width - 2), 200)
        curses.noecho()
        curses.curs_set(0)
        screen.timeout(100)
        return str(raw.decode("utf-8", "replace")).strip()

    wrapper: Callable[..., int] = curses.wrapper
    try:
        return wrapper(main)
    finally:
        model.close()


__all__ = ["FOOTER", "HELP", "run_curses"]
