"""A minimal protocol-buffers encoder (proto2 wire format), enough to write Prometheus' MetricFamily.

Only what the exposition needs: varints (unsigned and zigzag), doubles,
length-delimited fields (strings, bytes, embedded messages, packed repeated
sint64) and the varint length prefix of the "delimited" stream. A message is
built as ``bytes`` by joining its fields; field numbers live with their users
(expose_proto.py, from prometheus/client_model's metrics.proto).

Wire types: 0 varint, 1 64-bit, 2 length-delimited (protobuf.dev, "Encoding").
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterable

_U64 = (1 << 64) - 1
_SWAP = sys.byteorder != "little"  # the wire is little-endian


def varint(n: int) -> bytes:
    """``n`` (0 <= n < 2**64; a negative int64 is taken as its two's complement) as a base-128 varint."""
    n &= _U64
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def zigzag(n: int) -> int:
    """sint32/sint64's mapping of signed to unsigned: 0, -1, 1, -2 ... -> 0, 1, 2, 3 ..."""
    return n << 1 if n >= 0 else ((-n) << 1) - 1


def uint_field(field: int, n: int) -> bytes:
    return varint(field << 3) + varint(n)


def sint_field(field: int, n: int) -> bytes:
    return varint(field << 3) + varint(zigzag(n))


def double_field(field: int, x: float) -> bytes:
    a = array("d", (x,))
    if _SWAP:  # pragma: no cover - big-endian hosts
        a.byteswap()
    return varint((field << 3) | 1) + a.tobytes()


def bytes_field(field: int, data: bytes) -> bytes:
    return varint((field << 3) | 2) + varint(len(data)) + data


def string_field(field: int, text: str) -> bytes:
    return bytes_field(field, text.encode("utf-8", "replace"))  # proto strings are valid UTF-8


def packed_sint_field(field: int, values: Iterable[int]) -> bytes:
    return bytes_field(field, b"".join(varint(zigzag(v)) for v in values))


def delimited(message: bytes) -> bytes:
    """One message of a delimited stream: its length as a varint, then the message."""
    return varint(len(message)) + message
