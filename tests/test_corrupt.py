"""Files are untrusted input: corrupt, truncated and crafted files.

For every input, ``statmap.open(path).snapshot()`` either succeeds (possibly
with status "not-ready") or raises ``statmap.FormatError`` naming the file:
never another exception, never a crash, and within a time bound. The base
files are real files written by the library (every metric type, labels, a
file that grew); crafted inputs are built with ``statmap._layout``'s encoders
and constants, the one place the format's offsets live.
"""

from __future__ import annotations

import faulthandler
import json
import os
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import statmap
from statmap import _layout as L

from .conftest import SCALE

PER_FILE_SECONDS = 5.0  # generous: the machine is shared; a healthy read takes well under 10 ms
EXAMPLES = max(1, int(300 * SCALE))
HSETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
U32 = (1 << 32) - 1
U64 = (1 << 64) - 1
# RECORD_HEADER's fields, in its order (names from docs/format.md 4.1)
RECORD_FIELDS = (
    "record_size", "type", "flags", "aggregation", "reserved", "value_offset", "value_size",
    "label_count", "param_count", "string_count", "strings_size", "capacity",
)  # fmt: skip
assert len(RECORD_FIELDS) == len(L.RECORD_HEADER.unpack(bytes(L.RECORD_HEADER_SIZE)))


