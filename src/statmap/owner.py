"""The file owner: one process's statmap file, created, appended to, grown, forked, closed.

``FileOwner`` knows bytes and mappings, not metric types: ``add_series``
(record + cell) is the one way in for a series. ``statmap.Publisher``
(publisher.py) stands on it with the procedural API (``pub.counter(...)``).

A file is built under a hidden temporary name (header, records, space
reserved so a full disk fails now and not later as SIGBUS), marked ready,
then renamed into place. The publisher holds an exclusive flock on it for
its lifetime: that lock is how readers know the owner is alive.
"""

from __future__ import annotations

import atexit
import dataclasses
import fcntl
import mmap
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _layout as L
from . import cells, exemplars
from ._proc import boot_id, process_start_time
from .directory import ensure_directory, open_directory
from .discover import FILE_SUFFIX
from .diskspace import reserve
from .errors import DirectoryError, PublishError

if TYPE_CHECKING:
    from typing_extensions import Self

NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")

TEMP_SUFFIX = ".tmp"
DEFAULT_CAPACITY = 16384
MAX_FILE_SIZE = 1 << 30


def file_name(publisher: str, pid: int, instance_id: bytes) -> str:
    """``NAME.PID.INSTANCE.statmap``: name and pid visible, instance keeps it unique."""
    return f"{publisher}.{pid}.{instance_id[:4].hex()}{FILE_SUFFIX}"


def program_name() -> str:
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else sys.executable
    return os.path.basename(argv0) or "python"


def new_identity(publisher: str) -> L.Identity:
    pid = os.getpid()
    return L.Identity(
        pid=pid,
        start_time=process_start_time(pid),
        boot_id=boot_id(),
        instance_id=os.urandom(16),
        created_ns=time.time_ns(),
        publisher=publisher,
        program=program_name(),
    )


class Binding:
    """Where a new series' value lives: the mapping and the absolute offset."""

    __slots__ = ("buffer", "cells", "offset")

    def __init__(self, buffer: Any, offset: int) -> None:
        self.buffer = buffer
        self.offset = offset
        self.cells: list[Any] = []  # the cells bound here (moved if the record is deferred)


