"""Cleaning a directory again and again, beside a long-running reader (``statmap serve --clean``).

Servers without hooks that fold dead workers (gunicorn's ``child_exit``)
would otherwise pile up one file per replaced process. A daemon thread
runs ``archive.clean`` at start and then every ``interval`` seconds. A
failure is logged, once per distinct problem, and never stops the thread
or the server: the archive keeps the directory small, it is not what the
exporter's answers depend on (ended files are read until folded).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable

from .archive import CleanReport, clean
from .render import printable


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class PeriodicCleaner:
    """Runs ``archive.clean(directory)`` in a daemon thread every ``interval`` seconds."""

    def __init__(
        self,
        directory: str,
        interval: float,
        *,
        older_than: float = 0.0,
        publishers: Iterable[str] | None = None,
        log: Callable[[str], None] = _stderr,
        name: str = "statmap serve",
    ) -> None:
        if not interval > 0:
            raise ValueError(f"cleaning interval must be positive, not {interval!r}")
        self.directory = directory
        self.interval = interval
        self.older_than = older_than
        self.publishers = frozenset(publishers) if publishers is not None else None
        self.log = log
        self.name = name
        self.runs = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reported: set[str] = set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="statmap-clean", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the loop to end and wait for a cleaning in progress (it holds archive locks)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            self._stop.wait(self.interval)

    def run_once(self) -> CleanReport | None:
        """One cleaning; its problems are logged, never raised."""
        try:
            report = clean(self.directory, older_than=self.older_than, publishers=self.publishers)
        except Exception as exc:  # noqa: BLE001 - whatever goes wrong, the server keeps serving
            self._report([f"clean failed: {type(exc).__name__}: {exc}"])
            return None
        finally:
            self.runs += 1
        self._report([f"clean: {path}: {problem}" for path, problem in report.errors])
        return report

    def _report(self, problems: list[str]) -> None:
        # Log a problem when it appears, not again every interval while it lasts.
        current = set(problems)
        for problem in problems:
            if problem not in self._reported:
                self.log(printable(f"{self.name}: {problem}"))
        self._reported = current
