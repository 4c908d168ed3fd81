"""``statmap.Publisher``: one process's file with the procedural API.

``pub.counter("requests", "Requests served")`` declares a metric and binds
it to this publisher's file in one call. The file itself (create, append,
grow, fork, close) is the file owner's job (owner.py); the metric types are
metrics.py's. Names other modules know from here are re-exported.
"""

from __future__ import annotations

from typing import Any

from .knobs import Knob
from .metrics import Counter, Enum, Gauge, Histogram, Info, Summary, Text, Timer
from .owner import (
    DEFAULT_CAPACITY,
    MAX_FILE_SIZE,
    NAME_RE,
    TEMP_SUFFIX,
    Binding,
    FileOwner,
    close_all,
    create_files,
    file_name,
    new_identity,
    program_name,
)

__all__ = [
    "DEFAULT_CAPACITY",
    "MAX_FILE_SIZE",
    "NAME_RE",
    "TEMP_SUFFIX",
    "Binding",
    "Publisher",
    "close_all",
    "create_files",
    "file_name",
    "new_identity",
    "program_name",
]


class Publisher(FileOwner):
    """Owns one statmap file for one process.

    Use it through a model class (``statmap.Stats``) or directly:
    ``pub.counter("requests", "Requests served")`` creates a series.
    """

    def counter(self, name: str, help: str = "", **options: Any) -> Any:
        return Counter(help, name=name, **options).bind(self)

    def gauge(self, name: str, help: str = "", **options: Any) -> Any:
        return Gauge(help, name=name, **options).bind(self)

    def histogram(self, name: str, help: str = "", **options: Any) -> Any:
        return Histogram(help, name=name, **options).bind(self)

    def summary(self, name: str, help: str = "", **options: Any) -> Any:
        return Summary(help, name=name, **options).bind(self)

    def text(self, name: str, help: str = "", **options: Any) -> Any:
        return Text(help, name=name, **options).bind(self)

    def info(self, name: str, help: str = "", **options: Any) -> Any:
        return Info(help, name=name, **options).bind(self)

    def enum(self, name: str, help: str = "", **options: Any) -> Any:
        return Enum(help, name=name, **options).bind(self)

    def timer(self, name: str, help: str = "", **options: Any) -> Any:
        return Timer(help, name=name, **options).bind(self)

    def knob(self, name: str, help: str = "", **options: Any) -> Any:
        """A knob an operator can change (``statmap set``): ``pub.knob("rate", default=100, min=1)``."""
        return Knob(help, name=name, **options).bind(self)
