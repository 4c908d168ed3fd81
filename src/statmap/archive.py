"""The archive of dead processes: totals that never go backwards (the cleaner).

When a worker process exits (cleanly: its file is *closed*; or not: *dead*),
its file keeps its final values. ``clean()`` folds the final counter,
histogram and summary values of such files into one archive file per
publisher name, ``PUBLISHER.archive.statmap`` in the same directory, then
removes them, so the directory does not fill up as workers are replaced
while the aggregated totals stay exactly where they were. What an archive
file holds, its names and how it is written and read: ``archive_file.py``
(its names are re-exported here: this is the archive's public module).

How it stays exact:

* Folding happens under an exclusive ``flock`` on ``.PUBLISHER.archive.lock``
  (a hidden file readers ignore), so two cleaners never fold the same file.
* The new archive is written under a temporary name and renamed over the
  old one: a reader sees the old archive or the new one, never a mixture.
  Only then are the folded files removed. A cleaner killed between the two
  leaves files that the archive already lists as absorbed; the next clean
  just removes them, and collectors never count them twice because they
  skip any file whose instance id the archive lists.
* Collectors read the archive *after* the process files. A file removed
  after a collector listed the directory is either still readable through
  the collector's open descriptor (then the archive, read later, lists it
  and the file is skipped) or gone (then the archive, read later, holds its
  values). Either way it is counted exactly once.
* Absorbed ids are kept while a file with the same name prefix is still in
  the directory, and until a cleaner has seen it gone for ``RETENTION``
  seconds (a bound on how long a collection may take between listing the
  directory and reading the archive). Counted from when a cleaner *saw* it
  gone, not from the fold: after a cleaner killed before removing, the file
  goes much later.
* The cleaner opens only regular files, never follows a symlink and never
  waits on a FIFO (``_open_regular``); anything else at a name it uses is
  reported and left alone. A fold that fails (full disk) raises nothing out
  of ``clean()``: it is reported, and the files stay for a later clean.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import signal
import stat
import time
from dataclasses import dataclass, field
from typing import Any

from . import _layout as L
from .archive_file import (
    ABSORBED_SERIES,
    ARCHIVE_PREFIX,
    ARCHIVE_PROGRAM,
    ARCHIVE_SUFFIX,
    GONE_SERIES,
    PROCESSES_SERIES,
    Entry,
    archive_path,
    archived,
    declared_only,
    encode_archive,
    is_archive_name,
    lock_name,
    parse_absorbed,
    read_archive,
)
from .directory import check_private, not_regular_problem, open_directory
from .discover import scan_directory
from .errors import FormatError
from .kinds import KINDS, MODE
from .reader import CLOSED, DEAD, NOT_READY, Reader

# The archive's names and file functions, re-exported: ``statmap.archive`` is the archive's public module.
__all__ = [
    "ABSORBED_SERIES", "ARCHIVE_PREFIX", "ARCHIVE_PROGRAM", "ARCHIVE_SUFFIX", "GONE_SERIES", "PROCESSES_SERIES",
    "RETENTION", "CleanReport", "Refused", "archive_path", "clean", "encode_archive", "fold", "is_archive_name",
    "lock_name", "parse_absorbed", "read_archive",
]  # fmt: skip

RETENTION = 300.0  # seconds an absorbed id is remembered once a cleaner has seen its file gone
STALE_TEMP_SECONDS = 60.0  # a hidden temporary file unlocked for this long was left by a crash

PUBLISHER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")  # as publisher.NAME_RE
# Hidden temporaries statmap makes: ``.PUB.PID.HEX.statmap.tmp`` (publishers) and
# ``.PUB.archive.statmap.SUFFIX.tmp`` (cleaners). Other hidden names are not ours to touch.
_TEMP_RE = re.compile(r"^\..+\.statmap(\.[0-9a-f]+)?\.tmp$")
# Every open: never follow a symlink, never wait on a FIFO, never take a terminal.
_SAFE = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC

# Tests only: SIGKILL this process when a clean reaches the step named here
# (tests/test_cleaner.py kills a cleaner at every step). Read once; unset in production.
_KILL_AT = os.environ.get("STATMAP_TEST_KILL_AT") or None


def _step(name: str) -> None:
    if _KILL_AT == name:
        os.kill(os.getpid(), signal.SIGKILL)


class Refused(Exception):
    """An entry the cleaner will not use (not a regular file, cannot be opened): reported, left alone."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def _not_regular(path: str, mode: int) -> Refused:
    return Refused(path, not_regular_problem(mode))


