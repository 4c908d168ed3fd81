"""decode_record builds its frozen RecordSpec and Record without their __init__ (speed): they must be the
same objects in every way that counts (equality, hash, repr, frozen, dataclasses.replace), for every type."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest

import statmap
from statmap import _layout as L
from statmap.record_table import CHECKED_SHAPES, DECODE_RUN, record_from_fields

from .test_export import publish_everything


def test_decoded_records_equal_constructed_ones(statdir: str) -> None:
    pub = publish_everything(statdir, "app")
    try:
        with open(pub.path, "rb") as f:
            data = f.read()
    finally:
        pub.close()
    header = L.decode_header(data)
    offset, types = header.header_size, set()
    while offset < header.end:
        record = L.decode_record(data, offset, header.end)
        spec = record.spec
        types.add(spec.mtype)
        built = L.RecordSpec(**{f.name: getattr(spec, f.name) for f in dataclasses.fields(L.RecordSpec)})
        assert spec == built and hash(spec) == hash(built) and repr(spec) == repr(built)
        again = L.Record(record.offset, record.size, built, record.value_offset, record.value_size, record.known)
        assert record == again and hash(record) == hash(again) and repr(record) == repr(again)
        assert dataclasses.replace(spec, name="x").name == "x" and dataclasses.asdict(spec) == dataclasses.asdict(built)
        with pytest.raises(dataclasses.FrozenInstanceError):
            spec.name = "y"  # type: ignore[misc]
        with pytest.raises(dataclasses.FrozenInstanceError):
            record.size = 0  # type: ignore[misc]
        assert L.decode_record(bytearray(data), offset, header.end) == record  # copies decode alike
        assert L.decode_record(memoryview(data), offset, header.end) == record
        offset += record.size
    assert len(types) >= 5


def _closed_records(pub: statmap.Publisher) -> tuple[bytes, L.Header, list[int]]:
    """The publisher's file after closing it: its bytes, header and record offsets."""
    try:
        with open(pub.path, "rb") as f:
            data = f.read()
    finally:
        pub.close()
    header = L.decode_header(data)
    offsets, offset = [], header.header_size
    while offset < header.end:
        offsets.append(offset)
        offset += L.decode_record(data, offset, header.end).size
    return data, header, offsets


def _outcome(fn: Any) -> Any:
    try:
        record = fn()
    except Exception as exc:  # noqa: BLE001 - the outcome compared is the error's type and message
        return (type(exc).__name__, str(exc))
    return (record, record.spec.__dict__, record.__dict__)


def test_c_record_fields_read_as_decode_record(statdir: str) -> None:
    """The C read of a record's fields (record_table's accelerator) + record_from_fields gives what
    decode_record gives, record or complaint, for real records and thousands of damaged ones."""
    try:
        from statmap import _cells  # the C module itself, whichever backend this run uses
    except ImportError:
        pytest.skip("needs the C cells built (python3 setup.py build_ext --inplace)")
    fields_of = _cells._record_fields  # type: ignore[attr-defined]  # private: not in _cells.pyi
    pub = publish_everything(statdir, "app")
    hist = pub.histogram("odd", "Odd", labels=("k",), buckets=(-1e300, -0.0, 1e-300, 2.5))
    hist.labels("ünï\x00code").observe(1)
    data, header, offsets = _closed_records(pub)

    def both(buf: bytes | bytearray, at: int, end: int) -> None:
        pure = _outcome(lambda: L.decode_record(buf, at, end))
        fields = fields_of(buf, at, end, L.RECORD_LIMITS)
        fast = _outcome(lambda: L.decode_record(buf, at, end) if fields is None else record_from_fields(at, fields))
        assert fast == pure, (at, end)

    for at in offsets:  # every record as it is: the C read takes it
        assert fields_of(data, at, header.end, L.RECORD_LIMITS) is not None
        both(data, at, header.end)
    rng = random.Random(7)
    for _ in range(4000):
        at = rng.choice(offsets)
        buf = bytearray(data)
        for _ in range(rng.randrange(1, 4)):
            pos = at + rng.randrange(0, 96)
            buf[pos] = rng.choice((0, 1, 2, 3, 7, 8, 0x40, 0x7F, 0x80, 0xC3, 0xFF, rng.randrange(256)))
        end = header.end if rng.random() < 0.8 else rng.randrange(at, header.end + 16)
        both(buf, at, min(end, len(buf)) if rng.random() < 0.9 else end)
    for at in offsets[:5]:  # cut anywhere, misaligned, outside the buffer
        for end in range(at, at + 120, 3):
            both(data[:end], at, end)
        both(data, at + 4, header.end)
        both(data, -8, header.end)
        both(data, at, len(data) + 64)


