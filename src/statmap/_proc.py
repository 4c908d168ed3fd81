"""What the operating system says about processes: start time and boot id.

Readers use these to tell a live writer from a dead one whose pid was reused.
Everything degrades to "unknown" (0 or zero bytes) where /proc is missing.
"""

from __future__ import annotations

import os

UNKNOWN_BOOT_ID = bytes(16)


def process_start_time(pid: int) -> int:
    """Clock ticks after boot at which ``pid`` started (/proc/PID/stat field 22); 0 if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return 0
    # The command name (field 2) is in parentheses and may contain spaces
    # or parentheses itself: split after the last ')'.
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return 0


_boot_id: bytes | None = None


def boot_id() -> bytes:
    """This boot's id (16 bytes) from the kernel; zero bytes if unknown."""
    global _boot_id
    if _boot_id is None:
        try:
            with open("/proc/sys/kernel/random/boot_id") as f:
                hexits = f.read().strip().replace("-", "")  # 8-4-4-4-12 hex digits
            if len(hexits) != 32:
                raise ValueError(hexits)
            _boot_id = bytes.fromhex(hexits)  # as uuid.UUID(...).bytes, without importing uuid (start-up time)
        except (OSError, ValueError):
            _boot_id = UNKNOWN_BOOT_ID
    return _boot_id


def pid_exists(pid: int) -> bool:
    """Whether a process with this pid exists in our pid namespace."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