def _open_regular(path: str, flags: int) -> int:
    """Open ``path`` only if it is a regular file (or, with O_CREAT, a new one).

    The type is checked before opening, so no device or FIFO is ever opened,
    and again on the descriptor, in case the entry was swapped in between.
    """
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(path, st.st_mode)
    try:
        fd = os.open(path, flags | _SAFE, 0o600)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.ENODEV):
            raise Refused(path, f"cannot open: {exc.strerror}; left alone") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise _not_regular(path, st.st_mode)
    return fd


@dataclass
class CleanReport:
    """What ``clean()`` did (or, with ``dry_run``, would do)."""

    folded: list[str] = field(default_factory=list)  # process files folded into an archive and removed
    removed: list[str] = field(
        default_factory=list
    )  # files removed without folding (already absorbed, stale temporaries)
    kept: list[tuple[str, str]] = field(default_factory=list)  # (path, why) for ended files left in place
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, problem)
    archives: list[str] = field(default_factory=list)  # archives written

    def to_json(self) -> dict[str, Any]:
        return {
            "folded": self.folded,
            "removed": self.removed,
            "kept": [{"path": p, "reason": r} for p, r in self.kept],
            "errors": [{"path": p, "problem": r} for p, r in self.errors],
            "archives": self.archives,
        }


def _write_atomically(directory: str, name: str, data: bytes) -> None:
    dir_fd = open_directory(directory)
    try:
        # A random name, not the pid: a cleaner killed mid-write leaves its temporary,
        # and the next cleaner may well have the same pid (pid namespaces, restarts).
        for _ in range(16):
            temp = f".{name}.{os.urandom(8).hex()}.tmp"
            try:
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _SAFE, 0o600, dir_fd=dir_fd)
                break
            except FileExistsError:
                continue
        else:
            raise Refused(os.path.join(directory, name), "no free temporary name to write the archive under")
        try:
            # Held while it is written: a concurrent clean never takes it for a stale temporary.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
            if _KILL_AT:
                _step("temp-written")
            os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            try:
                os.unlink(temp, dir_fd=dir_fd)  # ours: created with O_EXCL above
            except OSError:
                pass
            raise
        finally:
            os.close(fd)
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class _ArchiveLock:
    """Exclusive flock on the publisher's hidden lock file."""

    def __init__(self, directory: str, publisher: str) -> None:
        self.path = os.path.join(directory, lock_name(publisher))
        self.fd = -1

    def __enter__(self) -> _ArchiveLock:
        self.fd = _open_regular(self.path, os.O_RDWR | os.O_CREAT)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)  # releases the lock


def _ended_ns(snap_status: str, closed_ns: int, path: str) -> float:
    """When a file's process ended, in seconds since the epoch (best estimate for a dead one: the file's mtime)."""
    if snap_status == CLOSED and closed_ns:
        return closed_ns / 1e9
    try:
        return os.stat(path, follow_symlinks=False).st_mtime
    except OSError:
        return time.time()


def _unlink(path: str) -> bool:
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def _forget(
    directory: str, publisher: str, absorbed: dict[bytes, int], gone: dict[bytes, int], now: float | None
) -> tuple[dict[bytes, int], dict[bytes, int]]:
    """The absorbed ids to keep, and when each was first seen gone.

    A collector may still read a file through a descriptor it opened before the
    file was removed, for up to RETENTION: an id is kept while a file with its
    name prefix is in the directory and until a cleaner has seen it gone for
    RETENTION. The time counts from when a cleaner *saw* it gone, not from the
    fold: a cleaner killed between folding and removing leaves the file for
    a later cleaner to remove, maybe much later.
    """
    visible = {n.rsplit(".", 2)[-2] for n, _ in scan_directory(directory) if n.startswith(publisher + ".")}
    # Read the clock after the listing: every file missing from it was gone by then.
    seen_ns = int((time.time() if now is None else now) * 1e9)
    horizon = seen_ns - int(RETENTION * 1e9)
    keep: dict[bytes, int] = {}
    seen_gone: dict[bytes, int] = {}
    for inst, ns in absorbed.items():
        if inst[:4].hex() in visible:
            keep[inst] = ns  # present (or one like it): not gone
            continue
        since = gone.get(inst, seen_ns)
        if since > horizon:
            keep[inst] = ns
            seen_gone[inst] = since
    return keep, seen_gone


