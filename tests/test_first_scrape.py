"""The first scrape's shortcut: files whose metadata repeats a parsed file's take its records (record_table).

The fast path must never accept what the full parser would refuse, nor
read a file differently: every file here is read by a ``Reader`` while a
file it may repeat is open (so its template exists), and compared with the
full parser (``_layout.decode_record`` record by record); collections are
compared with those of a collector that never uses templates.
"""

from __future__ import annotations

import os
import random
import shutil
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import statmap
from statmap import _layout as L
from statmap import record_table
from statmap.collect import Collector
from statmap.expose import Exposer

SERIES = 40


def _publish(directory: Path, name: str = "app", extra: int = 0, value: int = 1) -> statmap.Publisher:
    pub = statmap.Publisher(name, str(directory))
    fam = pub.counter("requests", "Requests", labels=("path",))
    gauge = pub.gauge("load", "Load", labels=("path",))
    hist = pub.histogram("latency", "Latency", labels=("path",), unit="seconds")
    for i in range(SERIES):
        fam.labels(f"v{i:03d}").inc(value + i)
        if i % 8 == 0:
            gauge.labels(f"v{i:03d}").set(i / 2)
            hist.labels(f"v{i:03d}").observe(i / 10)
    pub.text("version", "Version").set("1.2.3")
    for i in range(SERIES, SERIES + extra):  # records after the others': the same file, grown
        fam.labels(f"v{i:03d}").inc(value + i)
    return pub


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name.endswith(".statmap"))


def _full_parse(path: Path) -> list[L.Record] | str:
    """What the full parser makes of a file's records: the records, or its complaint."""
    data = path.read_bytes()
    header = L.decode_header(data)
    out, offset = [], header.header_size
    try:
        while offset < header.end:
            record = L.decode_record(data, offset, header.end)
            out.append(record)
            offset += record.size
    except L.RecordError as exc:
        return str(exc)
    return out


def _via_reader(path: Path) -> tuple[list[L.Record] | str, Any]:
    try:
        with statmap.open(path) as reader:
            reader.poll()
            return list(reader.records), reader.template
    except statmap.FormatError as exc:
        return exc.problem, None


