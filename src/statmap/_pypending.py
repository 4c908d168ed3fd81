"""A pure-Python cell's view of private memory in a forked child whose file does not exist yet.

Used by ``_pycells`` (``_Cell._rebind``); the C cells do the same in _cells.c.
"""

from __future__ import annotations

from typing import Any


class PendingView:
    """A cell's view of private memory in a forked child whose file does not exist yet.

    Reads go to the private memory; the first store calls ``create`` (which
    creates the file and re-points every cell, retargeting this view) and
    then goes to wherever the cell now points. Cells with a file never see
    one of these, so their write path costs nothing more.
    """

    __slots__ = ("_create", "_view")

    def __init__(self, view: Any, create: Any) -> None:
        self._view = view
        self._create = create

    def __getitem__(self, i: Any) -> Any:
        return self._view[i]

    def __setitem__(self, i: Any, value: Any) -> None:
        create = self._create
        if create is not None:
            create()  # retargets us unless creation is already under way in this thread
        self._view[i] = value

    def _retarget(self, view: Any) -> None:
        self._view = view._view if isinstance(view, PendingView) else view
        self._create = view._create if isinstance(view, PendingView) else None

    def release(self) -> None:
        pass
