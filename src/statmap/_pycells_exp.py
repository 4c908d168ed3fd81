"""The pure-Python exponential histogram cell (format 1.2): the twin of ``ExpHistogram`` in _cells.c.

``_pycells.ExpHistogram`` is this logic on ``_pycells._Latched`` (its views,
write queue and latch); kept apart so that each module stays one idea.
Both implementations place an observation in the same bucket (the same exact
threshold tables up to scale 8, libm ``log`` above, IEEE operations in the
same order) and choose scales the same way, so their files are byte for byte
equal (tests/test_exphist.py).

An observation ``v``: ``|v| <= zero_threshold`` counts in the zero bucket;
otherwise bucket index ``i`` of ``|v|`` at the current scale (section 14 of
docs/format.md) in the positive or negative slots (slot ``i mod M``). When
the new index does not fit the M slots of its sign's range, the scale goes
down until it does, and the whole copy is rewritten under the latch (readers
see the histogram before or after, never a mixture).
"""

from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING, Any

from . import _layout as L
from ._exp_bounds import J0 as _J0
from ._exp_bounds import SCALE as _TABLE_SCALE
from ._exp_bounds import T as _T
from ._timing import Timing

_U64 = (1 << 64) - 1

LOG2E = 1.4426950408889634  # log2(e) correctly rounded (C's M_LOG2E)
_DBL_MAX = sys.float_info.max
_CELLS = 2 << _TABLE_SCALE  # J0's cells per octave


def exp_index(a: float, scale: int) -> int:
    """The bucket index of ``a`` (positive, finite) at ``scale``: base**i < a <= base**(i+1).

    Exact up to scale 8 (the scale-8 index from the exponent and the mantissa's
    place among the exact thresholds of _exp_bounds, then shifted: every
    bucket at a coarser scale is a run of scale-8 buckets); above 8 by libm's log.
    """
    m, e = math.frexp(a)
    if scale <= 0:
        return (e - 2 if m == 0.5 else e - 1) >> -scale
    if m == 0.5:  # an exact power of two: the upper bound of its bucket
        return ((e - 1) << scale) - 1
    if scale <= _TABLE_SCALE:
        f = m + m  # the mantissa in (1, 2)
        j = _J0[int((f - 1.0) * _CELLS)]
        if f >= _T[j + 1]:
            j += 1
        return (((e - 1) << _TABLE_SCALE) + j) >> (_TABLE_SCALE - scale)
    return math.floor(math.log(a) * math.ldexp(LOG2E, scale))


def _signed(word: int) -> int:
    return word - (1 << 64) if word >> 63 else word