@pytest.fixture
def no_templates(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Readers opened now parse every file record by record (no template is left for others)."""
    monkeypatch.setattr(record_table, "TEMPLATE_MIN_RECORDS", 1 << 40)
    yield


def _text(directory: Path) -> str:
    with Collector(str(directory)) as collector:
        collection = collector.collect()
        exposer = Exposer(include_text=True)
        return exposer.openmetrics(collection) + exposer.prometheus(collection)


def test_same_spans_c_and_python_agree() -> None:
    try:
        from statmap import _cells  # the C module itself, whichever backend this run uses
    except ImportError:
        pytest.skip("needs the C cells built (python3 setup.py build_ext --inplace)")
    c_same = _cells._same_spans  # type: ignore[attr-defined]  # private: not in _cells.pyi
    rng = random.Random(12)
    for _ in range(3000):
        n = rng.randrange(0, 64)
        buffer = bytes(rng.randrange(3) for _ in range(n))
        base = rng.randrange(0, 8)
        reference = bytes(rng.randrange(3) for _ in range(rng.randrange(0, 64)))
        if rng.random() < 0.5:
            reference = buffer[base:] + reference[: rng.randrange(4)]
        pairs = []
        for _ in range(rng.randrange(0, 5)):
            a = rng.randrange(0, 72)
            pairs += [a, a + rng.randrange(-2, 12)]
        spans = array("Q", [x if x >= 0 else 2**64 - 1 for x in pairs])
        expected = record_table.same_spans(buffer, reference, base, spans)
        assert c_same(buffer, reference, base, spans) is expected
        assert c_same(bytearray(buffer), reference, base, spans) is expected
    with pytest.raises(TypeError):
        c_same(b"", b"")


def test_files_alike_share_records_and_collect_as_without_templates(tmp_path: Path) -> None:
    pubs = [_publish(tmp_path, value=v) for v in (1, 5, 9)]
    pubs.append(_publish(tmp_path, name="other"))  # the same records under another publisher name
    pubs.append(_publish(tmp_path, extra=7, value=2))  # the same records and then more: the prefix is shared
    try:
        files = [Path(p.path) for p in pubs]  # the longer file last: it repeats the others and grows
        readers = [statmap.open(p) for p in files]
        try:
            for reader in readers:
                reader.poll()
            templates = {id(r.template) for r in readers}
            assert None not in {r.template for r in readers}
            assert len(templates) == 1  # one parse from the start, the others recognised
            for path, reader in zip(files, readers, strict=True):
                assert reader.records == _full_parse(path)
            first = readers[0].records
            assert all(r.records[: len(first)] == first for r in readers)
            assert all(r.records[0] is first[0] for r in readers)  # shared, not parsed again
        finally:
            for reader in readers:
                reader.close()
        assert not record_table._decoded or all(e.refs > 0 for e in record_table._decoded.values())
        with_templates = _text(tmp_path)
        # and each file's collection alone, through a collector that already knows the others
        with Collector(str(tmp_path)) as c:
            c.collect()
            again = Exposer(include_text=True)
            collection = c.collect()
            assert again.openmetrics(collection) + again.prometheus(collection) == with_templates
    finally:
        for pub in pubs:
            pub.close()
    assert 'publisher="other"' in with_templates  # two publisher names: classified apart
    reference = _reference_text(tmp_path)
    assert with_templates == reference


def _reference_text(directory: Path) -> str:
    """The text of a collection where every file was parsed record by record."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(record_table, "TEMPLATE_MIN_RECORDS", 1 << 40)
        mp.setattr(record_table, "_decoded", {})  # no entry (and so no template) from before
        return _text(directory)


def _variant(src: Path, dst: Path, change: Any) -> Path:
    data = bytearray(src.read_bytes())
    change(data)
    dst.write_bytes(bytes(data))
    return dst


def _cases(known: Path, records: list[L.Record]) -> dict[str, Any]:
    data = known.read_bytes()
    k = len(records) // 2
    rec = records[k]
    label = data.index(b"v020", records[0].offset)

    def one_byte(d: bytearray) -> None:
        d[label + 3] = ord("x")  # v020 -> v02x: still a valid record, another series

    def bad_size(d: bytearray) -> None:
        d[rec.offset] = 3  # record size 3: not a multiple of 8

    def bad_value_offset(d: bytearray) -> None:
        d[rec.offset + 12] |= 1  # the value area's offset in the record: odd

    def bad_string(d: bytearray) -> None:
        d[label - 4] = 0xFF  # a string length that runs past the string table

    def short_end(d: bytearray) -> None:
        end = records[k].offset  # the end of records before record k: fewer records, all whole
        d[L.OFF_END : L.OFF_END + 8] = end.to_bytes(8, "little")

    def mid_record_end(d: bytearray) -> None:
        end = records[k].offset + 8  # the end of records inside record k
        d[L.OFF_END : L.OFF_END + 8] = end.to_bytes(8, "little")

    def values_only(d: bytearray) -> None:
        for r in records:
            if r.value_size == 8:
                d[r.value_offset : r.value_offset + 8] = (12345).to_bytes(8, "little")

    def first_record(d: bytearray) -> None:
        d[records[0].offset + 41] ^= 0x01  # a byte of the first record's metadata

    def last_record(d: bytearray) -> None:
        last = records[-1]
        d[last.value_offset - 1] ^= 0x20  # the last metadata byte of the last record

    return {
        "one_byte": one_byte,
        "bad_size": bad_size,
        "bad_value_offset": bad_value_offset,
        "bad_string": bad_string,
        "short_end": short_end,
        "mid_record_end": mid_record_end,
        "values_only": values_only,
        "first_record": first_record,
        "last_record": last_record,
    }


def test_altered_files_are_read_as_the_full_parser_reads_them(tmp_path: Path) -> None:
    """A metadata byte changed, corrupt records, a cut end of records, a truncated file: never the template's."""
    live = tmp_path / "live"
    live.mkdir()
    pub = _publish(live)
    pub.close()
    (known,) = _files(live)
    with statmap.open(known) as reader:  # holds the template while the variants are read
        reader.poll()
        template = reader.template
        records = list(reader.records)
        assert template is not None
        for name, change in _cases(known, records).items():
            path = _variant(known, tmp_path / f"{name}.statmap", change)
            got, used = _via_reader(path)
            expected = _full_parse(path)
            assert got == expected, name
            if name == "values_only":
                assert used is template, name  # the values differ, the metadata does not: recognised
            else:
                assert used is not template, name
        # a file cut short (its capacity beyond its size): the header check refuses it before any record
        data = known.read_bytes()
        cut = tmp_path / "truncated.statmap"
        cut.write_bytes(data[: records[len(records) // 2].offset])
        got, used = _via_reader(cut)
        assert isinstance(got, str) and "truncated" in got
        assert used is None


def test_collections_with_and_without_templates_write_the_same_bytes(tmp_path: Path) -> None:
    """Copies of one file with altered bytes, next to the original: the same text as record-by-record parsing."""
    pub = _publish(tmp_path)
    pub.close()
    (known,) = _files(tmp_path)
    with statmap.open(known) as reader:
        reader.poll()
        records = list(reader.records)
    for name in ("one_byte", "values_only", "short_end", "last_record"):
        change = _cases(known, records)[name]
        _variant(known, tmp_path / f"app.{900 + len(name)}.{name[:8]:0<8}.statmap", change)
    for i in range(3):
        shutil.copy(known, tmp_path / f"app.{800 + i}.copy{i:04d}.statmap")
    assert len(_files(tmp_path)) == 8
    assert _text(tmp_path) == _reference_text(tmp_path)


def test_a_new_worker_like_the_others_joins_a_running_collector(tmp_path: Path) -> None:
    """Worker churn: a file joining (and one leaving) a long-lived collector; its text equals a fresh parse's."""
    pubs = [_publish(tmp_path, value=v) for v in (1, 2)]
    try:
        with Collector(str(tmp_path)) as collector:
            exposer = Exposer(include_text=True)
            exposer.openmetrics(collector.collect())
            pubs.append(_publish(tmp_path, value=3))
            kept = exposer.openmetrics(collector.collect())
            assert kept == Exposer(include_text=True).openmetrics(_fresh(tmp_path))
            gone = pubs.pop(0)
            gone.close()
            os.unlink(gone.path)
            pubs.append(_publish(tmp_path, value=4, extra=3))
            kept = exposer.openmetrics(collector.collect())
            assert kept == Exposer(include_text=True).openmetrics(_fresh(tmp_path))
    finally:
        for pub in pubs:
            pub.close()


def _fresh(directory: Path) -> Any:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(record_table, "TEMPLATE_MIN_RECORDS", 1 << 40)
        mp.setattr(record_table, "_decoded", {})
        with Collector(str(directory)) as c:
            return c.collect()
