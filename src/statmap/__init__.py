"""statmap: publish a program's live metrics into a memory-mapped file.

Writing: declare a model class (``statmap.Stats``) or use a ``Publisher``'s
procedural API; update at near zero cost. Reading: ``statmap.open(path)``
gives a validating reader; ``statmap show`` prints what is published.
"""

from __future__ import annotations

import threading
from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers see; at run time each name is imported on first use (__getattr__)
    from ._layout import MAJOR as FORMAT_MAJOR
    from ._layout import MINOR as FORMAT_MINOR
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
    from .knob_state import knobs_json, read_knobs
    from .knobs import Knob, LiveKnob
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
    from .publisher import Publisher, close_all, create_files
    from .publisher import program_name as program_name
    from .reader import Reader, Series, Snapshot, open  # noqa: A004 - statmap.open is the reader API

    #: Which value cells are in use: "c" (the compiled extension) or "python".
    backend: str

# Public name -> (module, name there). Imported lazily: `statmap export` or `statmap show` must not
# pay for the writing side (publisher, metrics, model) at start-up, and a program that only
# publishes must not pay for the reading side.
_LAZY: dict[str, tuple[str, str]] = {
    "FORMAT_MAJOR": ("._layout", "MAJOR"),
    "FORMAT_MINOR": ("._layout", "MINOR"),
    "backend": (".cells", "BACKEND"),
    "default_directory": (".directory", "default_directory"),
    **{
        n: (".errors", n)
        for n in (
            "CollectionError",
            "DirectoryError",
            "FormatError",
            "LabelLimitError",
            "PublishError",
            "ResourceError",
            "StatmapError",
        )
    },
    **{
        n: (".metrics", n)
        for n in (
            "DEFAULT_BUCKETS",
            "Average",
            "Counter",
            "Enum",
            "Exponential",
            "Family",
            "Gauge",
            "Histogram",
            "Info",
            "Labelled",
            "LogBuckets",
            "Metric",
            "Summary",
            "Text",
            "Timer",
        )
    },
    "Stats": (".model", "Stats"),
    "Knob": (".knobs", "Knob"),
    "LiveKnob": (".knobs", "LiveKnob"),
    "knobs_json": (".knob_state", "knobs_json"),
    "read_knobs": (".knob_state", "read_knobs"),
    **{n: (".publisher", n) for n in ("Publisher", "close_all", "create_files", "program_name")},
    **{n: (".reader", n) for n in ("Reader", "Series", "Snapshot", "open")},
}


def __getattr__(name: str) -> Any:
    """A public name on first use (then kept as a module global), or a submodule (``statmap.reader``)."""
    where = _LAZY.get(name)
    if where is None:
        if name.startswith("__"):
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        try:
            return import_module(f".{name}", __name__)  # sets the attribute itself
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(import_module(where[0], __name__), where[1])
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


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
    "Knob",
    "LabelLimitError",
    "Labelled",
    "LiveKnob",
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
    "gc_metrics",
    "histogram",
    "info",
    "knobs_json",
    "open",
    "push",
    "read_knobs",
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
            from .publisher import Publisher, program_name

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


def push(gateway: str, job: str, **options: Any) -> Any:
    """Push a directory's aggregate (default: the default directory) to a Prometheus Pushgateway.

    The end of a batch job: ``statmap.push("http://gateway:9091", job="nightly")``.
    Options and errors: ``statmap.pushgateway.push`` (imported only when called).
    """
    from .pushgateway import push as push_to_gateway

    return push_to_gateway(gateway, job, **options)


def gc_metrics(publisher: Publisher | None = None) -> Any:
    """Count garbage collections into ``publisher`` (default: the default publisher); see ``statmap.gcstats``."""
    from .gcstats import gc_metrics as count_collections

    return count_collections(publisher if publisher is not None else default_publisher())
