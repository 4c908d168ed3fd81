"""The pure-Python twin of ``_family.c``: a labelled metric's child lookup (``labels(...)``).

Exported by ``_pycells`` as ``Family``, like the C module exports its own.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any


class Family:
    """A labelled metric's child lookup (see ``Family`` in _family.c)."""

    __slots__ = ("_by_name", "_children", "_create", "label_names", "name")

    def __init__(self, name: str, label_names: tuple[str, ...], children: dict[Any, Any], create: Any) -> None:
        self.name = name
        self.label_names = label_names
        self._children = children
        self._create = create
        # by_name -> the values in label order, as a tuple (itemgetter of one name gives the value itself)
        self._by_name = itemgetter(*label_names) if len(label_names) > 1 else None

    def labels(self, *values: Any, **by_name: Any) -> Any:
        """The series for these label values, by position or by name."""
        key: tuple[Any, ...] | None = values
        if by_name:
            key = None
            if not values and len(by_name) == len(self.label_names):
                try:
                    key = self._by_name(by_name) if self._by_name else (by_name[self.label_names[0]],)
                except KeyError:
                    pass
        if key is not None:
            try:
                return self._children[key]
            except (KeyError, TypeError):
                pass
        return self._create(values, by_name)

    def _no_labels(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"{self.name} has labels {self.label_names!r}: call .labels(...) first")

    inc = dec = set = observe = time = get = state = info = track_inprogress = _no_labels

    def __repr__(self) -> str:
        return f"<statmap.Family {self.name!r} labels={self.label_names!r} series={len(self._children)}>"
