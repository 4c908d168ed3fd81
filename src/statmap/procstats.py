"""Process metrics of the live writers of a directory, read from /proc by the reader.

The writer does nothing for these: a reader that wants them (``Collector(...,
process_metrics=True)``, ``statmap export/serve/show/top --process-metrics``)
reads ``/proc/PID/stat``, ``/proc/PID/fd`` and ``/proc/PID/limits`` of each
live process it collects, and adds families with prometheus_client's names:

* per process, with a ``pid`` label: ``process_cpu_seconds_total`` (counter),
  ``process_resident_memory_bytes``, ``process_virtual_memory_bytes``,
  ``process_open_fds``, ``process_max_fds``, ``process_start_time_seconds``,
  ``process_threads`` (gauges);
* across the live processes of one publisher name: ``statmap_processes``
  (how many were read), ``statmap_processes_cpu_seconds`` (a gauge: it drops
  when a worker exits; ``sum(rate(process_cpu_seconds_total[...]))`` is the
  query for CPU use), ``statmap_processes_resident_memory_bytes``,
  ``statmap_processes_virtual_memory_bytes``, ``statmap_processes_open_fds``,
  ``statmap_processes_threads``.

A process is read only if it is the file's writer: same boot, and the start
time in /proc equals the one in the file's header (a reused pid, or a pid of
another pid namespace, is left out, never misattributed). A process that
exits while it is read, or whose /proc entries we may not read, is left out
or read in part (``/proc/PID/fd`` of another user: no ``open_fds``); nothing
here raises for a vanished process. Files are opened, read and closed at
once: a reader holds no descriptor per process.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from ._proc import boot_id
from .liveness import ALIVE
from .results import FileInfo, MetricFamily, Sample

PROC = "/proc"

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True)
class ProcessStats:
    """What /proc says about one process (None: could not be read, e.g. another user's descriptors)."""

    pid: int
    start_ticks: int
    cpu_seconds: float
    resident_bytes: int
    virtual_bytes: int
    threads: int
    start_time_seconds: float
    open_fds: int | None
    max_fds: int | None

    def to_json(self) -> dict[str, float | int | None]:
        return {
            "pid": self.pid,
            "cpu_seconds": self.cpu_seconds,
            "resident_memory_bytes": self.resident_bytes,
            "virtual_memory_bytes": self.virtual_bytes,
            "threads": self.threads,
            "start_time_seconds": self.start_time_seconds,
            "open_fds": self.open_fds,
            "max_fds": self.max_fds,
        }


_btime: float | None = None


def boot_time(proc: str = PROC) -> float:
    """The Unix time of this boot (``btime`` in /proc/stat); 0.0 if unknown."""
    global _btime
    if _btime is None or proc != PROC:
        found = 0.0
        try:
            with open(f"{proc}/stat", "rb") as f:
                for line in f:
                    if line.startswith(b"btime "):
                        found = float(line.split()[1])
                        break
        except (OSError, ValueError, IndexError):
            pass
        if proc != PROC:
            return found
        _btime = found
    return _btime


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:  # gone (ENOENT, ESRCH), not ours (EACCES), ...
        return None


def read_process(pid: int, start_ticks: int = 0, proc: str = PROC) -> ProcessStats | None:
    """The stats of ``pid``, or None if it is gone, unreadable, or (``start_ticks`` given) not that process."""
    stat = _read(f"{proc}/{pid}/stat")
    if not stat:
        return None
    # field 2 (comm) is in parentheses and may hold spaces and ')': split after the last ')'
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        utime, stime = int(fields[11]), int(fields[12])
        threads, started = int(fields[17]), int(fields[19])
        vsize, rss_pages = int(fields[20]), int(fields[21])
    except (IndexError, ValueError):
        return None
    if start_ticks and started != start_ticks:
        return None  # the pid was reused, or belongs to another pid namespace
    try:
        open_fds: int | None = len(os.listdir(f"{proc}/{pid}/fd"))
    except OSError:
        open_fds = None
    max_fds = None
    limits = _read(f"{proc}/{pid}/limits")
    if limits:
        for line in limits.splitlines():
            if line.startswith(b"Max open files"):
                soft = line[len(b"Max open files") :].split()[:1]
                if soft and soft[0].isdigit():
                    max_fds = int(soft[0])
                break
    if start_ticks and not os.path.exists(f"{proc}/{pid}"):
        return None  # exited while we read it: what we read may be of a zombie; leave it out
    return ProcessStats(
        pid=pid,
        start_ticks=started,
        cpu_seconds=(utime + stime) / _TICKS,
        resident_bytes=rss_pages * _PAGE,
        virtual_bytes=vsize,
        threads=threads,
        start_time_seconds=boot_time(proc) + started / _TICKS,
        open_fds=open_fds,
        max_fds=max_fds,
    )


def read_writers(files: Iterable[FileInfo]) -> dict[str, list[ProcessStats]]:
    """Publisher name -> stats of its live writers (each pid once, sorted by pid)."""
    me = boot_id()
    out: dict[str, dict[int, ProcessStats]] = {}
    for info in files:
        ident = info.identity
        if info.status != ALIVE or ident is None or ident.pid <= 0 or info.absorbed:
            continue
        if ident.boot_id != me:
            continue  # another machine's (or another boot's) file on shared storage
        seen = out.setdefault(ident.publisher, {})
        if ident.pid in seen:
            continue
        stats = read_process(ident.pid, ident.start_time)
        if stats is not None:
            seen[ident.pid] = stats
    return {pub: [by_pid[p] for p in sorted(by_pid)] for pub, by_pid in out.items()}


# (name, type, unit, help, attribute of ProcessStats); the names are prometheus_client's
PER_PROCESS = (
    (
        "process_cpu_seconds_total", "counter", "seconds",
        "Total user and system CPU time spent in seconds.", "cpu_seconds",
    ),
    ("process_resident_memory_bytes", "gauge", "bytes", "Resident memory size in bytes.", "resident_bytes"),
    ("process_virtual_memory_bytes", "gauge", "bytes", "Virtual memory size in bytes.", "virtual_bytes"),
    ("process_open_fds", "gauge", "", "Number of open file descriptors.", "open_fds"),
    ("process_max_fds", "gauge", "", "Maximum number of open file descriptors.", "max_fds"),
    (
        "process_start_time_seconds", "gauge", "seconds",
        "Start time of the process since unix epoch in seconds.", "start_time_seconds",
    ),
    ("process_threads", "gauge", "", "Number of OS threads in the process.", "threads"),
)  # fmt: skip

SUMS = (
    ("statmap_processes_cpu_seconds", "seconds", "CPU time of the live processes (drops as one exits).", "cpu_seconds"),
    ("statmap_processes_resident_memory_bytes", "bytes", "Resident memory of the live processes.", "resident_bytes"),
    ("statmap_processes_virtual_memory_bytes", "bytes", "Virtual memory of the live processes.", "virtual_bytes"),
    ("statmap_processes_open_fds", "", "Open file descriptors of the live processes (those readable).", "open_fds"),
    ("statmap_processes_threads", "", "OS threads of the live processes.", "threads"),
)


def _family(publisher: str, name: str, mtype: str, unit: str, help: str, aggregation: str) -> MetricFamily:
    return MetricFamily(
        publisher=publisher,
        name=name,
        type=mtype,
        help=help,
        unit=unit,
        aggregation=aggregation,
        live_only=True,
        float_counter=True,
        bounds=(),
        key=("process", publisher, name),
    )


def process_families(files: Iterable[FileInfo], taken: Iterable[tuple[str, str]] = ()) -> list[MetricFamily]:
    """The process families of the live writers among ``files`` (see the module's docstring).

    ``taken``: (publisher, name) of families the programs publish themselves
    (e.g. bridged from prometheus_client): the program's own wins, ours is left out.
    """
    skip = set(taken)
    out: list[MetricFamily] = []
    for publisher, stats in sorted(read_writers(files).items()):
        for name, mtype, unit, text, attr in PER_PROCESS:
            if (publisher, name) in skip:
                continue
            fam = _family(publisher, name, mtype, unit, text, "per_process" if mtype == "gauge" else "sum")
            for st in stats:
                value = getattr(st, attr)
                if value is not None:
                    pid = str(st.pid)
                    fam.samples.append(Sample({"pid": pid}, value, st.pid, (name, pid)))
            out.append(fam)
        if (publisher, "statmap_processes") not in skip:
            fam = _family(publisher, "statmap_processes", "gauge", "", "Live processes whose /proc was read.", "sum")
            fam.samples.append(Sample({}, len(stats), None, ("statmap_processes",)))
            out.append(fam)
        for name, unit, text, attr in SUMS:
            if (publisher, name) in skip:
                continue
            fam = _family(publisher, name, "gauge", unit, text, "sum")
            values = [v for st in stats if (v := getattr(st, attr)) is not None]
            fam.samples.append(Sample({}, sum(values), None, (name,)))
            out.append(fam)
    return out
