"""The statmap file format, version 1: the one module that knows byte offsets.

docs/format.md is the normative description; every constant here is named
there. The value cells (``_cells.c`` and ``_pycells.py``) implement the value
encodings described by the ``*_value_size`` functions and the ``VALUE_*``
offsets below, and nothing else.
"""

from __future__ import annotations

import functools
import mmap
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

#: What the decoders read from: file bytes or a mapping.
Readable = bytes | bytearray | memoryview | mmap.mmap

# -- Header ---------------------------------------------------------------

#: The u64 0x315041_4D54415453 stored little-endian reads "STATMAP1"; a
#: big-endian writer would produce "1PAMTATS", so the bytes reveal byte order.
MAGIC = b"STATMAP1"
MAGIC_BIG_ENDIAN = MAGIC[::-1]
MAJOR = 1
MINOR = 2  # 1.1: knob records; 1.2: exponential histograms, exemplars (docs/format.md sections 13, 14, 15)
HEADER_SIZE = 256
ALIGN = 8

PUBLISHER_NAME_SIZE = 64
PROGRAM_NAME_SIZE = 80

OFF_MAGIC = 0
OFF_VERSION = 8  # u16 major, u16 minor, u32 header size
OFF_STATE = 16
OFF_CAPACITY = 24
OFF_END = 32
OFF_FLAGS = 40
OFF_PID = 48
OFF_START_TIME = 56
OFF_BOOT_ID = 64
OFF_INSTANCE_ID = 80
OFF_CREATED_NS = 96
OFF_CLOSED_NS = 104
OFF_PUBLISHER = 112
OFF_PROGRAM = OFF_PUBLISHER + PUBLISHER_NAME_SIZE  # 176
assert OFF_PROGRAM + PROGRAM_NAME_SIZE == HEADER_SIZE

# Everything in the header but the three words a writer changes after
# creation (state, capacity, end) and closed_ns.
_IDENTITY = struct.Struct("<QQ16s16sQ")  # pid .. created_ns at OFF_PID
_VERSION = struct.Struct("<HHI")
_U64 = struct.Struct("<Q")
_F64 = struct.Struct("<d")
_U64X3 = struct.Struct("<QQQ")


class State(IntEnum):
    """The header's state word. A zero-filled file reads as INITIALISING."""

    INITIALISING = 0
    READY = 1
    CLOSED = 2


@dataclass(frozen=True)
class Identity:
    """Who wrote a file: fixed when the file is created."""

    pid: int
    start_time: int  # clock ticks since boot (/proc/PID/stat field 22); 0 = unknown
    boot_id: bytes  # 16 bytes; all zero = unknown
    instance_id: bytes  # 16 random bytes, unique per file
    created_ns: int  # Unix time in nanoseconds
    publisher: str
    program: str


def fixed_utf8(text: str, size: int) -> bytes:
    """``text`` encoded in UTF-8, cut at a character boundary, NUL padded."""
    return truncate_utf8(text, size).ljust(size, b"\0")


