"""Knob declarations, values and states as text: shared by the program and the operator.

A knob's declaration travels in its record's extra strings (key/value
pairs, ``decl_extras``/``decl_from_extras``); its applied state in its
value area (``KnobState``, netstrings); the operator's desired state in the
control file (``Control``). Every value crosses processes in one canonical
text form (``parse_value``), checked against the declaration by whoever
reads it: the program never applies, and a reader never shows as valid, a
value outside the declaration. docs/format.md section 13 is normative.

Imports only the format (``_layout``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from . import _knob_layout as KL
from . import _layout as L

TYPES = ("bool", "int", "float", "str")
ORIGINS = ("default", "environment", "operator")
INT_MIN, INT_MAX = -(1 << 63), (1 << 63) - 1  # ints fit an i64, so other languages can hold them
MAX_STR_SIZE = 4096  # bytes of a str knob's value
DEFAULT_STR_SIZE = 256
MAX_CHOICES = 256
MAX_REASON = 200  # characters of a refusal's reason kept in the state
HISTORY = 8  # changes kept in each knob's state

_INT_RE = re.compile(r"^[+-]?[0-9]{1,19}$")
_FLOAT_RE = re.compile(r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]{1,3})?$")
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
_NUM_RE = re.compile(r"^(0|[1-9][0-9]{0,19})$")  # sequence numbers, ids, times in the state and control


@dataclass(frozen=True)
class KnobDecl:
    """What a knob accepts. ``default`` is canonical text (``parse_value``)."""

    type: str
    default: str
    min: str | None = None  # int/float: canonical text of the bound
    max: str | None = None
    choices: tuple[str, ...] = ()  # str: the allowed values (empty: any text up to ``size`` bytes)
    size: int = DEFAULT_STR_SIZE  # str: the largest value in UTF-8 bytes

    @property
    def value_bytes(self) -> int:
        """The longest canonical value in UTF-8 bytes."""
        if self.type == "str":
            return max(len(c.encode()) for c in self.choices) if self.choices else self.size
        return {"bool": 5, "int": 20, "float": 24}[self.type]

    def allowed(self) -> str:
        """The allowed values, for people."""
        if self.type == "bool":
            return "true|false"
        if self.type == "str":
            return "|".join(self.choices) if self.choices else f"text of at most {self.size} bytes"
        lo, hi = self.min or "", self.max or ""
        return f"{self.type} {lo}..{hi}" if lo or hi else self.type

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "default": typed(self, self.default)}
        if self.min is not None:
            out["min"] = typed(self, self.min)
        if self.max is not None:
            out["max"] = typed(self, self.max)
        if self.choices:
            out["choices"] = list(self.choices)
        if self.type == "str" and not self.choices:
            out["size"] = self.size
        return out


def parse_value(decl: KnobDecl, text: str) -> str:
    """The canonical text of ``text`` as a value of ``decl``; ValueError with the reason if not allowed."""
    if not isinstance(text, str):
        raise ValueError("not text")
    if decl.type == "bool":
        low = text.strip().lower()
        if low in _TRUE:
            return "true"
        if low in _FALSE:
            return "false"
        raise ValueError(f"{_show(text)} is not a boolean (true/false)")
    if decl.type == "int":
        t = text.strip().replace("_", "")
        if not _INT_RE.match(t):
            raise ValueError(f"{_show(text)} is not an integer")
        n = int(t)
        if not INT_MIN <= n <= INT_MAX:
            raise ValueError(f"{_show(text)} is outside the 64-bit range")
        if decl.min is not None and n < int(decl.min):
            raise ValueError(f"{n} is below the minimum {decl.min}")
        if decl.max is not None and n > int(decl.max):
            raise ValueError(f"{n} is above the maximum {decl.max}")
        return str(n)
    if decl.type == "float":
        t = text.strip().replace("_", "")
        if not _FLOAT_RE.match(t):
            raise ValueError(f"{_show(text)} is not a finite number")
        x = float(t)
        if not math.isfinite(x):
            raise ValueError(f"{_show(text)} is not a finite number")
        if decl.min is not None and x < float(decl.min):
            raise ValueError(f"{x!r} is below the minimum {decl.min}")
        if decl.max is not None and x > float(decl.max):
            raise ValueError(f"{x!r} is above the maximum {decl.max}")
        return repr(x + 0.0)  # -0.0 -> 0.0
    if decl.type == "str":
        if decl.choices:
            if text not in decl.choices:
                raise ValueError(f"{_show(text)} is not one of {', '.join(decl.choices)}")
            return text
        if "\ufffd" in text or len(text.encode("utf-8", "replace")) > decl.size:
            raise ValueError(f"text longer than {decl.size} bytes or not valid UTF-8")
        return text
    raise ValueError(f"unknown knob type {decl.type!r}")


def typed(decl: KnobDecl, canonical: str) -> Any:
    """The Python value of a canonical text (``parse_value``'s output)."""
    if decl.type == "bool":
        return canonical == "true"
    if decl.type == "int":
        return int(canonical)
    if decl.type == "float":
        return float(canonical)
    return canonical


def canonical(decl: KnobDecl, value: Any) -> str:
    """The canonical text of a Python value given in code (a default, a bound); ValueError if wrong."""
    if decl.type == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{value!r} is not a bool")
        return "true" if value else "false"
    if decl.type == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"{value!r} is not an int")
    if decl.type == "float" and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ValueError(f"{value!r} is not a number")
    if decl.type == "str" and not isinstance(value, str):
        raise ValueError(f"{value!r} is not a str")
    return parse_value(
        decl, value if isinstance(value, str) else repr(float(value)) if decl.type == "float" else str(value)
    )


