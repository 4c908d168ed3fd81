"""Attach to a process by pid: the statmap files it has mapped, wherever they are.

``attach(pid)`` reads ``/proc/PID/maps`` for mappings of statmap files
and gives their paths as this process can open them: through
``/proc/PID/root``, the process's own view of the filesystem, so a file in a
directory the operator does not know, or in another mount namespace (a
container), is found and read the same way.

A writer maps its file before it links it into place, so the maps name the
temporary it was built under, "(deleted)"; the maps line also gives the
file's device and inode, and the published file is the one in that
directory with them. (``/proc/PID/map_files`` would open the mapping itself,
but it needs CAP_SYS_ADMIN, and readers open files by path with
``O_NOFOLLOW``: the device and inode do the same job for any user allowed
to read the maps.) A file removed while still mapped is reported, not read.

Every refusal says why: no such process, a process of another user (reading
its maps needs the ptrace "read" permission: same user, or root, and see
``/proc/sys/kernel/yama/ptrace_scope``), or a process with no statmap file
mapped (a forked worker makes its file at its first update).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .discover import FILE_SUFFIX
from .errors import DirectoryError

PROC = "/proc"
_DELETED = " (deleted)"
_TEMP = ".tmp"  # the writer's temporary suffix (owner.TEMP_SUFFIX; the reading side does not import the writer)


class AttachError(DirectoryError):
    """The process cannot be attached to (the message says why)."""


@dataclass
class Attached:
    """What a process has mapped."""

    pid: int
    paths: list[str] = field(default_factory=list)  # readable paths (through /proc/PID/root), in maps order
    inner: list[str] = field(default_factory=list)  # the same files as the process names them
    problems: list[str] = field(default_factory=list)  # files found but not readable

    @property
    def directories(self) -> list[str]:
        """The directories of the files, readable from here, in order of first appearance."""
        return list(dict.fromkeys(os.path.dirname(p) for p in self.paths))


def _owner(pid: int, proc: str) -> str:
    try:
        uid = os.stat(f"{proc}/{pid}").st_uid
    except OSError:
        return ""
    try:
        import pwd

        return f" (uid {uid}, {pwd.getpwuid(uid).pw_name})"
    except (ImportError, KeyError):
        return f" (uid {uid})"


def _denied(pid: int, what: str, proc: str) -> AttachError:
    try:
        uid = os.stat(f"{proc}/{pid}").st_uid
    except OSError:
        uid = -1
    if uid != os.geteuid():
        who = (
            f"the process belongs to another user{_owner(pid, proc)} and this one (uid {os.geteuid()}) "
            "may not inspect it; run as that user or as root"
        )
    else:
        who = (
            "the process runs as this user, but inspecting it is restricted "
            "(ptrace scope, a container's limits, or a process that made itself non-dumpable)"
        )
    return AttachError(
        f"pid {pid}: cannot read {what}: permission denied: {who} "
        "(reading another process's maps needs ptrace read access; see /proc/sys/kernel/yama/ptrace_scope)"
    )


@dataclass(frozen=True)
class Mapping:
    """One ``*.statmap`` mapping in /proc/PID/maps."""

    address: str  # start-end, the name in /proc/PID/map_files
    device: tuple[int, int]  # (major, minor)
    inode: int
    path: str  # as the process names it, " (deleted)" removed
    deleted: bool


def _is_statmap(name: str) -> bool:
    # a published file, or the temporary name it was built under (the writer maps the file
    # before it links it into place, so the maps show that name, "(deleted)")
    return name.endswith(FILE_SUFFIX) or (name.startswith(".") and name.endswith(FILE_SUFFIX + _TEMP))


def mapped_files(pid: int, proc: str = PROC) -> list[Mapping]:
    """Each ``*.statmap`` file ``pid`` has mapped, once per file (AttachError if its maps cannot be read)."""
    try:
        with open(f"{proc}/{pid}/maps", encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except FileNotFoundError:
        raise AttachError(f"pid {pid}: no such process") from None
    except PermissionError:
        raise _denied(pid, f"{proc}/{pid}/maps", proc) from None
    except OSError as exc:
        raise AttachError(f"pid {pid}: cannot read {proc}/{pid}/maps: {exc.strerror}") from None
    found: dict[tuple[tuple[int, int], int], Mapping] = {}
    for line in text.splitlines():
        # address perms offset dev inode pathname (the path may hold spaces: split five times only)
        parts = line.split(None, 5)
        if len(parts) < 6:
            continue
        path = parts[5]
        deleted = path.endswith(_DELETED)
        path = path.removesuffix(_DELETED)
        if not _is_statmap(os.path.basename(path)):
            continue
        try:
            major, minor = (int(x, 16) for x in parts[3].split(":"))
            inode = int(parts[4])
        except ValueError:
            continue
        key = ((major, minor), inode)
        if key not in found:
            found[key] = Mapping(parts[0], (major, minor), inode, path, deleted)
    return list(found.values())


def _published(root_dir: str, mapping: Mapping) -> str | None:
    """The published name of ``mapping`` in ``root_dir`` (the file with its inode), or None."""
    name = os.path.basename(mapping.path)
    if not mapping.deleted and not name.startswith("."):
        candidates = [name]
    else:
        try:
            candidates = sorted(n for n in os.listdir(root_dir) if n.endswith(FILE_SUFFIX) and not n.startswith("."))
        except OSError:
            return None
    for cand in candidates:
        try:
            st = os.stat(os.path.join(root_dir, cand), follow_symlinks=False)
        except OSError:
            continue
        if st.st_ino == mapping.inode and (os.major(st.st_dev), os.minor(st.st_dev)) == mapping.device:
            return cand
    return None


def attach(pid: int, proc: str = PROC) -> Attached:
    """The statmap files ``pid`` has mapped, as paths this process can read (AttachError if none)."""
    if pid <= 0:
        raise AttachError(f"pid {pid}: not a process id")
    out = Attached(pid)
    for m in mapped_files(pid, proc):
        if not m.path.startswith("/"):
            out.problems.append(f"{m.path}: not a path statmap can follow")
            continue
        inner_dir = os.path.dirname(m.path)
        root_dir = f"{proc}/{pid}/root{inner_dir}"
        try:
            os.stat(root_dir)
        except PermissionError:
            raise _denied(pid, f"{proc}/{pid}/root", proc) from None
        except OSError as exc:
            out.problems.append(f"{inner_dir}: cannot reach through {proc}/{pid}/root: {exc.strerror}")
            continue
        name = _published(root_dir, m)
        if name is None:
            # removed (cleaned, or the directory was emptied) while the process still has it mapped
            out.problems.append(f"{m.path}: mapped, but no published file in {inner_dir} is it any more")
            continue
        out.paths.append(os.path.join(root_dir, name))
        out.inner.append(os.path.join(inner_dir, name))
    if not out.paths:
        why = "; ".join(out.problems) if out.problems else "it maps no statmap file"
        raise AttachError(
            f"pid {pid}: nothing to read: {why} (does it publish with statmap? "
            "a forked worker creates its file at its first update)"
        )
    return out