class FileOwner:
    """Owns one statmap file for one process (see the module's docstring).

    ``lock`` (re-entrant) is held while a series is created; code that must
    check-then-create a series atomically (a labelled family's limit) holds it.
    """

    def __init__(
        self,
        name: str,
        directory: str | None = None,
        *,
        capacity: int = DEFAULT_CAPACITY,
        _identity: L.Identity | None = None,
    ) -> None:
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise ValueError(
                f"publisher name {name!r} must be 1-64 characters of letters, digits, '_', '.', '-', "
                "not starting with '.' or '-'"
            )
        if capacity < L.HEADER_SIZE or capacity % 4096:
            raise ValueError("capacity must be a positive multiple of 4096")
        self.name = name
        self.directory = ensure_directory(directory)
        self._initial_capacity = capacity
        self.lock = threading.RLock()
        self._cells: list[Any] = []  # every live cell, re-pointed after fork
        self._records: list[tuple[int, int]] = []  # (value offset, value size)
        self._metadata = 0  # bytes of record metadata appended or parked (L.MAX_METADATA)
        self._names: set[str] = set()  # metric names in use
        self._closed = False
        self._appending = False  # an append is in progress (in this thread, if re-entered)
        self._deferred: list[tuple[tuple[str, Any], bytes, int, Binding]] = []
        self._bindings: dict[tuple[str, Any], Binding] = {}  # (name, labels) -> its value: one record each
        self._maps: list[mmap.mmap] = []
        self._end = L.HEADER_SIZE
        # A forked child's private memory, until its first update creates its file (see _after_fork_in_child).
        self._pending: mmap.mmap | None = None
        self._materialising = False
        self._owns_file = True  # False in a forked child until it has its own file
        self._create(_identity or new_identity(name))
        _live.add(self)
        _hook_multiprocessing()

    # -- the file ------------------------------------------------------

    def _publish(
        self, dir_fd: int, temp: str, final: str, identity: L.Identity, m: mmap.mmap
    ) -> tuple[L.Identity, str]:
        """Give the ready temporary file its final name without ever replacing an existing file.

        link() fails if the name exists (a planted file, or another writer
        whose pid and instance prefix collide, e.g. from another pid
        namespace): then a new instance id gives a new name.
        """
        for _ in range(8):
            try:
                os.link(temp, final, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
            except FileExistsError:
                identity = dataclasses.replace(identity, instance_id=os.urandom(16))
                m[L.OFF_INSTANCE_ID : L.OFF_INSTANCE_ID + 16] = identity.instance_id  # still hidden: safe to change
                final = file_name(self.name, identity.pid, identity.instance_id)
                continue
            except OSError as exc:
                os.unlink(temp, dir_fd=dir_fd)
                raise PublishError(f"{self.directory}/{final}: cannot publish: {exc.strerror}") from exc
            os.unlink(temp, dir_fd=dir_fd)
            return identity, final
        os.unlink(temp, dir_fd=dir_fd)
        raise PublishError(f"{self.directory}: could not find a free file name for {self.name!r}")

    def _create(self, identity: L.Identity, body: bytes = b"", adopt: mmap.mmap | None = None) -> None:
        """Build a new file holding ``body`` (records), mark it ready, publish it under its final name.

        ``adopt``: private memory with this publisher's layout (a forked
        child's); its records and values are copied and every cell is
        re-pointed into the file while it is still hidden.
        """
        final = file_name(self.name, identity.pid, identity.instance_id)
        temp = "." + final + TEMP_SUFFIX
        size = len(body) if adopt is None else self._end - L.HEADER_SIZE
        capacity = self._initial_capacity
        while L.HEADER_SIZE + size > capacity:
            capacity *= 2
        dir_fd = open_directory(self.directory)
        fd = -1
        try:
            try:
                fd = os.open(
                    temp,
                    os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o600,
                    dir_fd=dir_fd,
                )
            except OSError as exc:
                raise PublishError(f"{self.directory}/{temp}: cannot create: {exc.strerror}") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                reserve(fd, 0, capacity)
                m = mmap.mmap(fd, capacity)
            except OSError as exc:
                os.unlink(temp, dir_fd=dir_fd)
                raise PublishError(f"{self.directory}/{temp}: cannot reserve {capacity} bytes: {exc.strerror}") from exc
            m[: L.HEADER_SIZE] = L.encode_header(identity, capacity)
            end = L.HEADER_SIZE + size
            if adopt is None:
                m[L.HEADER_SIZE : end] = body
            else:
                # One C call: no update (another thread's, a signal handler's) falls between the copy and
                # the re-pointing, so none is lost; later ones land in this file, published below.
                cells.move_cells(self._cells, m, adopt, L.HEADER_SIZE, end)
            cells.store_u64(m, L.OFF_END, end)
            cells.store_u64(m, L.OFF_STATE, L.State.READY)
            identity, final = self._publish(dir_fd, temp, final, identity, m)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            raise
        finally:
            os.close(dir_fd)
        self._identity = identity
        self._path = os.path.join(self.directory, final)
        self._owns_file = True
        self._fd = fd
        self._maps = [m]
        self._capacity = capacity
        self._end = end
        if adopt is not None:
            for binding in self._bindings.values():
                if binding.buffer is adopt:  # a series known from the parent: its value now lives here
                    binding.buffer = m

    def _grow(self, needed: int) -> None:
        capacity = self._capacity
        while capacity < needed:
            capacity *= 2
        if capacity > MAX_FILE_SIZE:
            raise PublishError(f"{self._path}: would grow past {MAX_FILE_SIZE} bytes")
        try:
            reserve(self._fd, self._capacity, capacity)
            m = mmap.mmap(self._fd, capacity)
        except OSError as exc:
            raise PublishError(f"{self._path}: cannot grow to {capacity} bytes: {exc.strerror}") from exc
        # Existing cells keep writing through the older mappings of the same file.
        cells.store_u64(m, L.OFF_CAPACITY, capacity)
        self._maps.append(m)
        self._capacity = capacity

    def add_record(self, spec: L.RecordSpec) -> Binding:
        """Where the value of the series ``spec`` names lives; its record is appended if it is new.

        One series (name and labels), one record, for the publisher's
        lifetime: a series created again, even by a signal handler that
        interrupted the code creating it, gets the same binding.

        Why this holds with a signal handler re-entering in the same thread
        (the lock is reentrant, so it lets the handler in; a plain lock would
        deadlock it): a handler runs to completion before the code it
        interrupted resumes, so the only danger is a check-then-act split by
        a handler. Claiming a series is one ``dict.setdefault`` (one C call,
        no handler can run inside it), and a record is appended only by the
        claim's winner: the appender claims with the record already written
        but not yet published (``end`` unchanged), and if a handler claimed
        the series meanwhile (parked in private memory, below) it drops its
        unpublished copy and returns the handler's binding, which the
        appender publishes before returning (``_publish_deferred``).
        """
        key = (spec.name, spec.labels if spec.mtype != L.EXEMPLAR else (spec.labels, spec.bounds))  # one per bucket
        data, value_rel = L.encode_record(spec)
        with self.lock:
            if self._pending is not None and not self._appending:
                self._materialise()  # a forked child's first new series: now it needs its file
            if self._closed:
                raise PublishError(f"{self._path}: publisher is closed")
            found = self._bindings.get(key)
            if found is not None:
                return found
            # A writer never publishes what a reader rejects (docs/format.md section 11).
            if len(self._records) + len(self._deferred) >= L.MAX_RECORDS:
                raise PublishError(
                    f"{self._path}: cannot add {spec.name!r}: the file holds {L.MAX_RECORDS} records, "
                    f"the reader limit per file (MAX_RECORDS, docs/format.md section 11)"
                )
            if self._metadata + value_rel > L.MAX_METADATA:
                raise PublishError(
                    f"{self._path}: cannot add {spec.name!r}: its {value_rel} bytes of record metadata would pass "
                    f"the reader limit of {L.MAX_METADATA} bytes per file (MAX_METADATA, docs/format.md section 11)"
                )
            if self._appending:
                # Re-entered by a signal handler that interrupted an append in
                # this thread. Appending now would interleave with the
                # interrupted one; park the value in private memory instead,
                # and let that append publish it.
                binding = Binding(mmap.mmap(-1, len(data)), value_rel)
                found = self._bindings.setdefault(key, binding)
                if found is not binding:  # a handler nested in this one claimed it first
                    return found
                self._metadata += value_rel
                self._deferred.append((key, data, value_rel, binding))
                return binding
            self._appending = True
            try:
                return self._append(key, data, value_rel)
            finally:
                try:
                    while self._deferred:
                        self._publish_deferred(*self._deferred.pop(0))
                finally:
                    self._appending = False

    def _write(self, data: bytes) -> tuple[mmap.mmap, int]:
        """Write a record after the last one, not yet published (``end`` unchanged)."""
        offset = self._end
        if offset + len(data) > self._capacity:
            self._grow(offset + len(data))
        m = self._maps[-1]
        m[offset : offset + len(data)] = data
        return m, offset

    def _commit(self, m: mmap.mmap, offset: int, data: bytes, value_rel: int) -> Binding:
        """Publish the record just written at ``offset``."""
        self._end = offset + len(data)
        cells.store_u64(m, L.OFF_END, self._end)  # release: the record is complete
        self._records.append((offset + value_rel, len(data) - value_rel))
        return Binding(m, offset + value_rel)

    def _append(self, key: tuple[str, Any], data: bytes, value_rel: int) -> Binding:
        m, offset = self._write(data)
        binding = Binding(m, offset + value_rel)
        found = self._bindings.setdefault(key, binding)
        if found is not binding:
            # A signal handler created this series while it was being written:
            # its parked record is the one (published by add_record, at this
            # same place); this unpublished copy is dropped.
            return found
        self._metadata += value_rel
        return self._commit(m, offset, data, value_rel)

    def _publish_deferred(self, key: tuple[str, Any], data: bytes, value_rel: int, parked: Binding) -> None:
        """Append a record created by a signal handler, with what its cells wrote meanwhile."""
        m, offset = self._write(data)
        real = self._commit(m, offset, data, value_rel)
        size = len(data) - value_rel
        real.cells = parked.cells  # the same list: a cell adopted from here on is moved below
        real.buffer[real.offset : real.offset + size] = parked.buffer[value_rel : value_rel + size]
        # From here a handler creating this series gets the record itself;
        # cells made on the parked memory before this are moved just below.
        self._bindings[key] = real
        for cell in real.cells:  # a list grown during the loop is walked to its end
            cell._rebind(real.buffer, real.offset)
        # Code below this call may hold the parked binding (add_record returns
        # it to an appender that lost the claim): point it at the record too.
        # Handlers no longer find it (replaced above), so none sees it half-changed.
        parked.buffer, parked.offset = real.buffer, real.offset

    def add_series(self, spec: L.RecordSpec, make_cell: Callable[[Binding], Any]) -> Any:
        """The one way in for a series: its record (once per name and labels) and a cell over its value.

        The cell is remembered, so fork and close can re-point it.
        """
        with self.lock:
            binding = self.add_record(spec)
            cell = make_cell(binding)
            self._cells.append(cell)
            binding.cells.append(cell)
            exemplars.register(cell, self, spec)
        return cell

    def claim_name(self, name: str) -> None:
        """Reserve a metric name: one metric (and its label sets) per name per publisher."""
        with self.lock:
            if name in self._names:
                raise ValueError(f"publisher {self.name!r} already has a metric named {name!r}")
            self._names.add(name)

    def release_name(self, name: str) -> None:
        """Give back a name whose metric could not be created (its record was refused)."""
        with self.lock:
            self._names.discard(name)

    # -- fork ------------------------------------------------------------

    def _after_fork_in_child(self) -> None:
        """Park the child's cells in private memory: same layout, zeroed values, no file yet.

        Most forks exec at once (subprocess) or never update a metric; their
        file would be dead weight. The first update (or new series) creates
        the file from this memory (``_materialise``).
        """
        self.lock = threading.RLock()
        self._materialising = False
        if self._closed or self._pending is not None:
            return  # closed, or a child of a child that never updated: the private memory was copied by fork
        old_fd, old_maps = self._fd, self._maps
        private = mmap.mmap(-1, self._capacity, flags=mmap.MAP_PRIVATE)  # private: not shared with our own forks
        private[: self._end] = old_maps[-1][: self._end]
        for value_offset, size in self._records:
            private[value_offset : value_offset + size] = bytes(size)
        self._pending, self._fd, self._maps, self._owns_file = private, -1, [], False
        for cell in self._cells:
            cell._rebind(private, None, self._materialise)
        for binding in self._bindings.values():
            binding.buffer = private  # same offsets; moved into the file by _create(adopt=...)
        os.close(old_fd)
        _close_maps(old_maps)

    def _materialise(self) -> None:
        """A forked child's first update or new series: create its own file now."""
        with self.lock:
            private = self._pending
            if private is None or self._materialising:
                return  # done (by another thread), or under way in this thread (a signal handler)
            self._materialising, appending = True, self._appending
            self._appending = True  # series declared meanwhile (by a signal handler) wait in _deferred
            try:
                try:
                    self._create(new_identity(self.name), adopt=private)
                except (PublishError, DirectoryError, OSError) as exc:
                    # Never write into the parent's file: keep the cells in private memory.
                    sys.stderr.write(f"statmap: child {os.getpid()} cannot create its file ({exc}); not publishing\n")
                    self._closed = True
                    for cell in self._cells:
                        cell._rebind(private)
                    _live.discard(self)
                self._pending = None
                while self._deferred and not self._closed:
                    self._publish_deferred(*self._deferred.pop(0))
            finally:
                self._materialising, self._appending = False, appending

    # -- lifetime -------------------------------------------------------

    def close(self, *, _closed_ns: int | None = None) -> None:
        """Mark the file closed and keep it for post-mortems.

        Later updates to this publisher's metrics go to private memory and
        no longer reach the file, so what it holds stays final.
        (``_closed_ns`` fixes the close time, for the golden files.)
        """
        with self.lock:
            if self._closed:
                return
            self._closed = True
            exemplars.forget(self._cells)  # updates after close stay private; so do exemplars (dropped)
            if self._pending is not None:  # a forked child that never updated: it has no file
                self._pending = None
                scratch = bytearray(self._capacity)
                for cell in self._cells:
                    cell._rebind(scratch)
                _live.discard(self)
                return
            m = self._maps[-1]
            cells.store_u64(m, L.OFF_CLOSED_NS, time.time_ns() if _closed_ns is None else _closed_ns)
            cells.store_u64(m, L.OFF_STATE, L.State.CLOSED)
            # A private copy, so reads after close return the final values and
            # updates go on from them without reaching the file.
            scratch = bytearray(m)
            for cell in self._cells:
                cell._rebind(scratch)
            # An update racing this close may still hold a view of a mapping
            # (pure-Python cells): that mapping is left open by _close_maps and
            # unmapped when the view goes, never under the update.
            _close_maps(self._maps)
            self._maps = []
            os.close(self._fd)
        _live.discard(self)

    def remove(self) -> None:
        """Close and delete the file."""
        self.close()
        if not self._owns_file:  # a forked child closed before its first update: the file is its parent's
            return
        try:
            os.unlink(self._path)
        except FileNotFoundError:
            pass

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def path(self) -> str:
        """The file's path. In a forked child that has not updated a metric yet, asking creates its file."""
        if self._pending is not None:
            self._materialise()
        return self._path

    @property
    def identity(self) -> L.Identity:
        """Who writes the file (pid, start time, instance id...); as ``path``, creates a forked child's file."""
        if self._pending is not None:
            self._materialise()
        return self._identity

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = "(no file yet: forked, not updated)" if self._pending is not None else repr(self._path)
        return f"<statmap.{type(self).__name__} {self.name!r} at {where}>"


def _close_maps(maps: list[mmap.mmap]) -> None:
    for m in maps:
        try:
            m.close()
        except BufferError:  # a cell we did not adopt still points here; it keeps it alive
            pass


# Every open publisher, for the fork hook and interpreter exit. Strong
# references: a publisher lives until it is closed, even if the program kept
# only its metrics, so a forked child never writes into its parent's file.
_live: set[FileOwner] = set()


_forking: list[FileOwner] = []
# Serialises forks from several threads: each fork's hooks use _forking, and
# CPython runs the "before" hooks before it takes its own fork lock. (Without
# it, one thread's "after" hook cleared the list another thread had filled,
# and that thread never released the locks it took: every later fork hung.)
_fork_lock = threading.Lock()


def _before_fork() -> None:
    # Hold every publisher's lock across fork, so the child never inherits a
    # lock that another thread held mid-append.
    _fork_lock.acquire()
    _forking[:] = list(_live)
    for pub in _forking:
        pub.lock.acquire()


def _after_fork_in_parent() -> None:
    for pub in _forking:
        pub.lock.release()
    _forking.clear()
    _fork_lock.release()


def _after_fork_in_child() -> None:
    global _fork_lock
    _fork_lock = threading.Lock()
    for pub in _forking:
        pub._after_fork_in_child()
    _forking.clear()
    _hook_multiprocessing()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)