def _show(text: str) -> str:
    return repr(text[:40] + ("..." if len(text) > 40 else ""))


def decl_extras(decl: KnobDecl) -> tuple[str, ...]:
    """The record's extra strings: key/value pairs (``choice`` repeats)."""
    out = ["type", decl.type, "default", decl.default]
    if decl.min is not None:
        out += ["min", decl.min]
    if decl.max is not None:
        out += ["max", decl.max]
    for c in decl.choices:
        out += ["choice", c]
    if decl.type == "str" and not decl.choices:
        out += ["size", str(decl.size)]
    return tuple(out)


def decl_from_extras(extras: tuple[str, ...]) -> KnobDecl:
    """The declaration in a knob record's extras, checked as strictly as a writer makes it; ValueError if not."""
    if len(extras) % 2:
        raise ValueError("odd number of declaration strings")
    pairs = list(zip(extras[::2], extras[1::2], strict=True))
    one = {k: v for k, v in pairs if k != "choice"}
    kind = one.get("type")
    if kind not in TYPES:
        raise ValueError(f"unknown knob type {kind!r}")
    choices = tuple(v for k, v in pairs if k == "choice")
    if len(choices) > MAX_CHOICES:
        raise ValueError(f"more than {MAX_CHOICES} choices")
    size = DEFAULT_STR_SIZE
    if "size" in one:
        if not _NUM_RE.match(one["size"]) or not 0 < int(one["size"]) <= MAX_STR_SIZE:
            raise ValueError(f"bad size {one['size']!r}")
        size = int(one["size"])
    bare = KnobDecl(kind, "", choices=choices, size=size)
    lo = parse_value(bare, one["min"]) if "min" in one and kind in ("int", "float") else None
    hi = parse_value(bare, one["max"]) if "max" in one and kind in ("int", "float") else None
    if lo is not None and hi is not None and float(lo) > float(hi):
        raise ValueError("min above max")
    decl = KnobDecl(kind, "", lo, hi, choices, size)
    return KnobDecl(kind, parse_value(decl, one.get("default", "")), lo, hi, choices, size)


# -- the applied state (a knob record's value) -------------------------------------


@dataclass(frozen=True)
class Change:
    when_ns: int
    origin: str
    uid: int
    pid: int
    old: str
    new: str


@dataclass(frozen=True)
class KnobState:
    """What a process applied, where it came from, and its last refusal."""

    seen_seq: int = 0  # the control file's sequence this state answers
    applied_seq: int = 0  # the sequence whose request set the value (0: default/environment)
    origin: str = "default"
    uid: int = 0
    pid: int = 0
    when_ns: int = 0
    value: str = ""
    refused_seq: int = 0  # the sequence of the last refused request (0: none)
    refused_value: str = ""
    refused_reason: str = ""
    refused_when_ns: int = 0
    history: tuple[Change, ...] = field(default=())  # oldest first


def state_capacity(decl: KnobDecl) -> int:
    """A knob record's state capacity: every field at its largest, with HISTORY changes."""
    v = decl.value_bytes + 8  # value plus its netstring framing
    num = 25
    fixed = 9 * num + 2 * v + 4 * MAX_REASON + 40
    per_change = 4 * num + 2 * v
    return L.align8(fixed + HISTORY * per_change)


