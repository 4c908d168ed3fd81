"""Liveness of a file's writer: does the process that writes it still run?

A writer holds an exclusive ``flock`` on its own file for its lifetime, so a
reader's shared lock on its own open of the file blocks exactly while the
writer lives, whatever pids are reused or collide across containers. Where
locks do not work, the header's identity decides: same boot, the pid exists
and started when the writer did.

Below ``reader.py``; the statuses are re-exported there.
"""

from __future__ import annotations

import fcntl

from . import _layout as L
from ._proc import boot_id, pid_exists, process_start_time

#: Liveness of a file's writer.
ALIVE, CLOSED, DEAD, NOT_READY = "alive", "closed", "dead", "not-ready"


def probe(fd: int, identity: L.Identity) -> str:
    """ALIVE or DEAD, for a ready file not closed, open at ``fd`` (closing ``fd`` drops the probe's lock)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return ALIVE  # the writer holds its exclusive lock
    except OSError:
        return by_pid(identity)
    fcntl.flock(fd, fcntl.LOCK_UN)
    return DEAD


def by_pid(identity: L.Identity) -> str:
    """Fallback where locks don't work: same boot, pid exists and started when the writer did."""
    if identity.boot_id != boot_id() or not pid_exists(identity.pid):
        return DEAD
    if identity.start_time and process_start_time(identity.pid) != identity.start_time:
        return DEAD
    return ALIVE