# multiprocessing's children (Pool workers, uvicorn --workers, ...) leave
# through os._exit, which skips atexit; they run multiprocessing's finalizers
# first. A child clears the finalizers it inherited before it runs, then runs
# its "after fork" callbacks (even under spawn and forkserver): that callback
# registers our finalizer again in the child.
_mp_hooked_pid = 0


class _MultiprocessingToken:
    """Kept alive for ``register_after_fork`` (which holds it weakly)."""


_MP_TOKEN = _MultiprocessingToken()


def _hook_multiprocessing() -> None:
    global _mp_hooked_pid
    util = sys.modules.get("multiprocessing.util")
    if util is None or _mp_hooked_pid == os.getpid():
        return  # multiprocessing not in use (its children import it first), or done in this process
    _mp_hooked_pid = os.getpid()
    util.Finalize(None, _close_all, exitpriority=-100)  # low: after the finalizers that may still update
    util.register_after_fork(_MP_TOKEN, _rehook_multiprocessing)


def _rehook_multiprocessing(_token: object) -> None:
    global _mp_hooked_pid
    _mp_hooked_pid = 0
    _hook_multiprocessing()


def create_files() -> None:
    """Create the files of this process's publishers now, if they have none yet.

    A forked child creates its file on its first update or new series, so
    a fork that execs (subprocess) or never updates leaves nothing behind. A
    long-lived worker forked from a master that declared the metrics
    (gunicorn ``--preload``) can call this once after the fork, so that it is
    listed from the start, before its first request.
    """
    for owner in list(_live):
        if owner._pending is not None:
            owner._materialise()


def close_all() -> None:
    """Close every open publisher of this process (their files read *closed*, not *dead*).

    Runs at interpreter exit, in multiprocessing children before ``os._exit``,
    and at an ASGI server's lifespan shutdown (``ASGIMiddleware``). Call it
    yourself where a process ends without those: e.g. uvicorn ``--workers``
    re-raise SIGTERM after their graceful shutdown, which kills them before
    atexit, so an ASGI app without the middleware calls it on lifespan shutdown.
    """
    _close_all()


@atexit.register
def _close_all() -> None:
    for pub in list(_live):
        try:
            pub.close()
        except Exception:  # noqa: BLE001 - exit must go on
            pass