def encode_state(state: KnobState, capacity: int) -> str:
    """The state's netstrings, dropping the oldest changes until they fit ``capacity`` bytes."""
    history = list(state.history[-HISTORY:])
    reason = state.refused_reason[:MAX_REASON]
    while True:
        fields = [
            "1", str(state.seen_seq), str(state.applied_seq), state.origin, str(state.uid), str(state.pid),
            str(state.when_ns), state.value, str(state.refused_seq), state.refused_value, reason,
            str(state.refused_when_ns), str(len(history)),
        ]  # fmt: skip
        for c in history:
            fields += [str(c.when_ns), c.origin, str(c.uid), str(c.pid), c.old, c.new]
        text = KL.encode_netstrings(fields)
        if len(text.encode("utf-8")) <= capacity or not (history or reason):
            return text
        if history:
            history.pop(0)
        else:
            reason = ""


def decode_state(data: bytes) -> KnobState | None:
    """The state in a knob's text; None when nothing is published yet; ValueError if malformed."""
    if not data:
        return None
    f = KL.decode_netstrings(data)
    n = len(KL.STATE_FIELDS)
    if len(f) < n or f[0] != "1":
        raise ValueError("knob state: missing fields or unknown version")
    nums = [1, 2, 4, 5, 6, 8, 11, 12]
    for i in nums:
        if not _NUM_RE.match(f[i]):
            raise ValueError(f"knob state: bad number in field {KL.STATE_FIELDS[i]}")
    count = int(f[12])
    per = len(KL.HISTORY_FIELDS)
    if count > HISTORY * 4 or len(f) < n + count * per:
        raise ValueError("knob state: history runs past its fields")
    history = []
    for k in range(count):
        h = f[n + k * per : n + (k + 1) * per]
        if not all(_NUM_RE.match(h[i]) for i in (0, 2, 3)):
            raise ValueError("knob state: bad number in the history")
        history.append(Change(int(h[0]), h[1], int(h[2]), int(h[3]), h[4], h[5]))
    return KnobState(
        int(f[1]),
        int(f[2]),
        f[3],
        int(f[4]),
        int(f[5]),
        int(f[6]),
        f[7],
        int(f[8]),
        f[9],
        f[10],
        int(f[11]),
        tuple(history),
    )


# -- the desired state (the control file) ------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One operator request kept in the control file."""

    knob: str
    target: str  # "" for every process of the name, else "PID:START_TIME"
    action: str  # "set" or "reset"
    value: str  # set: the requested text (the program checks it); reset: ""
    uid: int
    pid: int
    when_ns: int


@dataclass(frozen=True)
class Control:
    seq: int
    entries: tuple[Entry, ...]

    def desired(self, knob: str, target: str) -> Entry | None:
        """The entry that applies to ``knob`` in the process ``target``: its own, else the name's."""
        mine = common = None
        for e in self.entries:
            if e.knob == knob:
                if e.target == target:
                    mine = e
                elif e.target == "":
                    common = e
        return mine or common


def encode_control(control: Control) -> str:
    fields = [KL.CONTROL_MAGIC, KL.CONTROL_VERSION, str(control.seq), str(len(control.entries))]
    for e in control.entries:
        fields += [e.knob, e.target, e.action, e.value, str(e.uid), str(e.pid), str(e.when_ns)]
    return KL.encode_netstrings(fields)


def decode_control(data: bytes) -> Control:
    """A control file's contents; ValueError naming the problem for anything malformed or over the limits."""
    if len(data) > KL.MAX_CONTROL_SIZE:
        raise ValueError(f"larger than {KL.MAX_CONTROL_SIZE} bytes")
    f = KL.decode_netstrings(data)
    if len(f) < 4 or f[0] != KL.CONTROL_MAGIC:
        raise ValueError("not a statmap control file")
    if f[1] != KL.CONTROL_VERSION:
        raise ValueError(f"unknown control version {f[1]!r}")
    if not (_NUM_RE.match(f[2]) and _NUM_RE.match(f[3])):
        raise ValueError("bad sequence or entry count")
    count, per = int(f[3]), len(KL.CONTROL_ENTRY)
    if len(f) != 4 + count * per:
        raise ValueError(f"{len(f) - 4} fields for {count} entries")
    entries = []
    for k in range(count):
        knob, target, action, value, uid, pid, when = f[4 + k * per : 4 + (k + 1) * per]
        if action not in ("set", "reset") or not all(_NUM_RE.match(x) for x in (uid, pid, when)):
            raise ValueError(f"entry {k}: bad action or number")
        entries.append(Entry(knob, target, action, value, int(uid), int(pid), int(when)))
    return Control(int(f[2]), tuple(entries))