def fold(
    directory: str,
    publisher: str,
    paths: list[str],
    *,
    dry_run: bool = False,
    older_than: float = 0.0,
    report: CleanReport | None = None,
    now: float | None = None,
) -> CleanReport:
    """Fold the ended process files among ``paths`` (all of ``publisher``) into its archive; remove them."""
    report = report if report is not None else CleanReport()
    if not PUBLISHER_RE.match(publisher):
        raise ValueError(f"invalid publisher name {publisher!r}")
    apath = archive_path(directory, publisher)
    clock = now
    now = time.time() if now is None else now
    with _ArchiveLock(directory, publisher):
        if _KILL_AT:
            _step("locked")
        try:
            entries, absorbed, processes, created_ns, gone = read_archive(apath)
        except FormatError as exc:
            report.errors.append((exc.path, f"{exc.problem}; not folding into it"))
            return report
        folded: list[str] = []
        already: list[str] = []
        for path in paths:
            try:
                with Reader(path) as reader:
                    snap = reader.snapshot()
                    closed_ns = reader.header.closed_ns if reader.header else 0
            except FormatError as exc:
                if os.path.lexists(path):
                    report.errors.append((path, exc.problem))
                continue
            ident = snap.identity
            if snap.status not in (DEAD, CLOSED) or ident is None or ident.publisher != publisher:
                continue  # alive (or became not ready): not ours to fold
            if ident.instance_id in absorbed:
                already.append(path)  # a previous cleaner folded it and died before removing it
                continue
            if older_than > 0 and now - _ended_ns(snap.status, closed_ns, path) < older_than:
                report.kept.append((path, f"{snap.status} less than {older_than:g}s ago"))
                continue
            additions: list[tuple[Entry, Any]] = []
            declared: list[L.RecordSpec] = []
            problem = None
            for series in snap.series:
                spec = series.record.spec
                if KINDS[spec.mtype].merge == MODE:
                    declared.append(spec)  # gauges: summed ones declared, others only to drop an outdated declaration
                    continue
                if not archived(spec):
                    continue
                if series.value is None:
                    problem = f"{spec.name}: value unreadable"
                    break
                key = (spec.name, spec.labels)
                entry = entries.get(key)
                if entry is None or declared_only(entry.spec):  # a declaration gives way to values
                    entry = Entry(spec)
                else:
                    problem = entry.compatible(spec)
                    if problem:
                        break
                additions.append((entry, series.value))
            if problem:
                report.kept.append((path, f"cannot fold: {problem}"))
                report.errors.append((path, f"cannot fold into {apath}: {problem}"))
                continue
            for entry, value in additions:
                key = (entry.spec.name, entry.spec.labels)
                # A file with two records for one series (docs/format.md, "Duplicate
                # records") adds both to one entry; a declaration gives way to values.
                current = entries.get(key)
                if current is None or (current is not entry and declared_only(current.spec)):
                    entries[key] = current = entry
                current.add(value)
            for spec in declared:  # the latest declaration of a summed gauge, unless values hold its name
                current = entries.get((spec.name, spec.labels))
                if current is not None and not declared_only(current.spec):
                    continue
                if declared_only(spec):
                    entries[(spec.name, spec.labels)] = Entry(spec)
                elif current is not None:
                    del entries[(spec.name, spec.labels)]  # no longer summed: nothing to declare
            absorbed[ident.instance_id] = int(now * 1e9)
            processes += 1
            if ident.created_ns and (not created_ns or ident.created_ns < created_ns):
                created_ns = ident.created_ns
            folded.append(path)
        if dry_run:
            report.folded += folded
            report.removed += already
            return report
        if folded:
            absorbed, gone = _forget(directory, publisher, absorbed, gone, clock)
            data = encode_archive(publisher, list(entries.values()), absorbed, processes, created_ns, gone)
            _write_atomically(directory, os.path.basename(apath), data)
            report.archives.append(apath)
            if _KILL_AT:
                _step("renamed")
        for path in folded:
            try:
                _unlink(path)
            except OSError as exc:  # in the archive now: collectors skip it, a later clean retries
                report.errors.append((path, f"folded into {apath} but cannot remove it: {exc.strerror}"))
            report.folded.append(path)
            if _KILL_AT:
                _step("removed-one")
        for path in already:
            try:
                if _unlink(path):
                    report.removed.append(path)
            except OSError as exc:
                report.errors.append((path, f"already in {apath} but cannot remove it: {exc.strerror}"))
            if _KILL_AT:
                _step("already-removed-one")
        if _KILL_AT:
            _step("unlocking")
    return report


