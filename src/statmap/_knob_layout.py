"""The text inside knobs: a knob's applied state and the control file ``NAME.knobs`` (format 1.1).

Both are netstrings (``LEN:BYTES,``): text that any language splits without
a struct, and that an old reader never opens. The knob *record* (type code,
value area) belongs to the stats file's layout, ``_layout``; this module
holds the fields of the text that record's latch carries and of the control
file (docs/format.md section 13).
"""

from __future__ import annotations

MAX_KNOB_STATE = 1 << 16  # byte capacity of a knob's state text
MAX_CONTROL_SIZE = 1 << 20  # bytes of a control file
MAX_NETSTRINGS = 1 << 14  # fields in one state text or control file
CONTROL_MAGIC = "statmap-knobs"
CONTROL_VERSION = "1"
CONTROL_SUFFIX = ".knobs"
# Knob state fields, in order (then HISTORY_FIELDS per history entry).
STATE_FIELDS = (
    "version", "seen_seq", "applied_seq", "origin", "uid", "pid", "when_ns", "value",
    "refused_seq", "refused_value", "refused_reason", "refused_when_ns", "history_count",
)  # fmt: skip
HISTORY_FIELDS = ("when_ns", "origin", "uid", "pid", "old", "new")
# Control file: magic, version, seq, entry count, then CONTROL_ENTRY fields per entry.
CONTROL_ENTRY = ("knob", "target", "action", "value", "uid", "pid", "when_ns")


def encode_netstrings(fields: list[str] | tuple[str, ...]) -> str:
    """``LEN:BYTES,`` per field (LEN = decimal UTF-8 byte count): D. J. Bernstein's netstrings."""
    return "".join(f"{len(f.encode('utf-8'))}:{f}," for f in fields)


def decode_netstrings(data: bytes, limit: int = MAX_NETSTRINGS) -> list[str]:
    """The fields of netstrings ``data``; ValueError naming the problem for anything malformed."""
    out: list[str] = []
    pos, n = 0, len(data)
    while pos < n:
        if len(out) >= limit:
            raise ValueError(f"more than {limit} fields")
        colon = data.find(b":", pos, pos + 11)
        digits = data[pos:colon] if colon > pos else b""
        if not digits.isdigit() or (len(digits) > 1 and digits[0:1] == b"0"):
            raise ValueError(f"bad field length at byte {pos}")
        length = int(digits)
        start = colon + 1
        if start + length >= n or data[start + length] != 0x2C:  # ","
            raise ValueError(f"field at byte {pos} runs past the data or lacks its ','")
        out.append(data[start : start + length].decode("utf-8", "replace"))
        pos = start + length + 1
    return out
