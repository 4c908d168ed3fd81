"""One series of the aggregate, process by process: which worker is hot?

The collector sums counters, histograms and summaries (and gauges in their
sum, max, min modes) across the processes of a publisher name and keeps no
per-file values. ``ProcessValues`` reads a few named series from each
process file of a collection with a reader per file (kept between calls, so
a repeat costs a header check and one value read per series and file).
``statmap top``'s per-process view and the server's history use it.

Files already folded into the archive are left out (their counts are in
the archive's line of the total, not a process's); the archive itself is
not a process.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .errors import FormatError, ResourceError
from .reader import ALIVE, CLOSED, DEAD, Reader
from .results import ARCHIVE, Collection, FileInfo

SeriesKey = tuple[str, str, tuple[tuple[str, str], ...]]  # (publisher, metric name, labels)
PerProcess = list[tuple[str, FileInfo, Any]]  # (process key, its file, the series' value there)


def process_key(f: FileInfo, shared_pid: bool) -> str:
    """A process' name in a breakdown: its pid, with the instance when two files share one (as ``pid`` labels)."""
    assert f.identity is not None
    return f"{f.pid}:{f.identity.instance_id[:4].hex()}" if shared_pid else str(f.pid)


class ProcessValues:
    """Reads named series from each process file of a collection; ``close()`` releases the readers."""

    def __init__(self) -> None:
        self._readers: dict[str, Reader] = {}

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()

    def read(
        self, collection: Collection, keys: Iterable[SeriesKey]
    ) -> dict[SeriesKey, list[tuple[str, FileInfo, Any]]]:
        """For each key, (process key, file, value) of every process file that has the series, by pid."""
        wanted: dict[str, list[SeriesKey]] = {}
        for key in keys:
            wanted.setdefault(key[0], []).append(key)
        out: dict[SeriesKey, PerProcess] = {k: [] for ks in wanted.values() for k in ks}
        files = [f for f in collection.files if f.identity is not None and f.status != ARCHIVE and not f.absorbed]
        count: dict[tuple[str, int], int] = {}
        for f in files:
            count[(f.name, f.pid)] = count.get((f.name, f.pid), 0) + 1
        used: set[str] = set()
        for f in sorted(files, key=lambda f: f.pid):
            if f.name not in wanted or f.status not in (ALIVE, CLOSED, DEAD):
                continue
            used.add(f.path)
            try:
                known = self._readers.get(f.path)
                reader = known if known is not None else Reader(f.path)
                self._readers[f.path] = reader
                reader.poll()
                index = {(r.spec.name, r.spec.labels): r for r in reader.records if r.known}
                pkey = process_key(f, count[(f.name, f.pid)] > 1)
                for key in wanted[f.name]:
                    record = index.get((key[1], key[2]))
                    if record is not None:
                        out[key].append((pkey, f, reader.value(record)))
            except (FormatError, ResourceError, OSError, ValueError):
                continue  # that file is left out this time (the collection reports what is wrong with it)
        for path in [p for p in self._readers if p not in used]:
            self._readers.pop(path).close()
        return out


__all__ = ["PerProcess", "ProcessValues", "SeriesKey", "process_key"]
