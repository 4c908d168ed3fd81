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
        self.screen = pyte.Screen(COLS, ROWS)
        self.stream = pyte.ByteStream(self.screen)
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
