"""Exemplars (format 1.2, docs/format.md section 15): the latest trace id per counter and per histogram bucket.

``counter.inc(1, exemplar={"trace_id": "..."})`` and ``histogram.observe(v, exemplar=...)`` update the value
as usual (the cells), then call ``record`` here: it writes the exemplar, the update's value, and the time
into an exemplar record of the series' file (one per counter, one per histogram bucket, created at the
first exemplar), a text latch written through the cells, so readers never see it torn. Readers keep the
most recent exemplar across processes (exemplar_read.py).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Mapping
from typing import Any, Protocol

from . import _layout as L
from . import cells

_LABEL_NAME_FIRST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_LABEL_NAME_REST = _LABEL_NAME_FIRST | frozenset("0123456789")


class _Owner(Protocol):
    def add_series(self, spec: L.RecordSpec, make_cell: Any) -> Any: ...


# id(cell) -> (owner, its series' spec, bucket slot -> the Text cell of its exemplar record). The owner keeps
# its cells (FileOwner._cells) until it closes and forgets them here, so an id is not reused meanwhile.
_series: dict[int, tuple[_Owner, L.RecordSpec, dict[int, Any]]] = {}
_clock = time.time_ns  # the exemplar's timestamp (the golden vector fixes it)


def register(cell: Any, owner: _Owner, spec: L.RecordSpec) -> None:
    """Remember which series a counter or classic-histogram cell updates (FileOwner.add_series)."""
    if spec.mtype in (L.MetricType.COUNTER, L.MetricType.HISTOGRAM):
        _series[id(cell)] = (owner, spec, {})


def forget(cells: list[Any]) -> None:
    """A publisher closes: its cells' exemplars are dropped from now on, as its updates stay private."""
    for cell in cells:
        _series.pop(id(cell), None)


def check_labels(exemplar: Mapping[str, Any]) -> str:
    """The exemplar's labels as netstrings (name, value, ...) after OpenMetrics' rules (names like label names,
    at most EXEMPLAR_MAX_CHARS characters of names and values together), else ValueError or TypeError."""
    if type(exemplar) is not dict and not isinstance(exemplar, Mapping):
        raise TypeError(f"exemplar must be a mapping of label names to values, not {type(exemplar).__name__}")
    parts: list[str] = []
    chars = 0
    for name, value in exemplar.items():
        if name not in _good_names:
            _check_name(name)
        text = value if type(value) is str else str(value)
        chars += len(name) + len(text)
        parts.append(f"{len(name)}:{name},{len(text) if text.isascii() else len(text.encode())}:{text},")
    if chars > L.EXEMPLAR_MAX_CHARS:
        raise ValueError(f"exemplar labels have {chars} characters; OpenMetrics allows {L.EXEMPLAR_MAX_CHARS}")
    return "".join(parts)


_good_names: set[str] = set()  # label names seen valid (few: trace_id, span_id): checked once each


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or name[:1] not in _LABEL_NAME_FIRST or not set(name) <= _LABEL_NAME_REST:
        raise ValueError(f"exemplar label name {name!r} must match [a-zA-Z_][a-zA-Z0-9_]*")
    if len(_good_names) < 1000:
        _good_names.add(name)


def encode(value: float, when_ns: int, labels: str) -> str:
    """The text of an exemplar record's latch: netstrings of the value (repr), the Unix ns, then ``labels``
    (``check_labels``'s netstrings of names and values): _knob_layout's netstrings, written inline for speed."""
    number, when = repr(float(value)), str(when_ns)
    return f"{len(number)}:{number},{len(when)}:{when},{labels}"


def record_spec(spec: L.RecordSpec, bucket: int) -> L.RecordSpec:
    """The exemplar record of ``spec``'s series (and of its bucket ``bucket``, for a histogram)."""
    params: tuple[float, ...] = ()
    if spec.mtype == L.MetricType.HISTOGRAM:
        params = (spec.bounds[bucket] if bucket < len(spec.bounds) else float("inf"),)
    return L.RecordSpec(L.EXEMPLAR, spec.name, labels=spec.labels, bounds=params, capacity=L.EXEMPLAR_CAPACITY)


def record(cell: Any, value: Any, exemplar: Mapping[str, Any]) -> None:
    """The cells' hook: store ``exemplar`` for the update of ``cell`` by ``value`` just made."""
    labels = check_labels(exemplar)
    entry = _series.get(id(cell))
    if entry is None:  # its publisher closed (FileOwner.close): nothing reaches the file any more
        return
    owner, spec, slots = entry
    bucket = bisect.bisect_left(spec.bounds, value) if spec.bounds else 0  # a counter has no bounds
    text = slots.get(bucket)
    if text is None:
        text = owner.add_series(record_spec(spec, bucket), _text_cell)
        slots[bucket] = text
    data = encode(value, _clock(), labels)
    size = len(data) if data.isascii() else len(data.encode())
    if size > L.EXEMPLAR_CAPACITY:  # cannot happen within EXEMPLAR_MAX_CHARS; never store a cut one
        raise ValueError(f"exemplar text of {size} bytes exceeds {L.EXEMPLAR_CAPACITY}")
    text.set(data)


def _text_cell(binding: Any) -> Any:
    return cells.Text(binding.buffer, binding.offset, L.EXEMPLAR_CAPACITY)


cells.set_exemplar_hook(record)