def _stops_here(data: bytes | bytearray, at: int, end: int, cache: dict[bytes, Any]) -> bool:
    """Whether ``_decode_run`` must end before the record at ``at``: a record it may not build whole."""
    try:
        record = L.decode_record(data, at, end)
    except L.RecordError:
        return True
    spec = record.spec
    shape = (spec.mtype, spec.flags, spec.capacity, record.value_size, len(spec.bounds))
    if shape not in CHECKED_SHAPES or bytes(data[at : record.value_offset]) in cache:
        return True
    return record.known and bool(spec.bounds or spec.extras or spec.mtype in DECODE_RUN[1])


def test_c_decode_run_builds_what_decode_record_builds(statdir: str) -> None:
    """The C bulk build of new records (record_table's first pass over a file) gives, record for record, what
    decode_record gives, and ends exactly before the first record it may not build, on real and damaged files."""
    try:
        from statmap import _cells
    except ImportError:
        pytest.skip("needs the C cells built (python3 setup.py build_ext --inplace)")
    decode_run = _cells._decode_run  # type: ignore[attr-defined]  # private: not in _cells.pyi

    def run_of(*args: Any) -> list[tuple[bytes, L.Record]]:
        """The run's (metadata bytes, record) pairs; its metadata total checked on the way."""
        keys, records, metadata = decode_run(*args)
        assert len(keys) == len(records) and metadata == sum(r.value_offset - r.offset for r in records)
        return list(zip(keys, records, strict=True))

    pub = publish_everything(statdir, "app")
    counters = pub.counter("many", "Many", labels=("k", "v"))
    for i in range(40):
        counters.labels(f"ü{i}", "x\x00y").inc()
    pub.gauge("plain", "Plain").set(1)
    data, header, offsets = _closed_records(pub)
    for offset in offsets:
        fields = _cells._record_fields(data, offset, header.end, L.RECORD_LIMITS)  # type: ignore[attr-defined]
        record_from_fields(offset, fields)  # its shape checked, as record_table does before a run

    def check(buf: bytes | bytearray, at: int, end: int, cache: dict[bytes, Any], most: int = 1 << 20) -> int:
        run = run_of(buf, at, end, DECODE_RUN, CHECKED_SHAPES, cache, (most, 1 << 30))
        for key, record in run:
            assert record.offset == at
            expected = L.decode_record(buf, at, end)
            assert (record, record.spec.__dict__, record.__dict__) == (
                expected,
                expected.spec.__dict__,
                expected.__dict__,
            )
            assert key == bytes(buf[at : record.value_offset]) and type(record.spec.labels) is tuple
            at += record.size
        assert len(run) == most or at >= end or _stops_here(buf, at, end, cache), at
        return len(run)

    assert max(check(data, at, header.end, {}) for at in offsets) >= 41  # the 40 counters and the gauge, whole
    assert check(data, offsets[0], header.end, {}, most=3) == 3
    longest = max(
        offsets, key=lambda at: len(run_of(data, at, header.end, DECODE_RUN, CHECKED_SHAPES, {}, (99, 1 << 30)))
    )
    three = [L.decode_record(data, at, header.end) for at in offsets[offsets.index(longest) :][:3]]
    budget = sum(r.value_offset - r.offset for r in three)  # the metadata bytes of three records: three built
    for room, built in ((budget, 3), (budget - 1, 2)):
        assert len(run_of(data, longest, header.end, DECODE_RUN, CHECKED_SHAPES, {}, (99, room))) == built
    cache = {bytes(data[offsets[5] : L.decode_record(data, offsets[5], header.end).value_offset]): None}
    check(data, offsets[0], header.end, cache)  # ends before a record decoded before
    saved = dict(CHECKED_SHAPES)
    CHECKED_SHAPES.clear()
    try:
        assert run_of(data, offsets[0], header.end, DECODE_RUN, CHECKED_SHAPES, {}, (100, 1 << 30)) == []
    finally:
        CHECKED_SHAPES.update(saved)
    rng = random.Random(11)
    for _ in range(3000):
        at = rng.choice(offsets)
        buf = bytearray(data)
        for _ in range(rng.randrange(1, 4)):
            pos = rng.choice(offsets) + rng.randrange(0, 96)
            buf[pos] = rng.choice((0, 1, 2, 3, 7, 8, 0x40, 0x7F, 0x80, 0xC3, 0xFF, rng.randrange(256)))
        end = header.end if rng.random() < 0.8 else rng.randrange(at, header.end + 16)
        check(buf, at, min(end, len(buf)), {})
    for end in range(offsets[1], offsets[1] + 200, 5):  # cut anywhere
        check(data[:end], offsets[0], end, {})
    with pytest.raises(TypeError):
        run_of(data, 0, 8, (), {}, {}, (1, 1))
    with pytest.raises(TypeError):
        run_of(data, 0, 8, DECODE_RUN, {}, {}, 1)
