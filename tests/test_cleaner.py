"""The cleaner under hostile conditions: killed at every step, odd entries at
every name it touches, a full disk. Totals stay exact (never double, never
lost) and the cleaner never hangs, never follows a link, never crashes.

Cleaners run as real subprocesses (``statmap clean``); a cleaner is killed at a
named step through the test-only ``STATMAP_TEST_KILL_AT`` variable that
``archive.py`` reads once. Later cleaners run with a simulated clock
(``clean(now=...)``) to cross the 300 s retention.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

import statmap
from statmap import _layout as L
from statmap.archive import RETENTION, archive_path, clean, read_archive
from statmap.collect import collect
from statmap.errors import CollectionError

from .conftest import ROOT
from .test_limits import full_disk  # noqa: F401 - the 64 KiB tmpfs fixture


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def _statmap(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "statmap", *args], env=_env(**env), text=True, capture_output=True, timeout=timeout
    )


def _closed(statdir: str, n: int, publisher: str = "worker", metric: str = "jobs") -> str:
    pub = statmap.Publisher(publisher, statdir)
    pub.counter(metric, "Jobs done", labels=("kind",)).labels("a").inc(n)
    pub.histogram("duration", "Job duration", buckets=(1, 10, 100)).observe(n)
    pub.close()
    return pub.path


def _absorbed(statdir: str, publisher: str = "worker") -> set[bytes]:
    return set(read_archive(archive_path(statdir, publisher))[1])


# -- 10.2: a cleaner killed at any step ----------------------------------------

STEPS = ["locked", "temp-written", "renamed", "removed-one", "already-removed-one", "unlocking"]


@pytest.mark.parametrize("step", STEPS)
def test_cleaner_killed_at_every_step_counts_every_file_once(statdir: str, step: str) -> None:
    saved: dict[str, bytes] = {}  # every process file ever written, to play a slow collector
    gone: dict[str, float] = {}  # when each was removed, on the (simulated) clock
    expected = 0

    def add(n: int) -> None:
        nonlocal expected
        path = _closed(statdir, n)
        saved[path] = Path(path).read_bytes()
        expected += n

    def check(now: float) -> None:
        for p in saved:
            if p not in gone and not os.path.exists(p):
                gone[p] = now
        c = collect(statdir)
        assert not c.errors, c.errors
        assert c.value("jobs", {"kind": "a"}) == expected
        assert c.value("duration").count == len(saved)
        # A collector that listed the directory before a cleaner removed a file still
        # reads it through its open descriptor, then reads the archive. That may take
        # up to RETENTION: bring back every file removed less than RETENTION ago for
        # one collection to be that collector.
        back = [p for p, t in gone.items() if now - t < RETENTION]
        for p in back:
            Path(p).write_bytes(saved[p])
        try:
            c = collect(statdir)
            assert c.value("jobs", {"kind": "a"}) == expected, f"files {back} counted twice"
        finally:
            for p in back:
                os.unlink(p)

    add(5)
    clean(statdir)  # an archive exists before the killed cleaner
    add(1000)
    add(2)
    # already-removed-one: killed after the rename, then a second cleaner killed while
    # removing the files the archive already holds.
    for at in ("renamed", step) if step == "already-removed-one" else (step,):
        killed = _statmap("clean", "--dir", statdir, STATMAP_TEST_KILL_AT=at)
        assert killed.returncode == -signal.SIGKILL, (at, killed.returncode, killed.stderr)
        check(time.time())
    t0 = time.time()
    add(30)
    clean(statdir, now=t0 + 400)  # long after the kills: folds 30, removes what the killed cleaners left
    check(t0 + 400)
    add(400)
    clean(statdir, now=t0 + 450)  # rewrites the archive 50 s after those removals: they must stay listed
    check(t0 + 450)
    add(7)
    late = t0 + 450 + RETENTION + 100
    clean(statdir, now=late)  # every earlier file gone for longer than RETENTION (except 400's): forgotten
    check(late)
    early = {_instance_from_bytes(saved[p]) for p in list(saved)[:4]}  # 5, 1000, 2, 30
    assert not (_absorbed(statdir) & early), "ids of files gone for more than RETENTION are forgotten"
    assert sorted(os.listdir(statdir)) == [".worker.archive.lock", "worker.archive.statmap"]


def _instance_from_bytes(data: bytes) -> bytes:
    return L.decode_header(data).identity.instance_id


# -- 10.3: odd entries at every name the cleaner touches ---------------------------

KINDS = ["regular", "fifo", "socket", "directory", "symlink", "device"]
NAMES = {
    "process": "worker.99999.deadbeef.statmap",
    "stale-temp": ".worker.99999.deadbeef.statmap.tmp",
    "archive": "worker.archive.statmap",
    "archive-temp": ".worker.archive.statmap.12345.tmp",
    "lock": ".worker.archive.lock",
}


def _plant(path: str, kind: str, outside: Path) -> None:
    if kind == "regular":
        Path(path).write_bytes(b"not a statmap file\n")
    elif kind.lower() == "fifo":
        os.mkfifo(path, 0o600)
    elif kind == "socket":
        short = os.path.join(os.path.dirname(path), "s")  # AF_UNIX paths are short
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(short)
        os.rename(short, path)
    elif kind == "directory":
        os.mkdir(path, 0o700)
    elif kind == "symlink":
        os.symlink(outside, path)
    elif kind == "device":
        if os.geteuid() != 0:
            pytest.skip("mknod of a character device needs root")
        os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # as /dev/null
    old = time.time() - 3600  # old enough to look stale
    os.utime(path, (old, old), follow_symlinks=False)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("where", list(NAMES))
@pytest.mark.slow
def test_odd_entry_never_hangs_or_crashes_the_cleaner(statdir: str, tmp_path: Path, where: str, kind: str) -> None:
    outside = tmp_path / "target"
    outside.write_bytes(b"must stay untouched")
    worker = _closed(statdir, 3)
    other = _closed(statdir, 4, publisher="other", metric="other_jobs")
    planted = os.path.join(statdir, NAMES[where])
    _plant(planted, kind, outside)

    proc = _statmap("clean", "--dir", statdir)  # a hang fails here (TimeoutExpired)
    assert "Traceback" not in proc.stderr, proc.stderr
    if kind != "regular" or where in ("process", "archive"):
        assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
        assert NAMES[where] in proc.stderr, proc.stderr  # the message names the entry
    else:
        assert proc.returncode == 0, proc.stderr
    # Never followed, never removed unless it was a stale temporary regular file.
    assert outside.read_bytes() == b"must stay untouched"
    if kind != "regular" or where not in ("stale-temp", "archive-temp"):
        assert os.path.lexists(planted)
    # The other publisher is cleaned whatever is planted for this one.
    assert not os.path.exists(other)
    assert os.path.exists(archive_path(statdir, "other"))
    if where not in ("archive", "lock"):
        assert not os.path.exists(worker)  # folded despite the odd entry
    exported = _statmap("export", "--clean", "--dir", statdir)
    assert "Traceback" not in exported.stderr, exported.stderr
    if where == "archive":
        # Something unreadable where an archive's totals belong: collecting without
        # them could report lower totals (a counter reset), so the collection fails
        # loudly, naming it (P18), and exports nothing partial.
        with pytest.raises(CollectionError, match=re.escape(NAMES[where])):
            collect(statdir)
        assert exported.returncode == 1 and NAMES[where] in exported.stderr, exported.stderr
        assert "jobs_total" not in exported.stdout
        return
    c = collect(statdir)
    assert c.value("other_jobs", {"kind": "a"}) == 4
    assert c.value("jobs", {"kind": "a"}) == 3  # from the archive or the kept file: never lost
    # export --clean finishes too, and prints both publishers.
    assert 'other_jobs_total{kind="a"} 4' in exported.stdout
    assert 'jobs_total{kind="a"} 3' in exported.stdout


@pytest.mark.parametrize("kind", ["regular", "directory", "FIFO"])
def test_cleaner_with_the_pid_of_a_killed_cleaner(statdir: str, tmp_path: Path, kind: str) -> None:
    """A cleaner whose pid is a killed cleaner's (certain in pid namespaces) finds its
    temporary archive name taken: it must still fold."""
    _closed(statdir, 3)
    leftover = os.path.join(statdir, f".worker.archive.statmap.{os.getpid()}.tmp")  # the name by pid
    _plant(leftover, kind, tmp_path)
    now = time.time()
    os.utime(leftover, (now, now), follow_symlinks=False)  # fresh: killed seconds ago
    report = clean(statdir)
    assert len(report.folded) == 1, report
    # Something that is not a regular file at a temporary name is reported, never removed.
    assert report.errors == ([] if kind == "regular" else [(leftover, f"is a {kind}, not a regular file; left alone")])
    assert collect(statdir).value("jobs", {"kind": "a"}) == 3
    assert os.path.lexists(leftover)  # not stale yet: left alone


@pytest.mark.external
def test_cleaners_with_the_same_pid_in_pid_namespaces(statdir: str) -> None:
    """The same case for real: each cleaner is pid 2 in its own pid namespace."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare (util-linux) for pid namespaces")
    # sh stays pid 1 (the trailing exit stops it from exec'ing python), so python is pid 2
    # both times, and pid 1's immunity to signals does not shield the kill.
    script = f'"{sys.executable}" -m statmap clean --dir "$1"; exit $?'
    cmd = ["unshare", "--pid", "--fork", "sh", "-c", script, "sh", statdir]
    _closed(statdir, 5)
    first = subprocess.run(
        cmd, env=_env(STATMAP_TEST_KILL_AT="temp-written"), capture_output=True, text=True, timeout=60
    )
    assert first.returncode == 128 + signal.SIGKILL, (first.returncode, first.stderr)
    assert [n for n in os.listdir(statdir) if n.endswith(".tmp")], "the killed cleaner left its temporary"
    second = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=60)
    assert second.returncode == 0, second.stderr
    assert "folded" in second.stdout
    assert collect(statdir).value("jobs", {"kind": "a"}) == 5


