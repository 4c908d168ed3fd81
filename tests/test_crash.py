"""Crash safety: writers killed with SIGKILL at random moments.

A "zygote" interpreter imports statmap once and forks one writer per round;
the test kills each writer with SIGKILL after a random delay (from 0 to a few
milliseconds: while it creates its file, adds series, grows the file, closes
it, or sits in the middle of a multi-word write), then checks every file left
behind. Writers report what they *completed* through a progress file (one
``os.write`` per completed step, so the report survives the kill), and their
values carry invariants a torn or lost value would break:

- ``values``: one file with a counter, a gauge, a 32 KiB text, a histogram
  and a summary, updated in that order once per round ``n``; after the kill
  every value is ``N`` or ``N + 1`` (``N`` the last completed round), in
  program order (``counter >= gauge >= text >= histogram >= summary >=
  counter - 1``), and the text, histogram and summary are internally
  consistent (never a mixture of two rounds).
- ``structure``: publishers created one after another (4 KiB at first, so
  most appends grow the file), labelled series appended, half of the
  publishers closed; after the kill every reported file, series and close is
  there with its value, no final-name file is ever half-built, and leftover
  temporary files read as not ready (or, killed between "ready" and the
  rename, as complete files).

While a writer runs, the test also reads the directory the way ``statmap
show`` does. Every read must succeed: no crash, no hang, no ``FormatError``.

``STATMAP_SCALE=N`` multiplies the number of kills by N (N=10: about 4
minutes per backend).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

import statmap

from .conftest import SCALE

pytestmark = pytest.mark.slow

KILLS = {k: int(v * SCALE) for k, v in {"values": 300, "structure": 300}.items()}

TEXT_CAPACITY = 32768
BOUNDS = (1.0, 2.0, 3.0)

ZYGOTE = textwrap.dedent(
    r"""
    import os, random, sys, time, traceback
    import statmap
    statmap.Publisher  # statmap imports its writing side on first use: here, once, not in every forked writer

    def pattern(n):
        # up to ~30 KB, so that a C write of it takes long enough to be killed in the middle
        return f"<{n}>" * (1 + (n * 7919) % 3000) if n else ""

    def values(directory, fd, rnd, deadline):
        pub = statmap.Publisher("values", directory)
        os.write(fd, f"P {pub.path}\n".encode())
        c = pub.counter("c", "C")
        g = pub.gauge("g", "G")
        t = pub.text("t", "T", size=int(sys.argv[1]))
        h = pub.histogram("h", "H", buckets=(1.0, 2.0, 3.0))
        s = pub.summary("s", "S")
        os.write(fd, b"R\n")
        n = 0
        write = os.write
        while time.monotonic() < deadline:
            n += 1
            c.inc()
            g.set(n)
            t.set(pattern(n))
            h.observe(float((n - 1) % 4 + 1))
            s.observe(float(n))
            write(fd, b"%d\n" % n)

    def structure(directory, fd, rnd, deadline):
        k = 0
        while time.monotonic() < deadline:
            if k >= 300:
                # A killer stalled by a loaded machine must not let this run away into
                # thousands of files (fd and mapping limits, ever slower scans).
                time.sleep(0.001)
                continue
            k += 1
            pub = statmap.Publisher(f"s{k}", directory, capacity=4096)
            os.write(fd, f"P {pub.path}\n".encode())
            texts = pub.text("t", "T", labels=("i",), size=rnd.choice((64, 1500, 5000)))
            counts = pub.counter("n", "N", labels=("i",))
            for i in range(rnd.randint(1, 30)):
                texts.labels(str(i)).set(f"v{i}")
                counts.labels(str(i)).inc(i + 1)
                os.write(fd, f"S {pub.path} {i}\n".encode())
            if rnd.random() < 0.5:
                pub.close()
                os.write(fd, f"X {pub.path}\n".encode())

    SCENARIOS = {"values": values, "structure": structure}

    for line in sys.stdin:
        kind, directory, progress, seed = line.split()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                fd = os.open(progress, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
                SCENARIOS[kind](directory, fd, random.Random(int(seed)), time.monotonic() + 20)
                code = 3  # ran out of time: the test never killed it
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        print(pid, flush=True)
        _, status = os.waitpid(pid, 0)
        print(status, flush=True)
    """
)


def _text_round(text: str) -> int:
    """The round ``n`` a text value encodes; AssertionError if it is torn."""
    if text == "":
        return 0
    assert text.startswith("<") and text.endswith(">"), text[:80]
    units = text[1:-1].split("><")
    n = int(units[0])
    assert all(u == units[0] for u in units), f"mixed rounds in text {text[:80]!r}"
    assert len(units) == 1 + (n * 7919) % 3000, f"text of round {n} has {len(units)} units"
    return n


def _histogram_round(value: statmap.reader.HistogramValue) -> int:
    c = value.count
    full, rest = divmod(c, 4)
    raw = [full + (1 if j < rest else 0) for j in range(4)]
    expected, cumulative = [], 0
    for bound, k in zip((*BOUNDS, float("inf")), raw, strict=True):
        cumulative += k
        expected.append((bound, cumulative))
    assert list(value.buckets) == expected, (c, value.buckets)
    assert value.sum == 10.0 * full + (0.0, 1.0, 3.0, 6.0)[rest], (c, value.sum)
    return c


def _summary_round(value: statmap.reader.SummaryValue) -> int:
    c = value.count
    assert value.sum == c * (c + 1) / 2, (c, value.sum)
    return c


def _latch_state(path: str, series: statmap.reader.Series) -> str:
    """'copy0' if the kill hit while copy 0 was written (odd sequence), 'copy1' if copy 1
    differs from copy 0 (killed while bringing copy 1 level), else 'stable'.
    Uses only docs/format.md section 6: a sequence word, then two copies."""
    rec = series.record
    copy = (rec.value_size - 8) // 2
    with open(path, "rb") as f:
        f.seek(rec.value_offset)
        raw = f.read(rec.value_size)
    seq = int.from_bytes(raw[:8], "little")
    if seq & 1:
        return "copy0"
    return "copy1" if raw[8 : 8 + copy] != raw[8 + copy :] else "stable"


class Stats(Counter[str]):
    pass


def _progress(path: Path) -> list[str]:
    if not path.exists():
        return []
    data = path.read_text()
    lines = data.split("\n")
    return lines[:-1]  # the last element is "" or an unfinished line


def _read_all(directory: str, stats: Stats, *, hidden: bool) -> dict[str, statmap.Snapshot]:
    """Snapshot every file (hidden temporary ones too if asked); every read must succeed."""
    out = {}
    for name in sorted(os.listdir(directory)):
        if name.startswith(".") and not hidden:
            continue
        path = os.path.join(directory, name)
        try:
            with statmap.open(path) as reader:
                snap = reader.snapshot()
                header = reader.header
        except FileNotFoundError:
            continue  # renamed or removed between listdir and open
        except statmap.FormatError as exc:
            if "cannot open: No such file" in exc.problem:
                continue  # a temporary file renamed away between listdir and open
            raise
        stats["reads"] += 1
        if header is not None and header.capacity < snap.size:
            stats["files caught growing (larger than their capacity)"] += 1
        if header is not None and header.capacity > 4096 and name.startswith("s"):
            stats["structure: files that grew"] += 1
        stats["series reads"] += len(snap.series)
        out[name] = snap
    return out


def _check_values(directory: str, lines: list[str], stats: Stats) -> None:
    snaps = _read_all(directory, stats, hidden=True)
    final = {n: s for n, s in snaps.items() if not n.startswith(".")}
    paths = [line[2:] for line in lines if line.startswith("P ")]
    assert len(final) <= 1, list(final)
    if not paths:
        # Killed before reporting: no file, a temporary one, or (killed between the
        # rename and the report) a complete, empty file at its final name.
        stats["values: killed before reporting its file"] += 1
        if not final:
            return
        (name,) = final
    else:
        (path,) = paths
        name = os.path.basename(path)
        assert name in final, f"{path} was reported created but is not there: {list(snaps)}"
    snap = final[name]
    assert snap.status == "dead", snap.status
    if "R" not in lines:
        stats["values: killed while adding its series"] += 1
        for series in snap.series:
            assert series.value in (0, 0.0, "") or getattr(series.value, "count", None) == 0, series
        return
    rounds = [int(x) for x in lines[lines.index("R") + 1 :]]
    done = rounds[-1] if rounds else 0
    got = {s.name: s for s in snap.series}
    assert set(got) == {"c", "g", "t", "h", "s"}
    c = got["c"].value
    g = int(got["g"].value)
    t = _text_round(got["t"].value)
    h = _histogram_round(got["h"].value)
    s = _summary_round(got["s"].value)
    for label, v in (("counter", c), ("gauge", g), ("text", t), ("histogram", h), ("summary", s)):
        assert done <= v <= done + 1, f"{label} reads round {v}, but round {done} was completed before the kill"
    assert c >= g >= t >= h >= s >= c - 1, (c, g, t, h, s)
    stats["values: killed while updating"] += 1
    stats["values checked"] += 5
    if c == done + 1:
        stats["values: kills inside a round"] += 1
    for key in ("t", "h", "s"):
        state = _latch_state(os.path.join(directory, name), got[key])
        if state != "stable":
            stats[f"kills in the middle of a multi-word write ({state})"] += 1


def _check_structure(directory: str, lines: list[str], stats: Stats) -> None:
    snaps = _read_all(directory, stats, hidden=True)
    created = {os.path.basename(line[2:]) for line in lines if line.startswith("P ")}
    closed = {os.path.basename(line[2:]) for line in lines if line.startswith("X ")}
    series: dict[str, int] = {}
    for line in lines:
        if line.startswith("S "):
            _, path, i = line.split()
            series[os.path.basename(path)] = int(i)
    for name, snap in snaps.items():
        if name.startswith("."):
            stats["temporary files left by a kill during creation"] += 1
            assert snap.status in ("not-ready", "dead"), (name, snap.status)
            if snap.status == "not-ready":
                stats["  of which not ready"] += 1
            assert not snap.series or snap.status == "dead"
            continue
        assert snap.status in ("dead", "closed"), (name, snap.status)
        if snap.status == "closed":
            stats["structure: files closed"] += 1
        else:
            assert name not in closed, f"{name} was closed before the kill but reads {snap.status}"
        values = {(s.name, s.labels["i"]): s.value for s in snap.series}
        last = series.get(name, -1)
        for j in range(last + 1):
            assert values.get(("t", str(j))) == f"v{j}", (name, j, values.get(("t", str(j))))
            assert values.get(("n", str(j))) == j + 1, (name, j, values.get(("n", str(j))))
            stats["structure: reported series checked"] += 2
        for (kind, i), v in values.items():
            if int(i) > last:  # being added when the kill came: zero or complete
                assert v in (("", f"v{i}") if kind == "t" else (0, int(i) + 1)), (name, kind, i, v)
                stats["structure: series in progress at the kill"] += 1
    missing = created - set(snaps)
    assert not missing, f"reported created but missing: {missing}"
    if lines and lines[-1].startswith("P "):
        stats["structure: killed right after a creation"] += 1


CHECK = {"values": _check_values, "structure": _check_structure}


@pytest.fixture(scope="module")
def zygote() -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", ZYGOTE, str(TEXT_CAPACITY)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    yield proc
    proc.stdin.close()  # type: ignore[union-attr]
    proc.wait(timeout=30)


def _report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    with capsys.disabled():
        sys.stderr.write(f"\n[statmap {statmap.backend}] {line}\n")


@pytest.mark.parametrize("kind", sorted(KILLS))
def test_sigkill_at_random_moments(
    kind: str, zygote: subprocess.Popen[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rnd = random.Random(f"{kind}-{statmap.backend}-{os.getpid()}")
    stats = Stats()
    max_delay = {"values": 0.025, "structure": 0.03}[kind]
    started = time.monotonic()

    def hung(signum: int, frame: object) -> None:
        raise TimeoutError("a reader or the writer hung")

    old_handler = signal.signal(signal.SIGALRM, hung)
    signal.alarm(int(120 * max(1.0, SCALE)))  # a hung reader fails the test instead of hanging CI
    try:
        for k in range(KILLS[kind]):
            directory = tmp_path / f"d{k}"
            directory.mkdir(mode=0o700)
            progress = tmp_path / f"p{k}"
            # Some kills come within the first 5 ms (fork, then creation), the rest anywhere.
            delay = rnd.uniform(0, 0.005) if rnd.random() < 0.3 else rnd.uniform(0.004, max_delay)
            zygote.stdin.write(f"{kind} {directory} {progress} {rnd.getrandbits(32)}\n")  # type: ignore[union-attr]
            pid = int(zygote.stdout.readline())  # type: ignore[union-attr]
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline:
                if deadline - time.monotonic() > 0.002:
                    _read_all(str(directory), stats, hidden=False)  # a concurrent reader
                    stats["directory scans while the writer ran"] += 1
            os.kill(pid, signal.SIGKILL)
            status = int(zygote.stdout.readline())  # type: ignore[union-attr]
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (
                f"writer ended by itself (status {status}); see its traceback above"
            )
            stats["kills"] += 1
            CHECK[kind](str(directory), _progress(progress), stats)
            for p in directory.iterdir():
                p.unlink()
            directory.rmdir()
            progress.unlink(missing_ok=True)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old_handler)
    elapsed = time.monotonic() - started
    _report(capsys, f"crash/{kind}: {dict(stats)} in {elapsed:.1f}s")
    assert stats["kills"] == KILLS[kind]
    if kind == "values":
        assert stats["values: killed while updating"] > KILLS[kind] // 4
        assert stats["values: kills inside a round"] > 0
    else:
        assert stats["temporary files left by a kill during creation"] > 0
        assert stats["structure: series in progress at the kill"] > 0


def test_partially_written_header_is_not_ready(tmp_path: Path) -> None:
    """A writer killed while copying the header leaves the magic but state 0 (format.md 9.1:
    a file whose state is 0 is not ready)."""
    from statmap import _layout as L

    path = tmp_path / ".w.1.00000000.statmap.tmp"
    path.write_bytes(L.MAGIC + bytes(16384 - len(L.MAGIC)))
    with statmap.open(path) as reader:
        assert reader.snapshot().status == "not-ready"