def truncate_utf8(text: str, limit: int) -> bytes:
    """The longest prefix of ``text``'s UTF-8 encoding that fits ``limit`` bytes."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return data
    return data[:limit].decode("utf-8", "ignore").encode("utf-8")


def encode_header(
    identity: Identity, capacity: int, *, state: int = State.INITIALISING, end: int = HEADER_SIZE, closed_ns: int = 0
) -> bytes:
    """Header bytes; by default state INITIALISING and an empty record area.

    A writer of a live file starts from the defaults and stores the rest with
    the cells; a file complete before anyone can open it (the archive) passes
    its final ``state``, ``end`` and ``closed_ns`` here.
    """
    buf = bytearray(HEADER_SIZE)
    buf[OFF_MAGIC : OFF_MAGIC + 8] = MAGIC
    _VERSION.pack_into(buf, OFF_VERSION, MAJOR, MINOR, HEADER_SIZE)
    _U64X3.pack_into(buf, OFF_STATE, state, capacity, end)
    _U64.pack_into(buf, OFF_CLOSED_NS, closed_ns)
    _IDENTITY.pack_into(buf, OFF_PID, identity.pid, identity.start_time, identity.boot_id, identity.instance_id,
                        identity.created_ns)  # fmt: skip
    buf[OFF_PUBLISHER:OFF_PROGRAM] = fixed_utf8(identity.publisher, PUBLISHER_NAME_SIZE)
    buf[OFF_PROGRAM:HEADER_SIZE] = fixed_utf8(identity.program, PROGRAM_NAME_SIZE)
    return bytes(buf)


@dataclass(frozen=True)
class Header:
    """A decoded header. ``problem`` is None when the header is sound."""

    major: int
    minor: int
    header_size: int
    state: int
    capacity: int
    end: int
    identity: Identity
    closed_ns: int


def _cstring(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def decode_header(data: Readable) -> Header:
    """Decode the first HEADER_SIZE bytes; the caller validates the fields."""
    major, minor, header_size = _VERSION.unpack_from(data, OFF_VERSION)
    state, capacity, end = _U64X3.unpack_from(data, OFF_STATE)
    pid, start_time, boot_id, instance_id, created_ns = _IDENTITY.unpack_from(data, OFF_PID)
    (closed_ns,) = _U64.unpack_from(data, OFF_CLOSED_NS)
    publisher = _cstring(bytes(data[OFF_PUBLISHER:OFF_PROGRAM]))
    program = _cstring(bytes(data[OFF_PROGRAM:HEADER_SIZE]))
    identity = Identity(pid, start_time, bytes(boot_id), bytes(instance_id), created_ns, publisher, program)
    return Header(major, minor, header_size, state, capacity, end, identity, closed_ns)


# -- Records ---------------------------------------------------------------


class MetricType(IntEnum):
    COUNTER = 1
    GAUGE = 2
    HISTOGRAM = 3
    SUMMARY = 4
    TEXT = 5
    INFO = 6
    ENUM = 7
    EXP_HISTOGRAM = 9  # since 1.2 (section 14)


#: Record flags.
FLAG_FLOAT = 0x1  # COUNTER: the value is an f64 instead of a u64
FLAG_LOG_BUCKETS = 0x2  # HISTOGRAM: bounds grow geometrically; estimate by harmonic midpoint
KNOWN_FLAGS = FLAG_FLOAT | FLAG_LOG_BUCKETS


class Aggregation(IntEnum):
    """How readers combine one gauge series across processes (low byte)."""

    PER_PROCESS = 0  # one series per process, told apart by a pid label
    SUM = 1
    MAX = 2
    MIN = 3
    LAST = 4  # the value of the most recently created process


#: Aggregation bit: consider live processes only.
AGG_LIVE_ONLY = 0x100

RECORD_HEADER = struct.Struct("<IHHHHIIIIIII")
RECORD_HEADER_SIZE = RECORD_HEADER.size  # 40
assert RECORD_HEADER_SIZE == 40
_EXTENT = struct.Struct("<I8xI")  # record_size and value_offset of a record header

#: ``decode_record_extent(data, offset)`` -> (record size, value offset in the record): the
#: two fields a reader needs to find a record's metadata bytes before decoding them.
decode_record_extent = _EXTENT.unpack_from

#: Limits a writer enforces and a reader checks: they bound the work per record.
MAX_RECORD_SIZE = 1 << 24
MAX_PARAMS = 4096  # histogram bounds
MAX_STRINGS = 4096
MAX_STRING = 65535
MAX_TEXT_CAPACITY = 1 << 20

#: Reader limits per file (docs/format.md section 11): they bound what one
#: file can cost a reader, whoever wrote it. A file over one is corrupt.
MAX_FILE_SIZE = 1 << 30  # the reference writer never grows a file past this
MAX_RECORDS = 1 << 17  # records in one file
MAX_METADATA = 1 << 23  # bytes of record metadata (record headers, bounds, strings) in one file
MEMORY_PER_METADATA_BYTE = 20  # what a reader holds per metadata byte, at most (tests/test_fuzz.py checks it;
# measured up to 13.6 on CPython 3.11 and 16.1 on 3.10, whose objects are larger)


def align8(n: int) -> int:
    return (n + 7) & ~7


# Value encodings (offsets inside a record's value area).
VALUE_SEQ = 0  # u64 sequence word of every double-buffered value
VALUE_COPIES = 8  # first of the two copies


def histogram_copy_size(bound_count: int) -> int:
    """count u64, sum f64, then bound_count + 1 non-cumulative bucket counts."""
    return 8 * (bound_count + 3)


def text_copy_size(capacity: int) -> int:
    """length u64 then ``capacity`` bytes, padded to 8."""
    return 8 + align8(capacity)


SUMMARY_COPY_SIZE = 16  # count u64, sum f64


def value_size(mtype: int, param_count: int, capacity: int) -> int:
    """Bytes of the value area for a record; -1 for an unknown type."""
    if mtype in (MetricType.COUNTER, MetricType.GAUGE, MetricType.ENUM):
        return 8
    if mtype == MetricType.INFO:
        return 0
    if mtype == MetricType.SUMMARY:
        return 8 + 2 * SUMMARY_COPY_SIZE
    if mtype == MetricType.HISTOGRAM:
        return 8 + 2 * histogram_copy_size(param_count)
    if mtype in (MetricType.TEXT, KNOB, EXEMPLAR):  # knob state, exemplar: text latches (since 1.1, 1.2)
        return 8 + 2 * text_copy_size(capacity)
    if mtype == MetricType.EXP_HISTOGRAM:
        return 8 + 2 * exp_copy_size(capacity)
    return -1


@dataclass(frozen=True)
class RecordSpec:
    """Everything a record says about its series (its immutable metadata)."""

    mtype: int
    name: str
    help: str = ""
    unit: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    flags: int = 0
    aggregation: int = 0
    bounds: tuple[float, ...] = ()  # HISTOGRAM: finite upper bounds, increasing
    capacity: int = 0  # TEXT: byte capacity
    extras: tuple[str, ...] = ()  # ENUM: state names; INFO: key, value, key, value...


def _strings(spec: RecordSpec) -> list[bytes]:
    out = [spec.name.encode(), spec.help.encode(), spec.unit.encode()]
    for key, value in spec.labels:
        out += [key.encode(), value.encode()]
    out += [s.encode() for s in spec.extras]
    return out


def encode_record(spec: RecordSpec) -> tuple[bytes, int]:
    """The record's bytes (value area zeroed) and the value area's offset in it."""
    strings = _strings(spec)
    # A writer must never publish a record that readers would reject.
    if len(strings) > MAX_STRINGS:
        raise ValueError(
            f"metric {spec.name!r} needs {len(strings)} strings (labels, states or info pairs); "
            f"the limit is {MAX_STRINGS}"
        )
    for s in strings:
        if len(s) > MAX_STRING:
            raise ValueError(f"metric {spec.name!r}: a string of {len(s)} bytes; the limit is {MAX_STRING}")
    if len(spec.bounds) > MAX_PARAMS:
        raise ValueError(f"metric {spec.name!r}: {len(spec.bounds)} bucket bounds; the limit is {MAX_PARAMS}")
    table = b"".join(struct.pack("<I", len(s)) + s for s in strings)
    params = struct.pack(f"<{len(spec.bounds)}d", *spec.bounds)
    vsize = value_size(spec.mtype, len(spec.bounds), spec.capacity)
    if vsize < 0:
        raise ValueError(f"unknown metric type {spec.mtype}")
    value_offset = align8(RECORD_HEADER_SIZE + len(params) + len(table))
    size = value_offset + vsize + (EXTREMES_SIZE if spec.mtype in _EXTREMES_TYPES else 0)
    if size > MAX_RECORD_SIZE:
        raise ValueError(f"metric {spec.name!r} needs a {size}-byte record; the limit is {MAX_RECORD_SIZE}")
    head = RECORD_HEADER.pack(
        size,
        spec.mtype,
        spec.flags,
        spec.aggregation,
        0,
        value_offset,
        vsize,
        len(spec.labels),
        len(spec.bounds),
        len(strings),
        len(table),
        spec.capacity,
    )
    body = head + params + table
    return body + bytes(size - len(body)), value_offset


class RecordError(ValueError):
    """A record's bytes break the format; the message names the problem."""


