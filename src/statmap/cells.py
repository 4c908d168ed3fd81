"""Picks the value-cell implementation: the C extension, or its pure-Python twin.

``STATMAP_PURE=1`` forces the pure-Python cells; without a compiled
extension they are used anyway. Both have the interface in ``_cells.pyi``.
``impl`` is the module in use and ``BACKEND`` says which ("c" or "python");
``statmap.backend`` repeats it.
"""

from __future__ import annotations

import os

try:
    if os.environ.get("STATMAP_PURE", "") not in ("", "0"):
        raise ImportError("STATMAP_PURE asks for the pure-Python cells")
    from . import _cells as impl
    from ._cells import *  # noqa: F403
except ImportError:
    from . import _pycells as impl  # type: ignore[no-redef]
    from ._pycells import *  # type: ignore[assignment] # noqa: F403

BACKEND = "c" if impl.__name__ == "statmap._cells" else "python"