@pytest.fixture(autouse=True)
def _no_hang() -> Iterator[None]:
    """A hang is a failure: dump every thread's stack and exit rather than wait forever."""
    faulthandler.dump_traceback_later(300, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def read(path: str) -> str:
    """Snapshot ``path``; return its status, or "corrupt" for a FormatError naming the file."""
    return read_counted(path)[0]


def read_counted(path: str) -> tuple[str, int]:
    """``read``, and the number of series the snapshot held."""
    started = time.monotonic()
    count = 0
    try:
        reader = statmap.open(path)
        try:
            snap = reader.snapshot()
            json.dumps(snap.to_json())  # what `statmap show --json` does with it
            outcome, count = snap.status, len(snap.series)
        finally:
            reader.close()
    except statmap.FormatError as exc:
        assert exc.path == path and path in str(exc), str(exc)
        assert exc.problem
        outcome = "corrupt"
    elapsed = time.monotonic() - started
    assert elapsed < PER_FILE_SECONDS, f"{path}: took {elapsed:.1f}s"
    return outcome, count


def read_bytes(path: str, data: bytes | bytearray) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return read(path)


# -- real files written by the library ------------------------------------------------


def _populate(pub: statmap.Publisher, grow: bool) -> None:
    pub.counter("requests", "Requests served").inc(42)
    pub.counter("busy_seconds", "Busy time", float=True, unit="seconds").inc(1.5)
    pub.gauge("temperature", "Degrees", aggregate="max").set(-3.25)
    h = pub.histogram("latency", "Latency", buckets=(0.1, 1.0, 10.0), unit="seconds")
    for v in (0.05, 0.5, 5.0, 50.0):
        h.observe(v)
    lh = pub.histogram("size", "Sizes", buckets=statmap.LogBuckets(1, 1000))
    lh.observe(3.0)
    pub.summary("payload", "Payload").observe(12.5)
    pub.text("status", "Status", size=24).set("déjà vu: ça marche 🙂")
    pub.enum("phase", "Phase", states=("starting", "running", "stopping")).state("running")
    pub.info("build", "Build", values={"version": "1.2.3", "commit": "abc"})
    errors = pub.counter("errors", "Errors", labels=("code", "path"))
    errors.labels("500", "/x").inc(3)
    errors.labels(code="404", path="/ünï").inc()
    pub.text("last", "Last", labels=("worker",), size=8).labels("w1").set("ok")
    pub.gauge("queue", "Queue", labels=("q",)).labels("a").set(7)
    if grow:
        users = pub.counter("per_user", "Per user", labels=("user",))
        i = 0
        while os.path.getsize(pub.path) <= 16384:
            users.labels(f"user-{i:04d}-" + "x" * 40).inc(i)
            i += 1


@pytest.fixture(scope="module")
def real_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("real") / "statmap"
    d.mkdir(mode=0o700)
    out = {}
    for name, grow in (("small", False), ("grown", True)):
        pub = statmap.Publisher(name, str(d))
        _populate(pub, grow)
        pub.close()
        data = Path(pub.path).read_bytes()
        assert read(pub.path) == "closed"
        out[name] = data
    header = L.decode_header(out["grown"])
    assert header.capacity > 16384 and len(out["grown"]) == header.capacity, "the grown file did not grow"
    return out


def record_offsets(data: bytes) -> list[int]:
    """Where each record starts, and the end of records, in a sound file."""
    header = L.decode_header(data)
    offsets, offset = [], header.header_size
    while offset < header.end:
        offsets.append(offset)
        offset += L.decode_record(data, offset, header.end).size
    return [*offsets, offset]


def test_real_files_read_back(real_files: dict[str, bytes], tmp_path: Path) -> None:
    for name, data in real_files.items():
        path = str(tmp_path / f"{name}.statmap")
        assert read_bytes(path, data) == "closed"
        snap = statmap.open(path).snapshot()
        types = {s.type for s in snap.series}
        assert types == {"counter", "gauge", "histogram", "summary", "text", "enum", "info"}
        values = {(s.name, tuple(s.labels.values())): s.value for s in snap.series}
        assert values[("status", ())] == "déjà vu: ça marche 🙂".encode()[:24].decode("utf-8", "ignore")
        assert values[("errors", ("404", "/ünï"))] == 1


# -- (a) truncation -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["small", "grown"])
def test_truncated_at_every_length(real_files: dict[str, bytes], tmp_path: Path, name: str) -> None:
    data = real_files[name]
    path = str(tmp_path / "cut.statmap")
    assert read_bytes(path, data) == "closed"
    outcomes: dict[str, int] = {}
    for length in range(len(data) - 1, -1, -1):
        os.truncate(path, length)
        outcome = read(path)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        # The header promises `capacity` bytes: any shorter file is corrupt,
        # unless it is too short to hold a header at all (not ready).
        assert outcome == ("not-ready" if length < L.HEADER_SIZE else "corrupt"), (length, outcome)
    assert sum(outcomes.values()) == len(data)


def _with_header(data: bytes, **words: int) -> bytearray:
    buf = bytearray(data)
    for field, value in words.items():
        struct.pack_into("<Q", buf, getattr(L, f"OFF_{field.upper()}"), value)
    return buf


@pytest.mark.parametrize("name", ["small", "grown"])
def test_end_of_records_at_every_byte(real_files: dict[str, bytes], tmp_path: Path, name: str) -> None:
    """Cut the record area (not the file) at every byte: whole records read, anything else is corrupt.

    For the grown file (hundreds of records): every byte of its first and last
    three records, and every 8th byte in between.
    """
    data = real_files[name]
    boundaries = record_offsets(data)
    ends: Sequence[int]
    if name == "small":
        ends = range(L.HEADER_SIZE, boundaries[-1] + 1)
    else:
        ends = sorted(
            set(range(L.HEADER_SIZE, boundaries[3] + 1))
            | set(range(boundaries[-4], boundaries[-1] + 1))
            | set(range(L.HEADER_SIZE, boundaries[-1] + 1, 8))
        )
    path = str(tmp_path / "end.statmap")
    Path(path).write_bytes(data)
    fd = os.open(path, os.O_WRONLY)
    try:
        for end in ends:
            os.pwrite(fd, struct.pack("<Q", end), L.OFF_END)
            outcome, count = read_counted(path)
            if end in boundaries:
                assert (outcome, count) == ("closed", boundaries.index(end)), end
            else:
                assert outcome == "corrupt", end
    finally:
        os.close(fd)


def test_partially_written_file_is_not_ready(real_files: dict[str, bytes], tmp_path: Path) -> None:
    data = real_files["small"]
    path = str(tmp_path / "half.statmap")
    assert read_bytes(path, b"") == "not-ready"
    assert read_bytes(path, bytes(len(data))) == "not-ready"  # reserved, nothing written yet
    assert read_bytes(path, _with_header(data, state=L.State.INITIALISING)) == "not-ready"
    assert read_bytes(path, bytes(L.HEADER_SIZE) + data[L.HEADER_SIZE :]) == "not-ready"


# -- (b) random corruption ---------------------------------------------------------------

INTERESTING_WORDS = st.sampled_from(
    [0, 1, 7, 8, 39, 40, 255, 256, 4096, 16384, 32768, U32, U32 + 1, 1 << 31, 1 << 63, U64, U64 - 7]
)


def _positions(data: bytes) -> st.SearchStrategy[int]:
    end = L.decode_header(data).end
    return st.one_of(
        st.integers(0, L.HEADER_SIZE - 1),  # the header
        st.integers(L.HEADER_SIZE, end - 1),  # the records and their values
        st.integers(0, len(data) - 1),  # anywhere
    )


def _mutation(data: bytes) -> st.SearchStrategy[tuple[Any, ...]]:
    pos = _positions(data)
    return st.one_of(
        st.tuples(st.just("flip"), pos, st.integers(0, 7)),
        st.tuples(st.just("byte"), pos, st.integers(0, 255)),
        st.tuples(st.just("word"), pos.map(lambda p: p - p % 8), INTERESTING_WORDS),
        st.tuples(st.just("u32"), pos.map(lambda p: p - p % 4), st.sampled_from([0, 1, 8, 40, 4096, 1 << 24, U32])),
    )


def _mutate(data: bytes, mutations: list[tuple[Any, ...]]) -> bytearray:
    buf = bytearray(data)
    for kind, pos, value in mutations:
        if kind == "flip":
            buf[pos] ^= 1 << value
        elif kind == "byte":
            buf[pos] = value
        elif kind == "word":
            struct.pack_into("<Q", buf, pos, value)
        else:
            struct.pack_into("<I", buf, pos, value)
    return buf


_STATS: dict[str, dict[str, int]] = {}


def _random_corruption_test(name: str) -> Callable[..., None]:
    @HSETTINGS
    @given(data=st.data())
    def test(real_files: dict[str, bytes], tmp_path: Path, data: Any) -> None:
        original = real_files[name]
        mutations = data.draw(st.lists(_mutation(original), min_size=1, max_size=8), label="mutations")
        outcome = read_bytes(str(tmp_path / "random.statmap"), _mutate(original, mutations))
        stats = _STATS.setdefault(name, {})
        stats[outcome] = stats.get(outcome, 0) + 1

    test.__name__ = f"test_random_corruption_{name}"
    return test


test_random_corruption_small = pytest.mark.slow(_random_corruption_test("small"))
test_random_corruption_grown = pytest.mark.slow(_random_corruption_test("grown"))


@pytest.mark.slow
def test_random_corruption_report(capsys: pytest.CaptureFixture[str]) -> None:
    """Not a check: prints how the random examples above were classified."""
    with capsys.disabled():
        print(f"\n[statmap {statmap.backend}] random corruption outcomes: {_STATS}")


# -- (c) crafted files -----------------------------------------------------------------

IDENTITY = L.Identity(
    pid=1, start_time=0, boot_id=bytes(16), instance_id=bytes(range(16)), created_ns=0,
    publisher="crafted", program="test_corrupt",
)  # fmt: skip


def record(spec: L.RecordSpec, value: bytes = b"", **fields: int) -> bytes:
    """An encoded record, its value area starting with ``value``, header fields overridden."""
    data, value_rel = L.encode_record(spec)
    buf = bytearray(data)
    buf[value_rel : value_rel + len(value)] = value
    if fields:
        head = dict(zip(RECORD_FIELDS, L.RECORD_HEADER.unpack_from(buf, 0), strict=False))
        head.update(fields)
        L.RECORD_HEADER.pack_into(buf, 0, *(head[f] for f in RECORD_FIELDS))
    return bytes(buf)


def value_offset(spec: L.RecordSpec) -> int:
    return L.encode_record(spec)[1]


def build(*records: bytes, header_size: int = L.HEADER_SIZE, major: int = L.MAJOR, minor: int = L.MINOR,
          state: int = L.State.READY, capacity: int | None = None, end: int | None = None,
          magic: bytes = L.MAGIC, size: int | None = None) -> bytearray:  # fmt: skip
    body = b"".join(records)
    start = max(header_size, L.HEADER_SIZE) if header_size <= 4096 else L.HEADER_SIZE
    real_end = start + len(body)
    file_size = size if size is not None else max(4096, (real_end + 4095) // 4096 * 4096)
    buf = bytearray(L.encode_header(IDENTITY, file_size))
    buf[L.OFF_MAGIC : L.OFF_MAGIC + len(magic)] = magic
    struct.pack_into("<HHI", buf, L.OFF_VERSION, major, minor, header_size & U32)
    buf += bytes(start - L.HEADER_SIZE)  # a longer header (a newer minor version)
    buf += body
    buf += bytes(max(0, file_size - len(buf)))
    del buf[file_size:]
    _set(buf, L.OFF_STATE, state)
    _set(buf, L.OFF_CAPACITY, file_size if capacity is None else capacity)
    _set(buf, L.OFF_END, real_end if end is None else end)
    return buf


def _set(buf: bytearray, offset: int, value: int) -> None:
    if offset + 8 <= len(buf):
        struct.pack_into("<Q", buf, offset, value & U64)


COUNTER = L.RecordSpec(L.MetricType.COUNTER, "tail", "a sound record after the crafted one")
TAIL = record(COUNTER, struct.pack("<Q", 99))
HIST = L.RecordSpec(L.MetricType.HISTOGRAM, "h", bounds=(1.0, 2.0))
TEXT = L.RecordSpec(L.MetricType.TEXT, "t", capacity=16)
ENUM = L.RecordSpec(L.MetricType.ENUM, "e", extras=("a", "b"))
INFO = L.RecordSpec(L.MetricType.INFO, "i", extras=("k", "v"))
LABELLED = L.RecordSpec(L.MetricType.GAUGE, "g", labels=(("k", "v"),))
PARAMS_END = L.RECORD_HEADER_SIZE + 8 * len(HIST.bounds)


def _first_string_length(spec: L.RecordSpec, length: int) -> bytes:
    """``spec``'s record with the first string's u32 length replaced."""
    buf = bytearray(record(spec))
    struct.pack_into("<I", buf, L.RECORD_HEADER_SIZE + 8 * len(spec.bounds), length)
    return bytes(buf)


def _histogram_value(count: int, total: float, raw: tuple[int, ...], seq: int = 0) -> bytes:
    copy = struct.pack(f"<Qd{len(raw)}Q", count, total, *raw)
    return struct.pack("<Q", seq) + copy + copy


def _text_value(length: int, text: bytes, capacity: int) -> bytes:
    copy = struct.pack("<Q", length) + text.ljust(L.align8(capacity), b"\0")
    return bytes(8) + copy + copy


def _many_unknown(count: int) -> bytes:
    one = record(L.RecordSpec(L.MetricType.COUNTER, ""), type=999)  # unknown type: skipped
    return one * count


CORRUPT, OK, EITHER = "corrupt", "dead", "either"  # crafted files are not locked by a writer: "dead"

CRAFTED: dict[str, tuple[bytearray, str]] = {
    # the header
    "sound": (build(record(HIST), TAIL), OK),
    "bad magic": (build(TAIL, magic=b"NOTSTATM"), CORRUPT),
    "big-endian magic": (build(TAIL, magic=L.MAGIC_BIG_ENDIAN), CORRUPT),
    "zero magic": (build(TAIL, magic=bytes(8)), "not-ready"),
    "major 0": (build(TAIL, major=0), CORRUPT),
    "major 2": (build(TAIL, major=2), CORRUPT),
    "major 65535": (build(TAIL, major=0xFFFF), CORRUPT),
    "newer minor": (build(TAIL, minor=9), OK),
    "newer minor, longer header": (build(TAIL, minor=1, header_size=L.HEADER_SIZE + 64), OK),
    "header size 0": (build(TAIL, header_size=0), CORRUPT),
    "header size 8": (build(TAIL, header_size=8), CORRUPT),
    "header size 255": (build(TAIL, header_size=255), CORRUPT),
    "header size unaligned": (build(TAIL, header_size=L.HEADER_SIZE + 4), CORRUPT),
    "header size past the file": (build(TAIL, header_size=U32 - 7), CORRUPT),
    "state initialising": (build(TAIL, state=L.State.INITIALISING), "not-ready"),
    "state closed": (build(TAIL, state=L.State.CLOSED), "closed"),
    "state 3": (build(TAIL, state=3), CORRUPT),
    "state huge": (build(TAIL, state=U64), CORRUPT),
    "capacity below header": (build(TAIL, capacity=8), CORRUPT),
    "capacity past the file": (build(TAIL, capacity=8192), CORRUPT),
    "capacity huge": (build(TAIL, capacity=U64), CORRUPT),
    "capacity unaligned": (build(TAIL, capacity=4095), EITHER),
    "end below header": (build(TAIL, end=8), CORRUPT),
    "end zero": (build(TAIL, end=0), CORRUPT),
    "end past capacity": (build(TAIL, end=4096 + 8), CORRUPT),
    "end huge": (build(TAIL, end=U64), CORRUPT),
    "end at capacity, zeros after records": (build(TAIL, end=4096), CORRUPT),
    "end unaligned": (build(TAIL, end=L.HEADER_SIZE + len(TAIL) + 3), CORRUPT),
    "end inside a record": (build(TAIL, end=L.HEADER_SIZE + 16), CORRUPT),
    "file size unaligned": (build(TAIL, size=4093, capacity=4093), CORRUPT),
    "file shorter than the header": (build(size=100), "not-ready"),
    # record sizes, offsets and counts
    "record size 0": (build(record(COUNTER, record_size=0), TAIL), CORRUPT),
    "record size 8": (build(record(COUNTER, record_size=8), TAIL), CORRUPT),
    "record size 39": (build(record(COUNTER, record_size=39), TAIL), CORRUPT),
    "record size unaligned": (build(record(COUNTER, record_size=len(TAIL) + 1), TAIL), CORRUPT),
    "record size past end": (build(record(COUNTER, record_size=len(TAIL) + 8)), CORRUPT),
    "record size huge": (build(record(COUNTER, record_size=U32 - 7), TAIL), CORRUPT),
    "record size over 16 MiB": (build(record(COUNTER, record_size=L.MAX_RECORD_SIZE + 8), TAIL), CORRUPT),
    "value offset 0 (over the record header)": (build(record(COUNTER, value_offset=0), TAIL), CORRUPT),
    "value offset over the strings": (build(record(COUNTER, value_offset=L.RECORD_HEADER_SIZE), TAIL), CORRUPT),
    "value offset over the params": (build(record(HIST, value_offset=L.RECORD_HEADER_SIZE), TAIL), CORRUPT),
    "value offset unaligned": (build(record(COUNTER, value_offset=value_offset(COUNTER) + 4), TAIL), CORRUPT),
    "value offset past the record": (build(record(COUNTER, value_offset=len(TAIL)), TAIL), CORRUPT),
    "value offset huge": (build(record(COUNTER, value_offset=U32 - 7), TAIL), CORRUPT),
    "value size 0": (build(record(COUNTER, value_size=0), TAIL), CORRUPT),
    "value size huge": (build(record(COUNTER, value_size=U32), TAIL), CORRUPT),
    "value size wrong for histogram": (build(record(HIST, value_size=8), TAIL), CORRUPT),
    "label count huge": (build(record(LABELLED, label_count=U32), TAIL), CORRUPT),
    "label count without strings": (build(record(COUNTER, label_count=1), TAIL), CORRUPT),
    "param count huge": (build(record(HIST, param_count=U32), TAIL), CORRUPT),
    "param count over the limit": (build(record(HIST, param_count=L.MAX_PARAMS + 1), TAIL), CORRUPT),
    "param count past the record": (build(record(HIST, param_count=1000), TAIL), CORRUPT),
    "string count 0": (build(record(COUNTER, string_count=0), TAIL), CORRUPT),
    "string count huge": (build(record(COUNTER, string_count=U32), TAIL), CORRUPT),
    "string count past the table": (build(record(COUNTER, string_count=4), TAIL), CORRUPT),
    "strings size huge": (build(record(COUNTER, strings_size=U32), TAIL), CORRUPT),
    "strings size too small": (build(record(COUNTER, strings_size=4), TAIL), CORRUPT),
    "string length huge": (build(_first_string_length(COUNTER, U32), TAIL), CORRUPT),
    "string length past the table": (build(_first_string_length(COUNTER, 200), TAIL), CORRUPT),
    "string length short (stray bytes)": (build(_first_string_length(COUNTER, 0), TAIL), CORRUPT),
    # type rules
    "unknown flags": (build(record(COUNTER, flags=0x80), TAIL), CORRUPT),
    "text capacity over 1 MiB": (build(record(TEXT, capacity=L.MAX_TEXT_CAPACITY + 8), TAIL), CORRUPT),
    "text capacity huge": (build(record(TEXT, capacity=U32), TAIL), CORRUPT),
    "histogram bounds decreasing": (
        build(record(L.RecordSpec(L.MetricType.HISTOGRAM, "h", bounds=(2.0, 1.0))), TAIL),
        CORRUPT,
    ),
    "histogram bound NaN": (
        build(record(L.RecordSpec(L.MetricType.HISTOGRAM, "h", bounds=(float("nan"),))), TAIL),
        CORRUPT,
    ),
    "histogram bound inf": (
        build(record(L.RecordSpec(L.MetricType.HISTOGRAM, "h", bounds=(1.0, float("inf")))), TAIL),
        CORRUPT,
    ),
    "histogram bound -inf": (
        build(record(L.RecordSpec(L.MetricType.HISTOGRAM, "h", bounds=(float("-inf"), 1.0))), TAIL),
        CORRUPT,
    ),
    "gauge with params": (build(record(HIST, type=L.MetricType.GAUGE, value_size=8), TAIL), CORRUPT),
    "enum without states": (build(record(L.RecordSpec(L.MetricType.ENUM, "e")), TAIL), CORRUPT),
    "info with an odd string": (build(record(L.RecordSpec(L.MetricType.INFO, "i", extras=("k",))), TAIL), CORRUPT),
    "counter with extra strings": (
        build(record(L.RecordSpec(L.MetricType.COUNTER, "c", extras=("x",))), TAIL),
        CORRUPT,
    ),
    "invalid UTF-8 in strings": (build(record(COUNTER).replace(b"tail", b"\xff\xfe\xc3t"), TAIL), OK),
    # values
    "histogram buckets do not add up": (build(record(HIST, _histogram_value(5, 1.0, (1, 1, 1))), TAIL), CORRUPT),
    "histogram sound value": (build(record(HIST, _histogram_value(3, 4.5, (1, 1, 1))), TAIL), OK),
    "histogram odd sequence (copy 1)": (build(record(HIST, _histogram_value(3, 4.5, (1, 1, 1), seq=7)), TAIL), OK),
    "histogram count overflows a sum": (build(record(HIST, _histogram_value(U64, 0.0, (U64, 1, 0))), TAIL), CORRUPT),
    "text length past capacity": (build(record(TEXT, _text_value(17, b"x" * 16, 16)), TAIL), CORRUPT),
    "text length huge": (build(record(TEXT, _text_value(U64, b"x" * 16, 16)), TAIL), CORRUPT),
    "text invalid UTF-8": (build(record(TEXT, _text_value(4, b"\xff\xfe\xc3x", 16)), TAIL), OK),
    "enum index out of range": (build(record(ENUM, struct.pack("<Q", 5)), TAIL), OK),
    "enum index huge": (build(record(ENUM, struct.pack("<Q", U64)), TAIL), OK),
    # unknown record types are skipped
    "unknown type": (build(record(COUNTER, type=99, value_size=24, record_size=len(TAIL) + 16), TAIL), EITHER),
    "unknown type with junk value": (build(record(INFO, type=4242, flags=0xFFFF, aggregation=0xFFFF), TAIL), OK),
    "unknown type, empty value": (build(_many_unknown(1), TAIL), OK),
    "many unknown records": (build(_many_unknown(20_000), TAIL), OK),
}


@pytest.mark.parametrize("case", list(CRAFTED))
def test_crafted(case: str, tmp_path: Path) -> None:
    data, expected = CRAFTED[case]
    path = str(tmp_path / "crafted.statmap")
    outcome = read_bytes(path, data)
    if expected != EITHER:
        assert outcome == expected, (case, outcome)


def test_unknown_record_types_are_skipped(tmp_path: Path) -> None:
    junk = record(INFO, type=4242, flags=0xFFFF, aggregation=7)
    data = build(record(HIST, _histogram_value(3, 4.5, (1, 1, 1))), junk, junk, TAIL)
    path = str(tmp_path / "skip.statmap")
    assert read_bytes(path, data) == OK
    snap = statmap.open(path).snapshot()
    assert [(s.name, s.type) for s in snap.series] == [("h", "histogram"), ("tail", "counter")]
    assert snap.series[0].value.count == 3 and snap.series[1].value == 99


def test_clear_messages(tmp_path: Path) -> None:
    path = str(tmp_path / "msg.statmap")
    for data, words in (
        (build(TAIL, magic=L.MAGIC_BIG_ENDIAN), "big-endian"),
        (build(TAIL, major=2), "version"),
        (build(TAIL, magic=b"NOTSTATM"), "magic"),
    ):
        with open(path, "wb") as f:
            f.write(data)
        with pytest.raises(statmap.FormatError) as info:
            statmap.open(path).snapshot()
        assert words in str(info.value) and path in str(info.value)


def test_not_a_regular_file_or_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "real.statmap"
    target.write_bytes(build(TAIL))
    link = tmp_path / "link.statmap"
    link.symlink_to(target)
    for path in (str(link), str(tmp_path), str(tmp_path / "missing.statmap")):
        with pytest.raises(statmap.FormatError) as info:
            statmap.open(path).snapshot()
        assert path in str(info.value)