# -- 10.4: a full disk ----------------------------------------------------------


def _fill(path: str) -> None:
    with open(path, "wb") as f:
        for size in (4096, 512, 1):
            try:
                while True:
                    f.write(b"\0" * size)
                    f.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                # what the failed flush kept in its buffer is dropped below
                f.seek(0, os.SEEK_END)
                f.truncate(f.tell())
    # the buffered tail may fail again on close; the disk is full either way


@pytest.mark.external
def test_full_disk_exports_everything_and_folds_later(full_disk: str) -> None:  # noqa: F811
    statdir = full_disk
    _closed(statdir, 1000)
    _closed(statdir, 2)
    filler = os.path.join(os.path.dirname(statdir), "filler")
    try:
        _fill(filler)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    before = sorted(os.listdir(statdir))

    exported = _statmap("export", "--clean", "--dir", statdir)
    assert 'jobs_total{kind="a"} 1002' in exported.stdout, (exported.stdout, exported.stderr)
    assert "duration_count 2" in exported.stdout and exported.stdout.endswith("# EOF\n")
    assert "No space left on device" in exported.stderr and "worker.archive.statmap" in exported.stderr
    assert "Traceback" not in exported.stderr

    cleaned = _statmap("clean", "--dir", statdir)
    assert cleaned.returncode == 1
    assert "No space left on device" in cleaned.stderr and "worker.archive.statmap" in cleaned.stderr
    assert "Traceback" not in cleaned.stderr
    assert [n for n in sorted(os.listdir(statdir)) if not n.startswith(".")] == [
        n for n in before if not n.startswith(".")
    ]  # nothing removed, no temporary left
    assert not [n for n in os.listdir(statdir) if n.endswith(".tmp")]
    assert collect(statdir).value("jobs", {"kind": "a"}) == 1002

    os.unlink(filler)
    cleaned = _statmap("clean", "--dir", statdir)
    assert cleaned.returncode == 0, cleaned.stderr
    c = collect(statdir)
    assert c.value("jobs", {"kind": "a"}) == 1002 and c.value("duration").count == 2
    assert [n for n in os.listdir(statdir) if not n.startswith(".")] == ["worker.archive.statmap"]
