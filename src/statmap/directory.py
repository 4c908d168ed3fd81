"""Where statmap files live, and the checks that make a directory safe to use.

The default directory is private to the user, like HotSpot's hsperfdata:
created 0700, and refused if it is a symlink, owned by someone else, or
writable by group or others.
"""

from __future__ import annotations

import os
import stat
import tempfile

from .errors import DirectoryError

ENV_DIR = "STATMAP_DIR"


def default_directory() -> str:
    """$STATMAP_DIR, else $XDG_RUNTIME_DIR/statmap, else statmap-UID under /dev/shm or the temp dir."""
    env = os.environ.get(ENV_DIR)
    if env:
        return env
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return os.path.join(runtime, "statmap")
    base = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    return os.path.join(base, f"statmap-{os.getuid()}")


def check_private(path: str, st: os.stat_result) -> None:
    """Refuse a directory another user could have planted or could tamper with."""
    if stat.S_ISLNK(st.st_mode):
        raise DirectoryError(f"{path}: is a symbolic link; refusing to use it")
    if not stat.S_ISDIR(st.st_mode):
        raise DirectoryError(f"{path}: exists and is not a directory")
    if st.st_uid != os.getuid():
        raise DirectoryError(f"{path}: owned by uid {st.st_uid}, not by this user ({os.getuid()})")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise DirectoryError(f"{path}: writable by group or others (mode {stat.S_IMODE(st.st_mode):o})")


def ensure_directory(path: str | None = None) -> str:
    """Create (0700) or check the directory publishers write into; return its path.

    Every directory is held to the private checks: a symlink, a foreign
    owner or group/other write access is refused with DirectoryError.
    """
    path = os.path.abspath(path or default_directory())
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except PermissionError as exc:
        raise DirectoryError(f"{path}: cannot create directory: permission denied") from exc
    except OSError as exc:
        raise DirectoryError(f"{path}: cannot create directory: {exc.strerror}") from exc
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise DirectoryError(f"{path}: {exc.strerror}") from exc
    check_private(path, st)
    if not os.access(path, os.W_OK | os.X_OK):
        raise DirectoryError(f"{path}: not writable by this user")
    return path


def open_directory(path: str) -> int:
    """A descriptor on ``path`` opened without following a final symlink."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC
    try:
        return os.open(path, flags)
    except OSError as exc:
        raise DirectoryError(f"{path}: cannot open directory: {exc.strerror}") from exc


_KINDS = {
    stat.S_IFDIR: "a directory", stat.S_IFLNK: "a symbolic link", stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
}  # fmt: skip


def not_regular_problem(mode: int) -> str:
    """What is wrong with an entry of this mode where a regular file belongs (it is left alone)."""
    return f"is {_KINDS.get(stat.S_IFMT(mode), 'not a regular file')}, not a regular file; left alone"
