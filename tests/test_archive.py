"""The archive of ended processes and ``clean``: totals never go backwards, files do not pile up."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import deque

import pytest

import statmap
from statmap.archive import archive_path, clean
from statmap.collect import ARCHIVE, Collector, collect
from statmap.discover import statmap_files
from statmap.reader import CLOSED

from .conftest import run_python


def _closed_worker(statdir: str, n: int, *, bounds: tuple[float, ...] = (1, 10, 100)) -> statmap.Publisher:
    pub = statmap.Publisher("worker", statdir)
    pub.counter("jobs", "Jobs done", labels=("kind",)).labels("a").inc(n)
    pub.histogram("duration", "Job duration", buckets=bounds).observe(n)
    pub.summary("size").observe(2 * n)
    pub.gauge("mem").set(n)
    pub.close()
    return pub


def test_fold_keeps_totals_and_writes_a_valid_archive(statdir: str) -> None:
    for n in (1, 2, 3):
        _closed_worker(statdir, n)
    alive = statmap.Publisher("worker", statdir)
    alive.counter("jobs", labels=("kind",)).labels("a").inc(100)
    try:
        before = collect(statdir)
        report = clean(statdir)
        assert len(report.folded) == 3 and report.archives == [archive_path(statdir, "worker")]
        after = collect(statdir)
        for name, labels in (("jobs", {"kind": "a"}), ("duration", None), ("size", None)):
            assert after.value(name, labels) == before.value(name, labels)
        assert after.value("jobs", {"kind": "a"}) == 106
        assert after.value("mem") is None  # gauges of ended processes are not archived
        assert sorted(f.status for f in after.files) == ["alive", ARCHIVE]
        assert statmap_files(statdir) == sorted([alive.path, archive_path(statdir, "worker")])
        # The archive is an ordinary statmap file.
        with statmap.open(archive_path(statdir, "worker")) as reader:
            snap = reader.snapshot()
        assert snap.status == CLOSED and snap.pid == 0 and snap.name == "worker"
        assert {s.name for s in snap.series} >= {"jobs", "duration", "size", "statmap_archive_processes"}
        assert clean(statdir).folded == []  # nothing left to do; the live file is untouched
    finally:
        alive.close()


def test_dry_run_changes_nothing(statdir: str) -> None:
    pub = _closed_worker(statdir, 5)
    report = clean(statdir, dry_run=True)
    assert report.folded == [pub.path] and report.archives == []
    assert statmap_files(statdir) == [pub.path]


def test_older_than_keeps_recent_files(statdir: str) -> None:
    pub = _closed_worker(statdir, 5)
    report = clean(statdir, older_than=3600)
    assert report.folded == [] and [p for p, _ in report.kept] == [pub.path]
    assert len(clean(statdir, older_than=0).folded) == 1


def test_crash_between_archive_and_removal_is_idempotent(statdir: str, tmp_path: object) -> None:
    pub = _closed_worker(statdir, 7)
    saved = os.path.join(str(tmp_path), "saved")
    shutil.copy(pub.path, saved)
    clean(statdir)
    # Put the folded file back: the state a cleaner killed after writing the archive leaves.
    shutil.copy(saved, pub.path)
    c = collect(statdir)
    assert c.value("jobs", {"kind": "a"}) == 7  # not counted twice
    assert [f.absorbed for f in c.files if f.path == pub.path] == [True]
    report = clean(statdir)
    assert report.folded == [] and report.removed == [pub.path]
    assert collect(statdir).value("jobs", {"kind": "a"}) == 7
    assert statmap_files(statdir) == [archive_path(statdir, "worker")]


def test_incompatible_file_is_kept_and_reported(statdir: str) -> None:
    _closed_worker(statdir, 1)
    clean(statdir)
    odd = _closed_worker(statdir, 2, bounds=(5, 50))
    report = clean(statdir)
    assert report.folded == [] and odd.path in [p for p, _ in report.kept]
    assert any("bounds" in problem for _, problem in report.errors)
    assert os.path.exists(odd.path)


def test_stale_temporary_files_are_removed(statdir: str) -> None:
    stale = os.path.join(statdir, ".worker.1.deadbeef.statmap.tmp")
    open(stale, "wb").close()
    old = time.time() - 3600
    os.utime(stale, (old, old))
    fresh = os.path.join(statdir, ".worker.2.deadbeef.statmap.tmp")
    open(fresh, "wb").close()
    report = clean(statdir)
    assert report.removed == [stale]
    assert not os.path.exists(stale) and os.path.exists(fresh)


def test_archive_file_with_a_pid_is_refused(statdir: str) -> None:
    pub = _closed_worker(statdir, 1)
    os.rename(pub.path, archive_path(statdir, "worker"))  # a process file pretending to be an archive
    c = collect(statdir)
    assert c.errors and "archive" in c.errors[0].problem
    assert c.value("jobs", {"kind": "a"}) is None


CLEANER = """
import sys, time
from statmap.archive import clean
stop = sys.argv[2]
import os
while not os.path.exists(stop):
    clean(sys.argv[1])
    time.sleep(0.005)
