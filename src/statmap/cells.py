"""Picks the value-cell implementation: the C extension, or its pure-Python twin.

``STATMAP_PURE=1`` forces the pure-Python cells; without a compiled
extension they are used anyway. ``BACKEND`` says which one is in use ("c" or
"python"); ``statmap.backend`` repeats it.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import TYPE_CHECKING

from . import _pycells

impl: ModuleType
BACKEND: str
if os.environ.get("STATMAP_PURE", "") not in ("", "0"):
    impl, BACKEND = _pycells, "python"
else:
    try:
        from . import _cells as _c  # type: ignore[attr-defined]

        impl, BACKEND = _c, "c"
    except ImportError:
        impl, BACKEND = _pycells, "python"

if TYPE_CHECKING:  # both implementations share _pycells' interface
    from ._pycells import (
        Counter as Counter,
    )
    from ._pycells import (
        Enum as Enum,
    )
    from ._pycells import (
        Family as Family,
    )
    from ._pycells import (
        FloatCounter as FloatCounter,
    )
    from ._pycells import (
        Gauge as Gauge,
    )
    from ._pycells import (
        Histogram as Histogram,
    )
    from ._pycells import (
        Summary as Summary,
    )
    from ._pycells import (
        Text as Text,
    )
    from ._pycells import (
        load_u64 as load_u64,
    )
    from ._pycells import (
        load_words as load_words,
    )
    from ._pycells import (
        move_cells as move_cells,
    )
    from ._pycells import (
        read_latch as read_latch,
    )
    from ._pycells import (
        store_u64 as store_u64,
    )
    from ._pycells import (
        sum_latches as sum_latches,
    )
    from ._pycells import (
        sum_words as sum_words,
    )
else:
    Counter = impl.Counter
    FloatCounter = impl.FloatCounter
    Gauge = impl.Gauge
    Enum = impl.Enum
    Family = impl.Family
    Summary = impl.Summary
    Histogram = impl.Histogram
    Text = impl.Text
    read_latch = impl.read_latch
    move_cells = impl.move_cells
    load_u64 = impl.load_u64
    store_u64 = impl.store_u64
    load_words = impl.load_words
    sum_words = impl.sum_words
    sum_latches = impl.sum_latches