@dataclass(frozen=True)
class Record:
    """A decoded, validated record at ``offset`` in its file."""

    offset: int
    size: int
    spec: RecordSpec
    value_offset: int  # absolute offset of the value area in the file
    value_size: int
    known: bool  # False for a type this reader does not know: skip it


def decode_record(data: Readable, offset: int, end: int) -> Record:
    """Decode and check the record at ``offset``; it must end at or before ``end``.

    Every length, count and offset is checked against ``end`` before use, so
    a corrupt record raises RecordError and never reads out of bounds.
    (Hot on a first scrape, once per distinct record: messages are built only
    on failure, and the checked fields go straight into the frozen objects.)
    """
    if offset % ALIGN:
        raise RecordError(f"record at {offset} is not 8-byte aligned")
    if offset + RECORD_HEADER_SIZE > end:
        raise RecordError(f"record at {offset}: header runs past end of records ({end})")
    (size, mtype, flags, aggregation, _reserved, value_rel, vsize, label_count, param_count, string_count,
     strings_size, capacity) = RECORD_HEADER.unpack_from(data, offset)  # fmt: skip
    if size < RECORD_HEADER_SIZE or size % ALIGN or size > MAX_RECORD_SIZE:
        raise RecordError(f"record at {offset}: bad record size {size}")
    if offset + size > end:
        raise RecordError(f"record at {offset}: size {size} runs past end of records ({end})")
    if param_count > MAX_PARAMS or string_count > MAX_STRINGS:
        raise RecordError(f"record at {offset}: {param_count} params / {string_count} strings exceed the limits")
    if string_count < 3 + 2 * label_count:
        raise RecordError(f"record at {offset}: {string_count} strings cannot hold {label_count} labels")
    params_end = RECORD_HEADER_SIZE + 8 * param_count
    if params_end + strings_size > size:
        raise RecordError(
            f"record at {offset}: metadata ({params_end + strings_size} bytes) larger than record ({size})"
        )
    if value_rel % ALIGN or value_rel < params_end + strings_size or value_rel + vsize > size:
        raise RecordError(f"record at {offset}: value area {value_rel}+{vsize} outside record of {size} bytes")
    known = checked_type(offset, mtype, flags, capacity, vsize, param_count)
    base = offset + RECORD_HEADER_SIZE
    bounds = struct.unpack_from(f"<{param_count}d", data, base) if param_count else ()
    pos = base + 8 * param_count
    stop = pos + strings_size
    strings: list[str] = []
    put, u32 = strings.append, _U32.unpack_from
    for _ in range(string_count):
        if pos + 4 > stop:
            raise RecordError(f"record at {offset}: string table truncated")
        (length,) = u32(data, pos)
        pos += 4
        if length > MAX_STRING or pos + length > stop:
            raise RecordError(f"record at {offset}: string of {length} bytes runs past the string table")
        put(str(data[pos : pos + length], "utf-8", "replace"))
        pos += length
    if pos != stop:
        raise RecordError(f"record at {offset}: {stop - pos} stray bytes after the string table")
    return build_record(offset, (size, mtype, flags, aggregation, value_rel, vsize, label_count, param_count, capacity,
                            bounds, strings), known)  # fmt: skip


