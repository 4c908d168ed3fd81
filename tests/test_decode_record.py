"""decode_record builds its frozen RecordSpec and Record without their __init__ (speed): they must be the
same objects in every way that counts (equality, hash, repr, frozen, dataclasses.replace), for every type."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest

from statmap import _layout as L

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

    def both(buf: bytes | bytearray, at: int, end: int) -> None:
        pure = _outcome(lambda: L.decode_record(buf, at, end))
        fields = fields_of(buf, at, end, L.RECORD_LIMITS)
        fast = _outcome(lambda: L.decode_record(buf, at, end) if fields is None else L.record_from_fields(at, fields))
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