"""


@pytest.mark.slow
def test_200_short_lived_workers(statdir: str, tmp_path: object) -> None:
    """Workers come and go (closed, dead, killed) while two cleaners fold and a collector watches."""
    stop = os.path.join(str(tmp_path), "stop")
    cleaner = subprocess.Popen([sys.executable, "-c", CLEANER, statdir, stop])
    ready_r, ready_w = os.pipe()
    alive: deque[tuple[int, int]] = deque()
    expected = observed = 0
    last_sum = last_count = 0.0
    most_files = 0
    watcher = Collector(statdir)  # cached readers across cleanings: the racy case

    def release(index: int) -> None:
        pid, go_w = alive.popleft()
        if index % 10 == 0:
            os.kill(pid, signal.SIGKILL)
        else:
            os.write(go_w, b"c" if index % 2 else b"d")
        os.close(go_w)
        _, status = os.waitpid(pid, 0)
        assert index % 10 == 0 or os.waitstatus_to_exitcode(status) == 0

    def check() -> None:
        nonlocal last_sum, last_count, most_files
        for c in (watcher.collect(), collect(statdir)):
            assert not c.errors, c.errors
            assert c.value("jobs", {"kind": "a"}) == expected
            h = c.value("duration")
            assert h.count == observed and h.count >= last_count and h.sum >= last_sum - 1e-6
            last_count, last_sum = h.count, h.sum
        most_files = max(most_files, len(statmap_files(statdir)))

    try:
        for i in range(1, 201):
            go_r, go_w = os.pipe()
            pid = os.fork()
            if pid == 0:  # the worker
                try:
                    os.close(go_w)
                    pub = statmap.Publisher("worker", statdir)
                    pub.counter("jobs", labels=("kind",)).labels("a").inc(i)
                    pub.histogram("duration", buckets=(1, 10, 100)).observe(i)
                    os.write(ready_w, b"r")
                    if os.read(go_r, 1) == b"c":
                        pub.close()
                    os._exit(0)  # "d": no close, the file is left dead
                except BaseException:  # noqa: BLE001 - a forked child must never return into pytest
                    os._exit(1)
            os.close(go_r)
            assert os.read(ready_r, 1) == b"r"
            alive.append((pid, go_w))
            expected += i
            observed += 1
            if len(alive) > 3:
                release(i)
            if i % 7 == 0:
                clean(statdir)  # a second cleaner, racing the first for the lock
            check()
        while alive:
            release(1)
        check()
    finally:
        for pid, _ in alive:
            os.kill(pid, signal.SIGKILL)
        open(stop, "w").close()
        cleaner.wait(timeout=60)
        watcher.close()
    clean(statdir)
    check()
    assert statmap_files(statdir) == [archive_path(statdir, "worker")]
    assert most_files <= 40, most_files  # bounded: the cleaners keep up
    c = collect(statdir)
    assert c.value("jobs", {"kind": "a"}) == sum(range(1, 201))
    assert [f.absorbed_count for f in c.files] == [200]


@pytest.mark.parametrize("cleaners", [3])
def test_concurrent_cleaners_fold_each_file_once(statdir: str, cleaners: int) -> None:
    paths = [_closed_worker(statdir, n).path for n in range(1, 41)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", "import sys; from statmap.archive import clean; clean(sys.argv[1])", statdir]
        )
        for _ in range(cleaners)
    ]
    for p in procs:
        assert p.wait(timeout=60) == 0
    assert not any(os.path.exists(p) for p in paths)
    c = collect(statdir)
    assert c.value("jobs", {"kind": "a"}) == sum(range(1, 41))
    assert c.value("duration").count == 40
    assert [f.absorbed_count for f in c.files] == [40]


def test_archive_module_does_not_depend_on_the_collector() -> None:
    """Issue 11: the archive's names live in the archive module; the collector imports them, never the reverse."""
    out = run_python("import sys, statmap.archive\nprint('statmap.collect' in sys.modules)").stdout.strip()
    assert out == "False"  # the archive (and its cleaner) never needs the collector
    from statmap import archive

    assert archive.is_archive_name("web" + archive.ARCHIVE_SUFFIX) and archive.ABSORBED_SERIES.startswith(
        archive.ARCHIVE_PREFIX
    )
    assert archive.parse_absorbed("00ff 12\nbad line\n") == {b"\x00\xff": 12}


