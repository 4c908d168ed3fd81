"""The cells' bulk read functions (same behaviour in C and pure Python), and the C module, its
pure-Python twin, its stub and the format's layout agreeing."""

from __future__ import annotations

import ast
import importlib
import mmap
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import statmap
from statmap import _layout as L
from statmap import _pycells, cells


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


# -- The two implementations, the stub and the format agree -----------------


def _c_module() -> ModuleType:
    try:
        return importlib.import_module("statmap._cells")
    except ImportError:
        pytest.skip("needs the C cells built (python3 setup.py build_ext --inplace)")


def _stub_names() -> tuple[set[str], dict[str, set[str]]]:
    """The module-level names _cells.pyi declares, and each class's members."""
    tree = ast.parse((Path(statmap.__file__).parent / "_cells.pyi").read_text())
    names: set[str] = set()
    members: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            names.add(node.name)
            members[node.name] = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
        elif isinstance(node, ast.FunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names, members


def _members(cls: type) -> set[str]:
    """The names a class adds to object's, dunder methods but the in-place operators left out."""
    return {n for n in dir(cls) if not hasattr(object, n) and (not n.startswith("__") or n in ("__iadd__", "__isub__"))}


def test_c_module_pure_module_and_stub_export_the_same_names() -> None:
    c_cells = _c_module()
    c_names = {n for n in dir(c_cells) if not n.startswith("_")}
    stub_names, stub_members = _stub_names()
    assert set(_pycells.__all__) == c_names
    assert stub_names == c_names
    # nothing public defined in the pure module is missing from __all__
    defined = {
        n
        for n, v in vars(_pycells).items()
        if not n.startswith("_") and getattr(v, "__module__", None) == _pycells.__name__
    }
    assert defined <= set(_pycells.__all__)
    for name in sorted(stub_members):
        c_cls, py_cls = getattr(c_cells, name), getattr(_pycells, name)
        # the stub types every member of the C class, and only those
        assert _members(c_cls) == stub_members[name] - {"__init__"}, name
        # the pure class has every one of them; beyond them only private helpers
        assert _members(c_cls) <= _members(py_cls), name
        assert {n for n in _members(py_cls) - _members(c_cls) if not n.startswith("_")} == set(), name


def test_the_c_files_sizes_are_the_layouts() -> None:
    c_cells = _c_module()
    names = ["ALIGN", "VALUE_SEQ", "VALUE_COPIES", "SUMMARY_COPY_SIZE", "MAX_PARAMS", "MAX_TEXT_CAPACITY"]
    for module in (c_cells, _pycells):
        assert {n: getattr(module, n) for n in names} == {n: getattr(L, n) for n in names}, module.__name__


@pytest.mark.parametrize(
    ("mtype", "make", "params", "capacity"),
    [
        (L.MetricType.COUNTER, lambda b, o: cells.Counter(b, o), 0, 0),
        (L.MetricType.COUNTER, lambda b, o: cells.FloatCounter(b, o), 0, 0),
        (L.MetricType.GAUGE, lambda b, o: cells.Gauge(b, o), 0, 0),
        (L.MetricType.ENUM, lambda b, o: cells.Enum(b, o, 3), 0, 0),
        (L.MetricType.SUMMARY, lambda b, o: cells.Summary(b, o), 0, 0),
        (L.MetricType.HISTOGRAM, lambda b, o: cells.Histogram(b, o, ()), 0, 0),
        (L.MetricType.HISTOGRAM, lambda b, o: cells.Histogram(b, o, (1.0, 2.0, 5.0)), 3, 0),
        (L.MetricType.TEXT, lambda b, o: cells.Text(b, o, 0), 0, 0),
        (L.MetricType.TEXT, lambda b, o: cells.Text(b, o, 13), 0, 13),
        (L.MetricType.TEXT, lambda b, o: cells.Text(b, o, L.MAX_TEXT_CAPACITY), 0, L.MAX_TEXT_CAPACITY),
    ],
)
def test_each_cell_takes_the_value_size_the_layout_gives(
    mtype: int, make: Callable[[mmap.mmap, int], object], params: int, capacity: int
) -> None:
    size = L.value_size(mtype, params, capacity)
    if mtype in (L.MetricType.SUMMARY, L.MetricType.HISTOGRAM):
        size += L.EXTREMES_SIZE  # lifetime min and max after the latch (format 1.2)
    buf = mmap.mmap(-1, size + 64)
    make(buf, 64)  # ends exactly at the end of the buffer
    with pytest.raises(ValueError, match="does not fit"):
        make(buf, 72)  # one word past it


def test_text_capacity_limit_is_the_layouts() -> None:
    buf = mmap.mmap(-1, L.value_size(L.MetricType.TEXT, 0, L.MAX_TEXT_CAPACITY + 8))
    with pytest.raises(ValueError, match=f"0..{L.MAX_TEXT_CAPACITY} bytes"):
        cells.Text(buf, 0, L.MAX_TEXT_CAPACITY + 1)


@pytest.mark.parametrize(
    ("size", "make"),
    [
        (L.value_size(L.MetricType.SUMMARY, 0, 0) + L.EXTREMES_SIZE, lambda m, b: m.Summary(b, 0)),
        (L.value_size(L.MetricType.HISTOGRAM, 3, 0) + L.EXTREMES_SIZE, lambda m, b: m.Histogram(b, 0, (1.0, 2.0, 5.0))),
    ],
    ids=["summary", "histogram"],
)
def test_pure_observations_queued_while_a_write_is_under_way_land_like_direct_ones(
    size: int, make: Callable[[ModuleType, mmap.mmap], Any]
) -> None:
    """observe() has its own inlined fast path; the queued path (another thread or the code a
    signal handler interrupted holds the writer's token) must leave the same bytes, and both the
    same bytes as the C cells."""
    values: list[float] = [0.5, 3, 1.0, 7.5, 2.0, 0.25]  # exact sums: order cannot matter
    direct_buf, queued_buf, c_buf = mmap.mmap(-1, size), mmap.mmap(-1, size), mmap.mmap(-1, size)
    direct, queued = make(_pycells, direct_buf), make(_pycells, queued_buf)
    for v in values:
        direct.observe(v)
    queued._free.pop()  # a write is under way: every observation is queued
    for v in values[:-1]:
        queued.observe(v)
    assert queued.get()[0] == 0 and len(queued._queue) == len(values) - 1
    queued._free.append(True)
    queued.observe(values[-1])  # the next writer drains the queue
    assert not queued._queue
    assert bytes(queued_buf) == bytes(direct_buf)
    assert queued.get() == direct.get()
    c_cell = make(_c_module(), c_buf)
    for v in values:
        c_cell.observe(v)
    assert bytes(c_buf) == bytes(direct_buf)


@pytest.mark.parametrize(
    ("size", "make", "words"),
    [
        (L.value_size(L.MetricType.SUMMARY, 0, 0) + 16, lambda m, b: m.Summary(b, 0), (1, 3)),
        (L.value_size(L.MetricType.HISTOGRAM, 1, 0) + 16, lambda m, b: m.Histogram(b, 0, (1.0,)), (1, 3, 5, 7)),
    ],
    ids=["summary", "histogram"],
)
@pytest.mark.parametrize("seq", [0, 2**64 - 2, 2**64 - 1])
def test_counts_and_sequence_wrap_past_2_64_alike_in_both_backends(
    size: int, make: Callable[[ModuleType, mmap.mmap], Any], words: tuple[int, ...], seq: int
) -> None:
    """The pure observe() takes a shorter path unless a word would pass 2**64 - 1; the words wrap as
    the C cells' unsigned adds do (counts at the limit, the sequence word at its last values)."""
    bufs = {}
    for module in (_pycells, _c_module()):
        buf = mmap.mmap(-1, size)
        words_view = memoryview(buf).cast("Q")
        words_view[0] = seq
        for w in words:  # copy 0 and copy 1: count (and the first bucket) at the limit
            words_view[w] = 2**64 - 1
        cell = make(module, buf)
        cell.observe(0.5)
        cell.observe(0.25)
        bufs[module.__name__] = bytes(buf)
        words_view.release()
    assert bufs["statmap._pycells"] == bufs["statmap._cells"]
