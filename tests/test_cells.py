"""The cells' bulk read functions the collector sums with (same behaviour in C and pure Python)."""

from __future__ import annotations

import mmap

import pytest

import statmap
from statmap import _layout as L
from statmap import cells


def publisher_with_histograms(statdir: str, name: str, values: list[float]) -> statmap.Publisher:
    pub = statmap.Publisher(name, statdir)
    h = pub.histogram("h", "H", buckets=(1, 2))
    s = pub.summary("s", "S")
    for v in values:
        h.observe(v)
        s.observe(v)
    return pub


def test_sum_latches_across_files(statdir: str) -> None:
    pubs = [publisher_with_histograms(statdir, f"p{i}", [0.5 * i, 1.5, 3.0 + i]) for i in range(5)]
    maps = []
    for pub in pubs:
        with open(pub.path, "rb") as f:
            maps.append(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
    with statmap.open(pubs[0].path) as reader:
        records = [s.record for s in reader.snapshot().series]
    offsets = [r.value_offset for r in records]
    sizes = [L.histogram_copy_size(2), L.SUMMARY_COPY_SIZE]
    hist, summ = cells.sum_latches(maps, offsets, sizes)  # type: ignore[misc]
    all_values = [v for i in range(5) for v in (0.5 * i, 1.5, 3.0 + i)]
    assert hist[0] == 15 and hist[1] == pytest.approx(sum(all_values))
    assert list(hist[2:]) == [sum(v <= 1 for v in all_values), sum(1 < v <= 2 for v in all_values), 5]
    assert summ == (15, hist[1])
    for pub in pubs:
        pub.remove()


def test_sum_latches_refuses_a_histogram_whose_count_disagrees(statdir: str) -> None:
    buf = mmap.mmap(-1, 4096)
    size = L.histogram_copy_size(1)
    cells.store_u64(buf, 8, 3)  # copy 0: count 3, buckets 1 + 1
    cells.store_u64(buf, 24, 1)
    cells.store_u64(buf, 32, 1)
    with pytest.raises(ValueError, match="bucket counts do not sum"):
        cells.sum_latches([buf], [0], [size])
    with pytest.raises(ValueError):
        cells.sum_latches([buf], [4088], [size])  # runs past the buffer
    with pytest.raises(ValueError):
        cells.sum_latches([buf], [0], [12])  # not a copy size


def test_sum_words_is_exact_past_64_bits() -> None:
    bufs = [mmap.mmap(-1, 64) for _ in range(3)]
    for b in bufs:
        cells.store_u64(b, 0, 2**64 - 1)
        cells.store_u64(b, 8, 5)
    assert cells.sum_words(bufs, [0, 8]) == [3 * (2**64 - 1), 15]
    with pytest.raises(ValueError):
        cells.sum_words(bufs, [60])