#: What the C reader (``_cells._record_fields``) needs of the format: the limits its checks use.
RECORD_LIMITS = (RECORD_HEADER_SIZE, MAX_RECORD_SIZE, MAX_PARAMS, MAX_STRINGS, MAX_STRING)


def checked_type(offset: int, mtype: int, flags: int, capacity: int, vsize: int, param_count: int) -> bool:
    """Whether the type is known to this reader, once its fields suit it (else RecordError)."""
    known = mtype in MetricType._value2member_map_
    if known:
        if flags & ~KNOWN_FLAGS:
            raise RecordError(f"record at {offset}: unknown flags {flags:#x}")
        if mtype == MetricType.TEXT and capacity > MAX_TEXT_CAPACITY:
            raise RecordError(f"record at {offset}: text capacity {capacity} exceeds {MAX_TEXT_CAPACITY}")
        expected = value_size(mtype, param_count, capacity)
        if vsize != expected:
            raise RecordError(f"record at {offset}: value size {vsize}, type {mtype} needs {expected}")
        if mtype == MetricType.EXP_HISTOGRAM:
            if param_count != 1 or not 1 <= capacity <= EXP_MAX_BUCKETS:
                raise RecordError(f"record at {offset}: exp. histogram needs 1 param, 1..{EXP_MAX_BUCKETS} buckets")
        elif mtype != MetricType.HISTOGRAM and param_count:
            raise RecordError(f"record at {offset}: type {mtype} takes no params")
    return known


def build_record(offset: int, fields: tuple[Any, ...], known: bool) -> Record:
    size, mtype, flags, aggregation, value_rel, vsize, label_count, _params, capacity, bounds, strings = fields
    labels = tuple(zip(strings[3 : 3 + 2 * label_count : 2], strings[4 : 4 + 2 * label_count : 2], strict=True))
    extras = tuple(strings[3 + 2 * label_count :])
    if known and (extras or bounds or mtype == MetricType.ENUM):  # the others need no more checks
        _check_type_metadata(f"record at {offset}", mtype, bounds, extras)
    # Frozen dataclasses given their checked fields whole: their __init__ (an object.__setattr__ per
    # field) was a third of a record's decode. (RecordSpec and Record: no __post_init__, no slots.)
    spec = _new(RecordSpec)
    _setattr(spec, "__dict__", {"mtype": mtype, "name": strings[0], "help": strings[1], "unit": strings[2],
                                "labels": labels, "flags": flags, "aggregation": aggregation, "bounds": bounds,
                                "capacity": capacity, "extras": extras})  # fmt: skip
    record = _new(Record)
    _setattr(record, "__dict__", {"offset": offset, "size": size, "spec": spec, "value_offset": offset + value_rel,
                                  "value_size": vsize, "known": known})  # fmt: skip
    return record


