"""statmap: publish a program's live metrics into a memory-mapped file.

Writing: declare a model class (``statmap.Stats``) or use a ``Publisher``'s
procedural API; update at near zero cost. Reading: ``statmap.open(path)``
gives a validating reader; ``statmap show`` prints what is published.
"""

from __future__ import annotations

import threading
from typing import Any

from ._layout import MAJOR as FORMAT_MAJOR
from ._layout import MINOR as FORMAT_MINOR
from .cells import BACKEND as _BACKEND  # not `import cells as _cells`: that hides the C module
from .directory import default_directory
from .errors import (
    CollectionError,
    DirectoryError,
    FormatError,
    LabelLimitError,
    PublishError,
    ResourceError,
    StatmapError,
)
from .metrics import (
    DEFAULT_BUCKETS,
    Average,
    Counter,
    Enum,
    Exponential,
    Family,
    Gauge,
    Histogram,
    Info,
    Labelled,
    LogBuckets,
    Metric,
    Summary,
    Text,
    Timer,
)
from .model import Stats
from .publisher import Publisher, close_all, create_files, program_name
from .reader import Reader, Series, Snapshot, open  # noqa: A004 - statmap.open is the reader API

#: Which value cells are in use: "c" (the compiled extension) or "python".
backend: str = _BACKEND

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_BUCKETS",
    "FORMAT_MAJOR",
    "FORMAT_MINOR",
    "Average",
    "CollectionError",
    "Counter",
    "DirectoryError",
    "Enum",
    "Exponential",
    "Family",
    "FormatError",
    "Gauge",
    "Histogram",
    "Info",
    "LabelLimitError",
    "Labelled",
    "LogBuckets",
    "Metric",
    "PublishError",
    "Publisher",
    "Reader",
    "ResourceError",
    "Series",
    "Snapshot",
    "StatmapError",
    "Stats",
    "Summary",
    "Text",
    "Timer",
    "backend",
    "close_all",
    "counter",
    "create_files",
    "default_directory",
    "default_publisher",
    "enum",
    "gauge",
    "histogram",
    "info",
    "open",
    "summary",
    "text",
    "timer",
]

_default: Publisher | None = None
_default_lock = threading.Lock()


def default_publisher() -> Publisher:
    """The process-wide publisher used by ``statmap.counter(...)`` and friends.

    Named after the program (``sys.argv[0]``), in the default directory;
    created on first use.
    """
    global _default
    with _default_lock:
        if _default is None or _default.closed:
            name = "".join(c if c.isalnum() or c in "_.-" else "_" for c in program_name())
            _default = Publisher(name.lstrip(".-")[:64] or "python")
        return _default


def counter(name: str, help: str = "", **options: Any) -> Any:
    """A counter in the default publisher (see ``Publisher.counter``)."""
    return default_publisher().counter(name, help, **options)


def gauge(name: str, help: str = "", **options: Any) -> Any:
    return default_publisher().gauge(name, help, **options)


def histogram(name: str, help: str = "", **options: Any) -> Any:
    return default_publisher().histogram(name, help, **options)


def summary(name: str, help: str = "", **options: Any) -> Any:
    return default_publisher().summary(name, help, **options)


def text(name: str, help: str = "", **options: Any) -> Any:
    return default_publisher().text(name, help, **options)


def info(name: str, help: str = "", **options: Any) -> Any:
    return default_publisher().info(name, help, **options)


def enum(name: str, help: str = "", **options: Any) -> Any:
    return default_publisher().enum(name, help, **options)


def timer(name: str, help: str = "", **options: Any) -> Any:
    return default_publisher().timer(name, help, **options)
