"""The model-class API: a class whose attributes are metric declarations.

    class WebStats(statmap.Stats):
        requests = statmap.Counter("Requests served")

    stats = WebStats("web")
    stats.requests.inc()

Each instance owns a Publisher (one file). The declarations are taken off
the class when it is defined (they live on in ``_declarations``) and every
instance holds its live metrics as ordinary attributes: ``stats.requests`` is
then the plain attribute load the interpreter specialises best, and
``stats.requests += 1`` calls the cell's in-place add and stores the same
object back.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

from .metrics import Metric
from .publisher import Publisher

_S = TypeVar("_S", bound="Stats")

_RESERVED = frozenset({"publisher", "path", "close", "remove", "name"})


class Stats:
    """Base class of model classes. ``Stats(name, directory=None)`` creates the file."""

    _declarations: ClassVar[dict[str, Metric[Any]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        found: dict[str, Metric[Any]] = {}
        for klass in reversed(cls.__mro__[1:]):
            found.update(getattr(klass, "_declarations", {}))
        for attr, value in list(vars(cls).items()):
            if isinstance(value, Metric):
                if attr in _RESERVED:
                    raise TypeError(f"{cls.__name__}.{attr}: {attr!r} is reserved by statmap.Stats")
                found[attr] = value
                # A class attribute of the same name would keep CPython from
                # specialising the instance attribute load (about 2x slower).
                delattr(cls, attr)
        cls._declarations = found

    def __init__(self, name: str, directory: str | None = None, **publisher_options: Any) -> None:
        publisher = Publisher(name, directory, **publisher_options)
        self.publisher = publisher
        try:
            for attr, decl in self._declarations.items():
                # setattr, not __dict__[...]: materialising the instance dict
                # would slow every later attribute load.
                setattr(self, attr, decl.bind(publisher, decl.name or attr))
        except BaseException:
            publisher.remove()
            raise

    publisher: Publisher

    @property
    def path(self) -> str:
        """The file this instance publishes into."""
        return self.publisher.path

    @property
    def name(self) -> str:
        return self.publisher.name

    def close(self) -> None:
        """Mark the file closed and keep it for post-mortems."""
        self.publisher.close()

    def remove(self) -> None:
        """Close and delete the file."""
        self.publisher.remove()

    def __enter__(self: _S) -> _S:  # the subclass, so `with WebStats(...) as stats:` keeps its metrics' names
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.publisher.name!r} at {self.publisher.path!r}>"