class ExpHistogramLogic:
    """Mixed into ``_pycells._Latched``, which has the views and the latch; its subclass has the slots."""

    __slots__ = ()
    if TYPE_CHECKING:
        _m: int
        _zt: float
        _max_scale: int
        _q: Any
        _d: Any
        _i: int
        _words: int

        def _setup(self, buffer: Any, offset: int, copy_size: int, tail: int = 0) -> None: ...
        def _submit(self, item: Any) -> None: ...
        def _consistent(self, read: Any) -> Any: ...
        def _write(self, words: dict[int, int]) -> None: ...

    def __init__(
        self, buffer: Any, offset: int, max_buckets: int, zero_threshold: float = 0.0, max_scale: int = 8
    ) -> None:
        if not 1 <= max_buckets <= L.EXP_MAX_BUCKETS:
            raise ValueError(f"max_buckets must be 1..{L.EXP_MAX_BUCKETS}")
        zt = float(zero_threshold)
        if not 0 <= zt < math.inf:
            raise ValueError("zero_threshold must be finite and not negative")
        if not L.EXP_MIN_SCALE <= max_scale <= L.EXP_MAX_SCALE:
            raise ValueError(f"max_scale must be {L.EXP_MIN_SCALE}..{L.EXP_MAX_SCALE}")
        self._m, self._zt, self._max_scale = max_buckets, zt, max_scale  # type: ignore[misc]  # the subclass's slots
        self._setup(buffer, offset, L.exp_copy_size(max_buckets))

    @property
    def max_buckets(self) -> int:
        return self._m

    @property
    def zero_threshold(self) -> float:
        return self._zt

    def time(self) -> Timing:
        return Timing(self.observe)

    def observe(self, value: float) -> None:
        if isinstance(value, (str, bytes, bytearray)):
            raise TypeError(f"must be real number, not {type(value).__name__}")
        d = value if value.__class__ is float else float(value)
        if d != d:
            raise ValueError("cannot observe NaN")
        self._submit(d)

    def get(
        self,
    ) -> tuple[int, float, float, float, int, int, tuple[int, tuple[int, ...]], tuple[int, tuple[int, ...]]]:
        """(count, sum, min, max, scale, zero count, (positive offset, counts), (negative offset, counts))."""
        q, f, m = self._q, self._d, self._m

        def read(c: int) -> Any:
            def side(lo_w: int, len_w: int, base: int) -> tuple[int, tuple[int, ...]]:
                lo, n = _signed(q[c + lo_w]), min(int(q[c + len_w]), m)
                return lo, tuple(int(q[c + base + (lo + j) % m]) for j in range(n))

            head = L.EXP_HEAD_WORDS
            return (
                int(q[c]),
                float(f[c + 1]),
                float(f[c + 2]),
                float(f[c + 3]),
                _signed(q[c + L.EXP_SCALE]),
                int(q[c + L.EXP_ZERO]),
                side(L.EXP_POS_LO, L.EXP_POS_LEN, head),
                side(L.EXP_NEG_LO, L.EXP_NEG_LEN, head + m),
            )

        return self._consistent(read)  # type: ignore[no-any-return]

    def _apply(self, d: float) -> None:
        self._observe(d)

    def _observe(self, d: float) -> None:
        q, f, seq, m = self._q, self._d, self._i, self._m
        c0 = seq + L.VALUE_COPIES // 8
        c1 = c0 + self._words
        old = int(q[c1])
        count, total = (old + 1) & _U64, f[c1 + 1] + d
        lo_v = d if not old or d < f[c1 + 2] else f[c1 + 2]
        hi_v = d if not old or d > f[c1 + 3] else f[c1 + 3]
        a = -d if d < 0 else d
        if a <= self._zt:
            zero = (q[c1 + L.EXP_ZERO] + 1) & _U64
            s = q[seq] + 1
            q[seq] = s & _U64
            q[c0], f[c0 + 1], f[c0 + 2], f[c0 + 3], q[c0 + L.EXP_ZERO] = count, total, lo_v, hi_v, zero  # type: ignore[call-overload]
            q[seq] = (s + 1) & _U64
            q[c1], f[c1 + 1], f[c1 + 2], f[c1 + 3], q[c1 + L.EXP_ZERO] = count, total, lo_v, hi_v, zero  # type: ignore[call-overload]
            return
        pos = d > 0
        scale = _signed(q[c1 + L.EXP_SCALE])
        plen, nlen = min(int(q[c1 + L.EXP_POS_LEN]), m), min(int(q[c1 + L.EXP_NEG_LEN]), m)
        if not plen and not nlen:
            scale = self._max_scale
        idx = exp_index(a if a <= _DBL_MAX else _DBL_MAX, scale)
        lo_w, len_w = (L.EXP_POS_LO, L.EXP_POS_LEN) if pos else (L.EXP_NEG_LO, L.EXP_NEG_LEN)
        lo, n = _signed(q[c1 + lo_w]), plen if pos else nlen
        new_lo, new_hi = (min(lo, idx), max(lo + n - 1, idx)) if n else (idx, idx)
        if new_hi - new_lo >= m:
            self._rescale(d, count, total, lo_v, hi_v, scale, idx, new_lo, new_hi)
            return
        slot = L.EXP_HEAD_WORDS + (0 if pos else m) + idx % m
        bucket = (q[c1 + slot] + 1) & _U64
        words = (
            (L.EXP_SCALE, scale & _U64),
            (lo_w, new_lo & _U64),
            (len_w, new_hi - new_lo + 1),
            (slot, bucket),
        )
        s = q[seq] + 1
        q[seq] = s & _U64
        q[c0], f[c0 + 1], f[c0 + 2], f[c0 + 3] = count, total, lo_v, hi_v  # type: ignore[call-overload]
        for w, v in words:
            q[c0 + w] = v
        q[seq] = (s + 1) & _U64
        q[c1], f[c1 + 1], f[c1 + 2], f[c1 + 3] = count, total, lo_v, hi_v  # type: ignore[call-overload]
        for w, v in words:
            q[c1 + w] = v

    def _rescale(
        self, d: float, count: int, total: float, lo_v: float, hi_v: float, scale: int, idx: int, nl: int, nh: int
    ) -> None:
        """Downscale until the new index fits, rewriting the whole copy (the rare path)."""
        q, m = self._q, self._m
        c1 = self._i + L.VALUE_COPIES // 8 + self._words
        k = 0
        while (nh >> k) - (nl >> k) >= m and scale - k > L.EXP_MIN_SCALE:
            k += 1
        pos = d > 0
        slots = [0] * (2 * m)
        ranges = []
        for sign, (lo_w, len_w) in enumerate(((L.EXP_POS_LO, L.EXP_POS_LEN), (L.EXP_NEG_LO, L.EXP_NEG_LEN))):
            lo, n = _signed(q[c1 + lo_w]), min(int(q[c1 + len_w]), m)
            for j in range(n):
                c = int(q[c1 + L.EXP_HEAD_WORDS + sign * m + (lo + j) % m])
                slots[sign * m + ((lo + j) >> k) % m] += c
            ranges.append([lo >> k, (lo + n - 1) >> k, n])
        side = ranges[0 if pos else 1]
        i2 = idx >> k
        if not side[2]:
            side[0] = side[1] = i2
        elif i2 < side[0]:
            i2 = side[0] = max(i2, side[1] - m + 1)  # past the coarsest scale: kept at the edge
        elif i2 > side[1]:
            i2 = side[1] = min(i2, side[0] + m - 1)
        side[2] = 1
        slots[(0 if pos else m) + i2 % m] += 1
        head = [
            count,
            L.f64_bits(total),
            L.f64_bits(lo_v),
            L.f64_bits(hi_v),
            int(q[c1 + L.EXP_ZERO]),
            (scale - k) & _U64,
        ]
        for lo, hi, n in ranges:
            head += [lo & _U64, hi - lo + 1] if n else [0, 0]
        self._write({w: v & _U64 for w, v in enumerate(head + slots)})