_U32 = struct.Struct("<I")
_new = object.__new__
_setattr = object.__setattr__


def _check_type_metadata(where: str, mtype: int, bounds: tuple[float, ...], extras: tuple[str, ...]) -> None:
    if mtype == MetricType.HISTOGRAM:
        previous = float("-inf")
        for bound in bounds:
            if not bound > previous or bound == float("inf"):
                raise RecordError(f"{where}: histogram bounds must be finite and increasing")
            previous = bound
    elif mtype == MetricType.EXP_HISTOGRAM:
        if not 0 <= bounds[0] < float("inf") or extras:
            raise RecordError(f"{where}: exponential histogram zero threshold must be finite and >= 0")
    elif mtype == MetricType.ENUM:
        if not extras:
            raise RecordError(f"{where}: enum without states")
    elif mtype == MetricType.INFO:
        if len(extras) % 2:
            raise RecordError(f"{where}: info with an odd number of key/value strings")
    elif extras:
        raise RecordError(f"{where}: type {mtype} takes no extra strings")


# -- Value encodings (docs/format.md section 6) --------------------------------
#
# Live values are stored by the cells (``_cells.c``, ``_pycells.py``) with
# atomic stores, never packed into a live mapping (``struct.pack_into``
# clears before it writes). The encoders below give the bytes of values at
# rest: files complete before anyone can open them (the archive), and tests.

_SUMMARY = struct.Struct("<Qd")
#: One Struct per format string, made once: the sizes of copies and word runs repeat for ever.
_struct: Callable[[str], struct.Struct] = functools.lru_cache(maxsize=1024)(struct.Struct)


def encode_counter(value: float, flags: int) -> bytes:
    """A counter's word: f64 with FLAG_FLOAT, else u64 (wrapping like the cells' atomic add)."""
    if flags & FLAG_FLOAT:
        return _F64.pack(float(value))
    return _U64.pack(int(value) & 0xFFFFFFFFFFFFFFFF)


def encode_gauge(value: float) -> bytes:
    """A gauge's word: f64."""
    return _F64.pack(value)


def encode_summary_copy(count: int, total: float) -> bytes:
    """One copy of a summary's latch: count u64, sum f64."""
    return _SUMMARY.pack(count, total)


def encode_histogram_copy(count: int, total: float, buckets: tuple[int, ...] | list[int]) -> bytes:
    """One copy of a histogram's latch: count, sum, then the non-cumulative bucket counts (+Inf last)."""
    return _counts_struct(histogram_copy_size(len(buckets) - 1)).pack(count, total, *buckets)


def encode_text_copy(data: bytes, capacity: int) -> bytes:
    """One copy of a text's latch: length u64, then ``data`` (at most ``capacity`` bytes) NUL padded."""
    if len(data) > capacity:
        raise ValueError(f"text of {len(data)} bytes exceeds its capacity {capacity}")
    return _U64.pack(len(data)) + data.ljust(text_copy_size(capacity) - 8, b"\0")


def encode_latch(copy: bytes) -> bytes:
    """A latch at rest: sequence 0 (copy 0 stable), both copies equal."""
    return _U64.pack(0) + copy + copy


# -- Value decoding ------------------------------------------------------------


def words_view(buffer: Readable) -> memoryview | None:
    """The buffer as native u64 words (value words are at offset // 8), or None if it is not whole words."""
    return None if len(buffer) % 8 else memoryview(buffer).cast("Q")


def floats_from_bits(words: list[int]) -> tuple[float, ...]:
    """u64 bit patterns (as the cells' ``load_words`` returns them) as f64, in bulk: one call per file."""
    n = len(words)
    return _struct(f"<{n}d").unpack(_struct(f"<{n}Q").pack(*words)) if n else ()


# Lifetime min, max (since 1.2, docs/format.md 5.1): f64 pair after the value area, in padding 1.0 readers ignore
EXTREMES_SIZE, _EXTREMES_TYPES = 16, (MetricType.HISTOGRAM, MetricType.SUMMARY)
encode_extremes: Callable[[float, float], bytes] = struct.Struct("<dd").pack  # (min, max) at rest: the archive


