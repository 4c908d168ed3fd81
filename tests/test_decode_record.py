"""decode_record builds its frozen RecordSpec and Record without their __init__ (speed): they must be the
same objects in every way that counts (equality, hash, repr, frozen, dataclasses.replace), for every type."""

from __future__ import annotations

import dataclasses

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
