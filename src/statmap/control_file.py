"""The control file: the operator's desired knob values for one publisher name.

``DIR/NAME.knobs`` holds netstrings (``knob_values.encode_control``). Only
``statmap set`` writes it, and only whole: a new file under a hidden
temporary name, fsync'd, then renamed over the old one, under an exclusive
flock on ``.NAME.knobs.lock``, so a reader (the program's watcher) sees
the old file or the new one, never a part, and an operator killed at any
point leaves one of the two and a lock the kernel releases.

The program reads it as untrusted input (``load``): no symlink followed, a
regular file owned by this user and writable by nobody else, at most
``MAX_CONTROL_SIZE`` bytes, every field checked; anything else is a problem
reported to the caller, never an exception that stops the watcher.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import stat
from collections.abc import Iterator

from . import _knob_layout as KL
from .knob_values import Control, decode_control, encode_control

_SAFE = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC

# Tests only: SIGKILL this process at the step named here (as archive.py's hook). Unset in production.
_KILL_AT = os.environ.get("STATMAP_TEST_KILL_AT") or None


def control_path(directory: str, name: str) -> str:
    return os.path.join(directory, name + KL.CONTROL_SUFFIX)


def signature(path: str) -> tuple[int, int, int, int] | None:
    """What changes whenever the file is replaced or written (None: no file): one stat."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)


def load(path: str) -> tuple[Control | None, str | None]:
    """(control, None); (None, None) when there is no file; (None, problem) when it is refused."""
    try:
        fd = os.open(path, os.O_RDONLY | _SAFE)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"cannot open: {exc.strerror}"
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None, "not a regular file"
        if st.st_uid != os.geteuid():
            return None, f"owned by uid {st.st_uid}, not by this user: ignored"
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return None, "writable by group or others: ignored"
        if st.st_size > KL.MAX_CONTROL_SIZE:
            return None, f"larger than {KL.MAX_CONTROL_SIZE} bytes"
        data = os.read(fd, KL.MAX_CONTROL_SIZE + 1)
    except OSError as exc:
        return None, f"cannot read: {exc.strerror}"
    finally:
        os.close(fd)
    try:
        return decode_control(data), None
    except ValueError as exc:
        return None, str(exc)
    except Exception as exc:  # noqa: BLE001 - a crafted file must never stop the program's watcher
        return None, f"unreadable: {exc!r}"


@contextlib.contextmanager
def locked(directory: str, name: str) -> Iterator[None]:
    """Serialise the operators of one name (``statmap set`` read-modify-writes the file)."""
    fd = os.open(os.path.join(directory, f".{name}{KL.CONTROL_SUFFIX}.lock"), os.O_RDWR | os.O_CREAT | _SAFE, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _temp_prefix(name: str) -> str:
    return f".{name}{KL.CONTROL_SUFFIX}."


def write(directory: str, name: str, control: Control) -> None:
    """Replace the control file whole (call under ``locked``); temporaries a killed operator left are removed."""
    prefix = _temp_prefix(name)
    for entry in os.listdir(directory):  # only writers under the lock make these: any found now is stale
        if entry.startswith(prefix) and entry.endswith(".tmp"):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, entry))
    temp = os.path.join(directory, f"{prefix}{os.getpid()}.{os.urandom(4).hex()}.tmp")
    data = encode_control(control).encode("utf-8")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _SAFE, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(temp)
        raise
    os.close(fd)
    if _KILL_AT == "control-temp-written":
        os.kill(os.getpid(), signal.SIGKILL)
    os.rename(temp, control_path(directory, name))