def test_one_directory_listing(statdir: str) -> None:
    """Issue 11: one listing of a directory (discover.scan_directory) for collector, cleaner and CLI."""
    from statmap.discover import scan_directory

    pub = statmap.Publisher("worker", statdir)
    names = {
        "worker.archive.statmap": b"",  # an archive: listed
        ".worker.1.abcd.statmap.tmp": b"",  # a publisher's temporary: hidden
        ".worker.archive.lock": b"",  # a cleaner's lock: hidden
        "notes.txt": b"",  # not ours
    }
    for name, data in names.items():
        with open(os.path.join(statdir, name), "wb") as f:
            f.write(data)
    published = sorted([os.path.basename(pub.path), "worker.archive.statmap"])
    listed = scan_directory(statdir)
    assert [n for n, _ in listed] == published
    assert all(ino == os.stat(os.path.join(statdir, n)).st_ino for n, ino in listed)
    hidden = [n for n, _ in scan_directory(statdir, hidden=True)]
    assert hidden == sorted([*published, ".worker.1.abcd.statmap.tmp", ".worker.archive.lock"])
    assert statmap_files(statdir) == [os.path.join(statdir, n) for n in published]
    assert scan_directory(os.path.join(statdir, "missing")) == []
    with pytest.raises(NotADirectoryError):
        scan_directory(os.path.join(statdir, "notes.txt"))
    pub.close()


def test_an_archive_replaced_between_its_stat_and_its_open(
    statdir: str, tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cleaner replaces the archive between the collector's look at the path and its reader's open: the
    cached source must describe the file its reader holds, so that later collections notice the next
    replacement (even one whose new file reuses the inode number the collector saw) instead of failing
    with "replaced by another file since it was opened" (seen once in CI's test_200_short_lived_workers)."""
    from statmap import collect as collect_module
    from statmap.reader import Reader

    _closed_worker(statdir, 1)
    assert clean(statdir).folded
    path = archive_path(statdir, "worker")
    spare = os.path.join(str(tmp_path), "spare.statmap")
    shutil.copyfile(path, spare)  # the same archive in another file (another inode)

    class ReplacedFirst(Reader):
        """A real reader; before its first open a real rename replaces the archive, once."""

        def __init__(self, opened: str) -> None:
            if opened == path and os.path.exists(spare):
                os.rename(spare, path)
            super().__init__(opened)

    watcher = Collector(statdir)
    with monkeypatch.context() as patched:
        patched.setattr(collect_module, "Reader", ReplacedFirst)
        assert watcher.collect().value("jobs", {"kind": "a"}) == 1  # looked at one file, read the next one
    src = watcher._sources[os.path.basename(path)]
    assert src.inode == os.stat(path).st_ino  # the file the reader holds, not the one looked at
    # The next replacements, one of them reusing an inode number if this file system reuses them: each
    # collection reads the archive there is.
    for n in range(2, 6):
        _closed_worker(statdir, n)
        assert clean(statdir).folded
        col = watcher.collect()
        assert not col.errors and col.value("jobs", {"kind": "a"}) == sum(range(1, n + 1))
    watcher.close()
