"""Golden files: the writer reproduces them byte for byte, the reader reads their values."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import statmap
from tests.vectors import generate

from .conftest import VECTORS

NAMES = sorted(generate.VECTORS)


def test_every_vector_is_committed() -> None:
    on_disk = sorted(p.stem for p in VECTORS.glob("*.statmap"))
    assert on_disk == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_writer_reproduces_vector(name: str, statdir: str) -> None:
    expected = (VECTORS / f"{name}.statmap").read_bytes()
    assert generate.build(name, statdir) == expected


@pytest.mark.parametrize("name", NAMES)
def test_reader_reads_vector(name: str) -> None:
    path = VECTORS / f"{name}.statmap"
    expected = json.loads((VECTORS / f"{name}.json").read_text())
    got = generate.expected_json(str(path))
    assert got == expected
    proc = expected["processes"][0]
    assert proc["state"] == ("closed" if name == "closed" else "dead")


@pytest.mark.parametrize("name", NAMES)
def test_show_json_matches_vector(name: str) -> None:
    path = VECTORS / f"{name}.statmap"
    out = subprocess.run(
        [sys.executable, "-m", "statmap", "show", "--json", str(path)], capture_output=True, text=True, check=True
    )
    doc = json.loads(out.stdout)
    doc["processes"][0]["path"] = Path(doc["processes"][0]["path"]).name
    assert doc == json.loads((VECTORS / f"{name}.json").read_text())


def test_vector_values_are_what_the_generator_wrote() -> None:
    """Spot checks against hand-computed values, so the JSON is not merely self-consistent."""

    def metrics(name: str) -> dict[str, Any]:
        doc = json.loads((VECTORS / f"{name}.json").read_text())
        return {m["name"] + json.dumps(m["labels"], sort_keys=True): m["value"] for m in doc["processes"][0]["metrics"]}

    assert metrics("counter") == {"requests{}": 42, "big{}": 2**60 + 1}
    assert metrics("float_counter") == {"cpu_seconds{}": 1.75}
    assert metrics("gauge") == {"temperature{}": -12.5, "in_flight{}": 2.0, "peak{}": 1.5e9}
    hist = metrics("histogram")["latency{}"]
    assert hist["sum"] == pytest.approx(5.565)
    buckets = [[0.01, 2], [0.1, 3], [1.0, 4], ["+Inf", 6]]
    assert hist == {"count": 6, "sum": hist["sum"], "buckets": buckets, "min": 0.005, "max": 3.0}
    assert metrics("summary") == {"payload{}": {"count": 3, "sum": 4446.0, "min": 100.0, "max": 4096.0}}
    assert metrics("text") == {"last_path{}": "/index", "motto{}": "naïve café é", "empty{}": ""}
    assert metrics("info") == {"build{}": {"version": "1.2.3", "commit": "abc123"}}
    assert metrics("enum") == {"state{}": "serving"}
    labels = metrics("labels")
    assert labels['http_requests{"method": "GET", "status": "200"}'] == 7
    assert labels['http_requests{"method": "GET", "status": "404"}'] == 1
    assert labels['http_requests{"method": "POST", "status": "500"}'] == 2
    assert len(metrics("grown")) == 60
    assert (VECTORS / "grown.statmap").stat().st_size == 8192
    log = metrics("histogram_log")["size{}"]
    assert log["count"] == 11 and log["sum"] == 375.0 and (log["min"], log["max"]) == (1.0, 144.0)


def test_log_bucket_flag_in_vector() -> None:
    with statmap.open(VECTORS / "histogram_log.statmap") as reader:
        (series,) = reader.snapshot().series
    assert series.value.log_buckets
    assert series.value.percentile(0.5) == pytest.approx(13, rel=0.1)


def test_layout_value_encoders_match_the_cells(statdir: str) -> None:
    """Issue 11: the value encodings live in _layout: its encoders give the cells' bytes, its decoders read them."""
    from statmap import _layout as L
    from statmap import cells

    pub = statmap.Publisher("enc", statdir)
    pub.counter("ints").inc(2**63 + 5)
    pub.counter("flts", float=True).inc(1.25)
    pub.gauge("g").set(-3.5)
    pub.summary("s").observe(7.5)
    hist = pub.histogram("h", buckets=(1.0, 10.0))
    for v in (0.5, 5, 50, 50):
        hist.observe(v)
    pub.text("t", size=16).set("héllo")
    with statmap.open(pub.path) as reader:
        reader.poll()
        buf = reader.buffer
        by_name = {r.spec.name: r for r in reader.records}

        def raw(name: str, n: int) -> bytes:
            off = by_name[name].value_offset
            return bytes(buf[off : off + n])

        def stable(name: str, size: int) -> bytes:
            data = cells.read_latch(buf, by_name[name].value_offset, size)
            assert data is not None
            return bytes(data)

        assert raw("ints", 8) == L.encode_counter(2**63 + 5, 0)
        assert raw("flts", 8) == L.encode_counter(1.25, L.FLAG_FLOAT)
        assert raw("g", 8) == L.encode_gauge(-3.5)
        assert stable("s", L.SUMMARY_COPY_SIZE) == L.encode_summary_copy(1, 7.5)
        copy = L.encode_histogram_copy(4, 105.5, (1, 1, 2))
        assert stable("h", L.histogram_copy_size(2)) == copy
        assert L.decode_counts_copy(copy) == (4, 105.5, 1, 1, 2)
        assert L.decode_counts_copy(L.encode_summary_copy(1, 7.5)) == (1, 7.5)
        cap = by_name["t"].spec.capacity
        text = L.encode_text_copy("héllo".encode(), cap)
        assert stable("t", L.text_copy_size(cap)) == text
        assert L.decode_text(text, cap) == "héllo".encode()
        # A latch at rest (the archive's values): sequence 0, both copies equal; readers take copy 0.
        latch = L.encode_latch(copy)
        assert len(latch) == L.value_size(L.MetricType.HISTOGRAM, 2, 0)
        assert cells.read_latch(bytearray(latch), 0, len(copy)) == copy
        # Bulk decoders: words of the mapping, f64 bit patterns, a record's extent.
        words = L.words_view(buf)
        assert words is not None and int(words[by_name["ints"].value_offset // 8]) == 2**63 + 5
        assert L.words_view(bytearray(12)) is None  # not whole words: no view
        bits = reader.load_words([by_name["flts"].value_offset, by_name["g"].value_offset])
        assert L.floats_from_bits(bits) == (1.25, -3.5)
        assert L.floats_from_bits([]) == ()
        record = by_name["h"]
        assert L.decode_record_extent(buf, record.offset) == (record.size, record.value_offset - record.offset)
    pub.close()
    # A closed file's header, as the archive writes it.
    ident = L.Identity(0, 0, bytes(16), bytes(range(16)), 5, "enc", "prog")
    head = L.decode_header(L.encode_header(ident, 4096, state=L.State.CLOSED, end=512, closed_ns=9))
    assert (head.state, head.capacity, head.end, head.closed_ns, head.identity) == (L.State.CLOSED, 4096, 512, 9, ident)