def extremes_at(record: Record, minor: int) -> int | None:
    """The file offset of a histogram's or summary's (min, max), or None (an older writer's record)."""
    at = record.value_offset + record.value_size
    ok = minor >= 2 and record.spec.mtype in _EXTREMES_TYPES and record.offset + record.size - at >= EXTREMES_SIZE
    return at if ok else None


def _counts_struct(size: int) -> struct.Struct:
    return _struct(f"<Qd{size // 8 - 2}Q")  # count, sum and the bucket counts of a copy of ``size`` bytes


def decode_counts_copy(copy: bytes) -> tuple[Any, ...]:
    """A histogram or summary copy as one flat tuple: count, sum, then a histogram's bucket counts."""
    return _counts_struct(len(copy)).unpack(copy)


def decode_summary(copy: bytes) -> tuple[int, float]:
    return _SUMMARY.unpack_from(copy, 0)  # type: ignore[return-value]


def decode_histogram(copy: bytes, bound_count: int) -> tuple[int, float, tuple[int, ...]]:
    """count, sum and the bound_count + 1 non-cumulative bucket counts."""
    count, total = _SUMMARY.unpack_from(copy, 0)
    buckets = struct.unpack_from(f"<{bound_count + 1}Q", copy, 16)
    return count, total, buckets


def decode_text(copy: bytes, capacity: int) -> bytes | None:
    """The text's bytes, or None if the stored length exceeds the capacity."""
    (length,) = _U64.unpack_from(copy, 0)
    if length > capacity:
        return None
    return copy[8 : 8 + length]


def f64_from_bits(bits: int) -> float:
    return float(_F64.unpack(_U64.pack(bits))[0])


def f64_bits(value: float) -> int:
    return int(_U64.unpack(_F64.pack(value))[0])


# -- Exponential histograms (since 1.2; docs/format.md section 14) --------------
#
# Record: type EXP_HISTOGRAM, header ``capacity`` = M buckets per sign, one f64
# param = the zero threshold. Value: a latch whose copy is the EXP_* words
# below, then M positive and M negative u64 bucket counts; bucket index i
# (base 2**2**-scale, counting (base**i, base**(i+1)]) lives in slot i mod M.

EXP_MIN_SCALE, EXP_MAX_SCALE = -4, 20
EXP_MAX_BUCKETS = 2048
EXP_COUNT, EXP_SUM, EXP_MIN, EXP_MAX, EXP_ZERO, EXP_SCALE = 0, 1, 2, 3, 4, 5
EXP_POS_LO, EXP_POS_LEN, EXP_NEG_LO, EXP_NEG_LEN = 6, 7, 8, 9
EXP_HEAD_WORDS = 10
_EXP_HEAD = struct.Struct("<QdddQqqQqQ")


def exp_copy_size(max_buckets: int) -> int:
    """The ten head words, then ``max_buckets`` positive and as many negative bucket slots."""
    return 8 * (EXP_HEAD_WORDS + 2 * max_buckets)


def decode_exp_copy(copy: bytes, max_buckets: int) -> tuple[tuple[Any, ...], tuple[int, ...], tuple[int, ...]]:
    """(the ten head words, signed where the format says so), positive slots, negative slots."""
    slots = _struct(f"<{max_buckets}Q")
    return _EXP_HEAD.unpack_from(copy, 0), slots.unpack_from(copy, 80), slots.unpack_from(copy, 80 + 8 * max_buckets)


def encode_exp_copy(head: tuple[Any, ...], pos: list[int], neg: list[int]) -> bytes:
    """One copy of an exponential histogram's latch (the inverse of ``decode_exp_copy``)."""
    return _EXP_HEAD.pack(*head) + _struct(f"<{len(pos)}Q").pack(*pos) + _struct(f"<{len(neg)}Q").pack(*neg)


# -- Text records that are not metrics (metric readers skip their types) --------
# KNOB (since 1.1, docs/format.md 13): extras declare the knob; a text latch of ``capacity`` bytes holds the
# applied state. EXEMPLAR (since 1.2, section 15): the name and labels of its counter or histogram series,
# params () or (bucket upper bound,), a text latch of EXEMPLAR_CAPACITY bytes: value, Unix ns, label pairs.
# Both texts are netstrings (``_knob_layout``).
KNOB, EXEMPLAR, EXEMPLAR_CAPACITY, EXEMPLAR_MAX_CHARS = 8, 10, 1024, 128
