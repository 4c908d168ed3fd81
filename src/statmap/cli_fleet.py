"""The fleet options of the ``statmap`` command: process metrics, attach by pid, push.

``register(sub)`` adds ``--process-metrics`` to show, top, export and serve
and the ``push`` command; cli.py calls it once and reads the options
through ``collector_options(args)``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from .reader import ALIVE, Snapshot

_READERS = ("show", "top", "export", "serve")


def register(sub: Any) -> None:
    for name in _READERS:
        parser = sub.choices[name]
        parser.add_argument(
            "--process-metrics", action="store_true",
            help="add CPU, memory, descriptors and threads of each live writer, read from /proc "
            "(process_* with a pid label, and statmap_processes_* sums; docs/integrations.md)",
        )  # fmt: skip


def collector_options(args: argparse.Namespace) -> dict[str, Any]:
    """The Collector options the fleet flags ask for."""
    return {"process_metrics": bool(getattr(args, "process_metrics", False))}


def process_notes(snapshots: Sequence[Snapshot]) -> dict[str, str]:
    """``show --process-metrics``: path -> one line about its live writer (left out if /proc cannot say)."""
    from .kinds import number
    from .procstats import read_process

    notes = {}
    for snap in snapshots:
        ident = snap.identity
        if snap.status != ALIVE or ident is None:
            continue
        st = read_process(ident.pid, ident.start_time)
        if st is None:
            continue
        fds = "?" if st.open_fds is None else str(st.open_fds)
        notes[snap.path] = (
            f"process: cpu {number(st.cpu_seconds)}s  rss {_size(st.resident_bytes)}  "
            f"vm {_size(st.virtual_bytes)}  fds {fds}  threads {st.threads}"
        )
    return notes


def process_json(snapshots: Sequence[Snapshot]) -> dict[str, dict[str, Any]]:
    """``show --json --process-metrics``: path -> the /proc stats of its live writer."""
    from .procstats import read_process

    out = {}
    for snap in snapshots:
        ident = snap.identity
        if snap.status == ALIVE and ident is not None:
            st = read_process(ident.pid, ident.start_time)
            if st is not None:
                out[snap.path] = st.to_json()
    return out


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)  # pragma: no cover
