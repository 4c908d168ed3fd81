"""The pure-Python cells' exemplar hook (the C cells keep theirs in _cells.c): set by statmap.exemplars."""

from __future__ import annotations

from typing import Any

_hook: Any = None


def set_exemplar_hook(hook: Any) -> None:
    """``hook(cell, value, exemplar)`` runs after an update given ``exemplar=`` (docs/format.md section 15)."""
    global _hook
    _hook = hook


def after(cell: Any, value: Any, exemplar: Any, update: Any = None) -> None:
    """The update of ``cell`` by ``value`` is done (or ``update(value)`` does it): hand its exemplar to the hook."""
    if update is not None:
        update(value)
    if exemplar is not None:
        if _hook is None:
            raise RuntimeError("exemplars need statmap.exemplars (no hook registered)")
        _hook(cell, value, exemplar)
