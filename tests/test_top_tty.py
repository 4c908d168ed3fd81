"""`statmap top` in its interactive (curses) mode, in a real pseudo-terminal.

The command runs attached to a pty of a known size; its output is fed to a
VT100 emulator (pyte), so the assertions read the screen a person would
see, and the keys are typed into the terminal: live values, rates, the
filter prompt, pause, sort and quit (with the terminal restored).
"""

from __future__ import annotations

import fcntl
import os
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator

import pytest

import statmap

pyte = pytest.importorskip("pyte", reason="pyte is not installed (pip install pyte): the terminal test needs it")

pytestmark = pytest.mark.once  # what the terminal shows: the values come from the reader, tested under both cells

ROWS, COLS = 30, 220  # wide enough for the header with a pytest tmp path


class _Screen(pyte.Screen):  # type: ignore[misc,name-defined]
    """pyte's screen plus what ncurses sends an xterm and pyte 0.8 leaves out: REP (repeat the last
    character, ``CSI n b``), SU and SD (scroll the region, ``CSI n S`` / ``CSI n T``). Without them the
    emulator shows stale text a real terminal does not (curses scrolls when rows change places)."""

    _last = ""

    def draw(self, data: str) -> None:
        if data:
            self._last = data[-1]
        super().draw(data)

    def repeat_last(self, count: int | None = None, *_: object) -> None:
        if self._last:
            super().draw(self._last * (count or 1))

    def _scroll(self, count: int | None, up: bool) -> None:
        top = self.margins.top if self.margins else 0
        x, y = self.cursor.x, self.cursor.y
        self.cursor.y = top
        (self.delete_lines if up else self.insert_lines)(count or 1)
        self.cursor.x, self.cursor.y = x, y

    def scroll_up(self, count: int | None = None, *_: object) -> None:
        self._scroll(count, True)

    def scroll_down(self, count: int | None = None, *_: object) -> None:
        self._scroll(count, False)


class _Stream(pyte.ByteStream):  # type: ignore[misc,name-defined]
    csi = dict(pyte.ByteStream.csi, b="repeat_last", S="scroll_up", T="scroll_down")