def _stale_temporary(path: str, st: os.stat_result, now: float) -> bool:
    """A regular temporary file nobody holds, older than STALE_TEMP_SECONDS (raises Refused if not regular)."""
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(path, st.st_mode)
    if now - st.st_mtime < STALE_TEMP_SECONDS:
        return False
    try:
        fd = _open_regular(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        if (os.fstat(fd).st_ino, os.fstat(fd).st_dev) != (st.st_ino, st.st_dev):
            return False  # replaced since it was listed: look again next time
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # a writer is still building it
    finally:
        os.close(fd)
    return True


def clean(
    directory: str,
    *,
    dry_run: bool = False,
    older_than: float = 0.0,
    publishers: Any = None,
    now: float | None = None,
) -> CleanReport:
    """Fold every ended (dead or closed) process file of ``directory`` into its archive and remove it.

    Live files are never touched; corrupt files are reported and kept for a
    post-mortem; stale hidden temporary files left by crashed writers are
    removed. ``publishers``: only these publisher names.
    """
    report = CleanReport()
    by_publisher: dict[str, list[str]] = {}
    clock = now  # None: fold() reads the clock itself, after it lists the directory
    now = time.time() if now is None else now
    try:
        check_private(directory, os.lstat(directory))
    except FileNotFoundError:
        return report
    for name, _inode in scan_directory(directory, hidden=True):
        path = os.path.join(directory, name)
        hidden_temp = bool(_TEMP_RE.match(name))
        if not hidden_temp and (name.startswith(".") or is_archive_name(name)):
            continue  # not ours, or (lock, archive) opened by fold() with the same checks
        try:
            st = os.stat(path, follow_symlinks=False)
            if hidden_temp:
                if _stale_temporary(path, st, now):
                    if not dry_run:
                        _unlink(path)
                    report.removed.append(path)
                continue
            if not stat.S_ISREG(st.st_mode):
                raise _not_regular(path, st.st_mode)  # checked before Reader opens it: no device is opened
        except FileNotFoundError:
            continue  # removed since the listing
        except Refused as exc:
            report.errors.append((exc.path, exc.problem))
            continue
        except OSError as exc:
            report.errors.append((path, f"cannot check or remove it: {exc.strerror}"))
            continue
        try:
            with Reader(path) as reader:
                status, header, _size = reader.poll()
        except FormatError as exc:
            if os.path.lexists(path):
                report.errors.append((path, exc.problem))
            continue
        if header is None or status == NOT_READY:
            report.kept.append((path, "not ready"))
            continue
        if status not in (DEAD, CLOSED):
            continue
        publisher = header.identity.publisher
        if publishers is not None and publisher not in publishers:
            continue
        if not PUBLISHER_RE.match(publisher) or not name.startswith(publisher + "."):
            # The name comes from the file: never let it pick where the archive goes.
            report.errors.append((path, f"publisher name {publisher!r} is invalid or does not match the file name"))
            continue
        by_publisher.setdefault(publisher, []).append(path)
    for publisher, paths in sorted(by_publisher.items()):
        try:
            fold(directory, publisher, paths, dry_run=dry_run, older_than=older_than, report=report, now=clock)
        except Refused as exc:
            report.errors.append((exc.path, f"{exc.problem}; {publisher} files not folded"))
        except OSError as exc:
            # A full disk, a read-only or unwritable directory: the archive is replaced only
            # by a complete new one and files are removed only after that, so nothing is lost;
            # the files stay (still counted by collectors) for a later clean.
            report.errors.append(
                (
                    archive_path(directory, publisher),
                    f"cannot fold into the archive: {exc.strerror}; its process files stay (still counted) "
                    "for a later clean",
                )
            )
    return report