class Terminal:
    """A process on a pty, and the screen its output draws."""

    def __init__(self, args: list[str]) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
        env = dict(os.environ, TERM="xterm", LINES=str(ROWS), COLUMNS=str(COLS))
        self.proc = subprocess.Popen(
            args, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True, close_fds=True
        )
        os.close(slave)
        self.screen = _Screen(COLS, ROWS)
        self.stream = _Stream(self.screen)
        self.raw = b""

    def pump(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            ready, _, _ = select.select([self.master], [], [], left)
            if not ready:
                continue
            try:
                data = os.read(self.master, 65536)
            except OSError:  # the process exited and closed its side
                return
            if not data:
                return
            self.raw += data
            self.stream.feed(data)

    def text(self) -> str:
        return "\n".join(line.rstrip() for line in self.screen.display)

    def wait_for(self, predicate: Callable[[str], bool], what: str, timeout: float = 30) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.pump(0.1)
            if predicate(self.text()):
                return self.text()
            if self.proc.poll() is not None:
                break
        raise AssertionError(f"the screen never showed {what}; it shows:\n{self.text()}")

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        os.close(self.master)


@pytest.fixture
def terminal_of(statdir: str) -> Iterator[Callable[..., Terminal]]:
    made: list[Terminal] = []

    def start(*args: str) -> Terminal:
        t = Terminal([sys.executable, "-m", "statmap", "top", "--dir", statdir, *args])
        made.append(t)
        return t

    yield start
    for t in made:
        t.close()


def _row(screen: str, series: str) -> list[str]:
    for line in screen.splitlines():
        if line.split()[:1] == [series]:
            return line.split()
    return []


def _first_row(screen: str) -> str:
    """The series of the table's first row (the line after the SERIES heading)."""
    lines = screen.splitlines()
    for i, line in enumerate(lines[:-1]):
        if line.startswith("SERIES"):
            return (lines[i + 1].split() or [""])[0]
    return ""


def test_top_draws_live_values_and_rates_and_quits_cleanly(statdir: str, terminal_of: Callable[..., Terminal]) -> None:
    pub = statmap.Publisher("web", statdir)
    requests = pub.counter("requests", "Requests")
    temp = pub.gauge("temperature", "Degrees", aggregate="max")
    latency = pub.histogram("latency", "Latency", buckets=(0.1, 1.0), unit="seconds")
    requests.inc(5)
    temp.set(21.5)
    latency.observe(0.05)
    term = terminal_of("--interval", "0.3")
    screen = term.wait_for(lambda s: _row(s, "requests")[-1:] == ["5"], "requests = 5")
    assert "processes: 1 alive" in screen
    assert _row(screen, "temperature")[-1:] == ["21.5"]
    assert "q quit" in screen  # the help line at the bottom
    # a live change shows up at the next refresh, with a rate for the counter
    for _ in range(20):
        requests.inc(100)
        term.pump(0.1)
    screen = term.wait_for(lambda s: _row(s, "requests")[-1:] == ["2005"], "requests = 2005")
    row = _row(screen, "requests")  # SERIES TYPE RATE/s VALUE
    assert len(row) == 4 and row[1] == "counter" and float(row[2]) > 0, screen
    # q quits: exit status 0 and curses gave the terminal back (rmcup/alternate screen left)
    term.type(b"q")
    assert term.proc.wait(timeout=15) == 0
    term.pump(0.5)
    assert b"\x1b[?1049l" in term.raw or b"\x1b[?47l" in term.raw, term.raw[-200:]
    pub.close()


def test_top_filter_pause_and_sort_keys(statdir: str, terminal_of: Callable[..., Terminal]) -> None:
    pub = statmap.Publisher("web", statdir)
    a = pub.counter("alpha_total_requests", "A")
    b = pub.counter("beta_errors", "B")
    a.inc(3)
    b.inc(7)
    term = terminal_of("--interval", "0.2")
    term.wait_for(lambda s: bool(_row(s, "alpha_total_requests")) and bool(_row(s, "beta_errors")), "both series")
    # "/" opens the filter prompt; the regex keeps only the matching series
    term.type(b"/")
    term.wait_for(lambda s: "filter (regex" in s, "the filter prompt")
    term.type(b"^beta\r")
    screen = term.wait_for(lambda s: not _row(s, "alpha_total_requests") and bool(_row(s, "beta_errors")), "beta only")
    assert "^beta" in screen  # the header names the filter
    # space pauses: values stop changing until space again
    term.type(b" ")
    term.wait_for(lambda s: "[paused]" in s, "[paused]")
    b.inc(1000)
    term.pump(1.0)
    assert _row(term.text(), "beta_errors")[-1:] == ["7"], term.text()
    term.type(b" ")
    term.wait_for(lambda s: _row(s, "beta_errors")[-1:] == ["1007"], "beta = 1007 after resuming")
    # an empty filter shows everything again; "s" changes the sort named in the header
    term.type(b"/\r")
    term.wait_for(lambda s: bool(_row(s, "alpha_total_requests")), "alpha back")
    before = [line for line in term.text().splitlines() if "sort" in line]
    term.type(b"s")
    term.wait_for(lambda s: [line for line in s.splitlines() if "sort" in line] != before, "a new sort order")
    # a bad regex is reported on the help line, not a crash
    term.type(b"/[\r")
    term.wait_for(lambda s: "bad filter" in s, "the bad-filter message")
    assert term.proc.poll() is None
    term.type(b"q")
    assert term.proc.wait(timeout=15) == 0
    pub.close()


def test_top_shows_control_characters_escaped(statdir: str, terminal_of: Callable[..., Terminal]) -> None:
    """A label with escape sequences (title, clear screen, colour, C1 CSI) and a bidi override
    reaches the terminal as visible escapes: the title is not set, the screen is not cleared."""
    bad = "\x1b]0;owned\x07\x1b[2J\x1b[31mred\x9b1m\u202etxt.exe\x7f"
    pub = statmap.Publisher("web", statdir)
    pub.counter("requests", "Requests " + bad, labels=("path",)).labels(bad).inc(5)
    term = terminal_of("--interval", "0.3")
    screen = term.wait_for(lambda s: "txt.exe" in s, "the hostile label")
    assert "\\x1b]0;owned\\x07\\x1b[2J\\x1b[31mred\\x9b1m\\u202etxt.exe" in screen, screen
    assert "owned" not in (term.screen.title or "")
    assert "\u202e".encode() not in term.raw and "\x9b".encode() not in term.raw
    assert b"\x1b]0;owned" not in term.raw and b"\x1b[31mred" not in term.raw
    term.type(b"q")
    assert term.proc.wait(timeout=15) == 0
    pub.close()


def test_top_units_help_descriptions_and_per_process_view(statdir: str, terminal_of: Callable[..., Terminal]) -> None:
    """Human units, full histogram lines, ``?`` help, ``d`` descriptions, Enter: a series process by process."""
    from .test_server_support import Worker

    workers = [Worker(statdir, "svc"), Worker(statdir, "svc")]
    pub = statmap.Publisher("web", statdir)
    sent = pub.counter("bytes_sent", "Response bytes sent", unit="bytes")
    big = pub.counter("events", "Events seen")
    wait = pub.gauge("wait", "Time spent waiting", unit="seconds", aggregate="max")
    sent.inc(48_863_642)  # 46.6 MiB
    big.inc(7_441_370)
    wait.set(0.0106)
    try:
        workers[0]("inc 5")
        workers[1]("inc 900")
        for w in workers:
            for v in (0.004, 0.004, 0.05, 0.5):
                w(f"observe {v}")
        term = terminal_of("--interval", "0.5")
        screen = term.wait_for(lambda s: bool(_row(s, "bytes_sent")), "bytes_sent")
        assert _row(screen, "bytes_sent")[-2:] == ["46.6", "MiB"], screen
        assert _row(screen, "events")[-1] == "7.44M", screen
        assert _row(screen, "wait")[-2:] == ["10.6", "ms"], screen
        # a histogram line: count, percentiles and max, in ms, never cut
        for w in workers:
            w("observe 0.05")
        screen = term.wait_for(lambda s: "p99=" in " ".join(_row(s, "latency")), "the histogram line")
        line = " ".join(_row(screen, "latency"))
        assert "n=" in line and "p50=" in line and "p90=" in line and "max=" in line, line
        assert "ms" in line and "e-0" not in line, line
        # ? shows the keys; any key closes it
        term.type(b"?")
        term.wait_for(lambda s: "statmap top: keys" in s and "per-process" in s.lower(), "the help")
        term.type(b"x")
        term.wait_for(lambda s: "statmap top: keys" not in s and bool(_row(s, "events")), "the table again")
        # d: descriptions under each series
        term.type(b"d")
        term.wait_for(lambda s: "Response bytes sent [bytes]" in s and "Events seen" in s, "the descriptions")
        term.type(b"d")
        # the selection moves with the arrows; Enter shows the selected series per process
        term.type(b"/^jobs$\r")
        term.wait_for(lambda s: bool(_row(s, 'jobs{queue="high"}')) and not _row(s, "events"), "jobs only")
        term.type(b"\r")
        screen = term.wait_for(lambda s: "per process:" in s and f"pid {workers[1].pid}" in s, "the per-process view")
        rows = {w.pid: [ln for ln in screen.splitlines() if ln.startswith(f"pid {w.pid} ")] for w in workers}
        assert rows[workers[0].pid][0].split()[-1] == "5", screen
        assert rows[workers[1].pid][0].split()[-1] == "900", screen
        # Esc goes back to the table (and does not quit)
        term.type(b"\x1b")
        term.wait_for(lambda s: "per process:" not in s and bool(_row(s, 'jobs{queue="high"}')), "the table")
        assert term.proc.poll() is None
        # sort by rate: the counter that moves comes first
        term.type(b"/\r")
        term.wait_for(lambda s: bool(_row(s, "events")), "everything again")
        term.type(b"ss")
        term.wait_for(lambda s: "sort: rate" in s, "sort: rate")

        def events_first(screen: str) -> bool:
            big.inc(100)  # events keep coming until the screen shows them (a loaded machine refreshes late)
            return _first_row(screen) == "events"

        term.wait_for(events_first, "events first by rate")
        capture = os.environ.get("STATMAP_TOP_CAPTURE")
        if capture:
            with open(capture, "w") as out:
                out.write(term.text().rstrip() + "\n")
        term.type(b"q")
        assert term.proc.wait(timeout=15) == 0
    finally:
        for w in workers:
            w.stop()
        pub.close()


def test_top_knobs_view(statdir: str, terminal_of: Callable[..., Terminal]) -> None:
    """``k`` shows every knob of the live processes: value (per process when they differ), origin, who, when."""
    from .test_knobs import Workers, cli

    workers = Workers(statdir)
    try:
        a, b = workers.start(), workers.start(max_rate=500)
        assert cli(statdir, "set", "web", "maintenance=true").returncode == 0
        assert cli(statdir, "set", "web", "rate_limit=1000").returncode == 1  # b refuses it
        term = terminal_of("--interval", "0.3")
        term.wait_for(lambda s: "k knobs" in s, "the footer naming k")
        term.type(b"?")
        term.wait_for(lambda s: "knobs: value, origin, who set it and when" in s, "k in the help")
        term.type(b"x")
        term.type(b"k")
        screen = term.wait_for(lambda s: "web  (2 processes)" in s and "maintenance" in s, "the knobs view")
        rows = {ln.split()[0]: ln for ln in screen.splitlines() if ln.startswith("  ") and ln.split()}
        assert rows["KNOB"].split()[:3] == ["KNOB", "VALUE", "ORIGIN"], screen
        maintenance = rows["maintenance"].split()
        assert maintenance[1:3] == ["true", "operator"], screen
        assert f"uid {os.getuid()} pid" in rows["maintenance"] and "ago)" in rows["maintenance"], screen
        assert maintenance[-2:] == ["false", "true|false"], screen  # default, allowed
        assert f"{a.pid}:int 1..10000 {b.pid}:int 1..500" in rows["rate_limit"], screen  # declarations differ
        assert rows["log_level"].split()[1:4] == ["info", "default", "-"], screen
        assert f"{a.pid}=1000 {b.pid}=100" in rows["rate_limit"], screen  # the processes differ
        assert "default,operator" in rows["rate_limit"], screen
        assert f"rate_limit: pid {b.pid} refused 1000: 1000 is above the maximum 500" in screen, screen
        # k again (or Esc) goes back to the table; top never changes a knob
        term.type(b"k")
        term.wait_for(lambda s: "SERIES" in s and "web  (2 processes)" not in s, "the table again")
        term.type(b"q")
        assert term.proc.wait(timeout=15) == 0
    finally:
        workers.stop()


def test_top_per_process_view_shows_control_characters_escaped(
    statdir: str, terminal_of: Callable[..., Terminal]
) -> None:
    """The per-process view (Enter) of a series with a hostile label, and the knobs view (k): escapes only."""
    bad = "\x1b]0;owned\x07\x1b[2J\x1b[31mred\x9b1m\u202etxt.exe\x7f"
    pub = statmap.Publisher("web", statdir)
    pub.counter("requests", "Requests " + bad, labels=("path",)).labels(bad).inc(5)
    pub.knob("greeting", "Greeting", default="hello " + bad)
    term = terminal_of("--interval", "0.3")
    term.wait_for(lambda s: "txt.exe" in s, "the hostile label")
    term.type(b"/^requests$\r")
    term.wait_for(lambda s: "requests{" in s, "requests")
    term.type(b"d\r")
    screen = term.wait_for(lambda s: "per process:" in s and f"pid {os.getpid()}" in s, "the per-process view")
    assert '\\x1b]0;owned\\x07\\x1b[2J\\x1b[31mred\\x9b1m\\u202etxt.exe\\x7f"}' in screen, screen  # the heading
    assert "Requests \\x1b]0;owned\\x07" in screen, screen  # the description under the process row
    term.type(b"\x1b")
    # the knobs view: a knob's text value from the file, escaped too
    term.wait_for(lambda s: "per process:" not in s, "the table again")
    term.type(b"k")
    screen = term.wait_for(lambda s: "greeting" in s, "the knobs view")
    assert "hello \\x1b]0;owned\\x07\\x1b[2J" in screen, screen
    assert "owned" not in (term.screen.title or "")
    assert "\u202e".encode() not in term.raw and "\x9b".encode() not in term.raw
    assert b"\x1b]0;owned" not in term.raw and b"\x1b[31mred" not in term.raw
    term.type(b"q")
    assert term.proc.wait(timeout=15) == 0
    pub.close()
