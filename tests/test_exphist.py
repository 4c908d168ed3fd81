"""Exponential (native) histograms, format 1.2: cells, accuracy, merging, reading, exposition, archive."""

from __future__ import annotations

import math
import os
import random

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import statmap
from statmap import _layout as L
from statmap import _pycells, cells, expose
from statmap._pycells_exp import exp_index
from statmap.collect import Collector
from statmap.values import ExpHistogramValue

from .conftest import run_python

try:
    from statmap import _cells as c_cells
except ImportError:  # pragma: no cover - the C cells are built in CI
    c_cells = None  # type: ignore[assignment]


def _cell(impl: object, m: int, zt: float = 0.0, max_scale: int = 8) -> tuple[bytearray, object]:
    buf = bytearray(8 + 2 * L.exp_copy_size(m))
    return buf, impl.ExpHistogram(buf, 0, m, zt, max_scale)  # type: ignore[attr-defined]


def _value(values: list[float], m: int, zt: float = 0.0, max_scale: int = 8) -> ExpHistogramValue:
    """Observed by the cells in use, read back from the bytes as a reader does."""
    buf, h = _cell(cells, m, zt, max_scale)
    for v in values:
        h.observe(v)  # type: ignore[attr-defined]
    copy = bytes(buf[8 : 8 + L.exp_copy_size(m)])  # copy 0: the writer is idle, both copies agree
    got = ExpHistogramValue.from_copy(copy, m, zt)
    assert got == ExpHistogramValue.from_cell(h.get(), zt)  # type: ignore[attr-defined]
    return got


def _fits(observed: list[float], m: int, zt: float) -> bool:
    """Whether each sign's range fits ``m`` buckets at the coarsest scale (else its edge bucket is shared)."""
    for sign in (1, -1):
        idx = [exp_index(min(abs(v), 1.7976931348623157e308), L.EXP_MIN_SCALE) for v in observed if sign * v > zt]
        if idx and max(idx) - min(idx) >= m:
            return False
    return True


def _check_percentiles(value: ExpHistogramValue, observed: list[float], zt: float) -> None:
    exact = sorted(observed)
    bound = value.relative_error
    for q in (0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 1.0):
        rank = max(1, math.ceil(q * len(exact)))
        truth = exact[rank - 1]
        got = value.percentile(q)
        if abs(truth) <= zt:
            assert abs(got) <= zt, (q, got, truth)
        elif math.isinf(truth):
            continue
        else:
            assert abs(got - truth) <= abs(truth) * bound * (1 + 1e-9), (q, got, truth, value.scale)


def test_c_and_pure_cells_write_the_same_bytes() -> None:
    if c_cells is None:
        pytest.skip("needs the C cells built (python3 setup.py build_ext --inplace)")
    rnd = random.Random(15)
    for trial in range(150):
        m = rnd.choice([1, 2, 3, 8, 20, 160])
        zt = rnd.choice([0.0, 1e-3])
        ms = rnd.choice([-4, 0, 3, 8, 20])
        b1, h1 = _cell(_pycells, m, zt, ms)
        b2, h2 = _cell(c_cells, m, zt, ms)
        for _ in range(rnd.randint(0, 150)):
            v = rnd.choice(
                [
                    0.0,
                    2.0 ** rnd.randint(-1074, 1023),
                    rnd.lognormvariate(0, rnd.choice([1, 5, 30])),
                    -rnd.paretovariate(0.5),
                    math.inf,
                    -math.inf,
                    5e-324,
                    rnd.uniform(-1, 1),
                ]
            )
            h1.observe(v)  # type: ignore[attr-defined]
            h2.observe(v)  # type: ignore[attr-defined]
            assert b1 == b2, (trial, v)
        assert repr(h1.get()) == repr(h2.get())  # type: ignore[attr-defined]


def test_buckets_scale_min_max_and_zero() -> None:
    v = _value([1.0, 1.5, 2.0, 3.0, 0.0005, -0.25, 10.0, 100.0, -4.0, 0.0], 8, 0.001, 3)
    assert (v.count, v.min, v.max, v.zero_count, v.scale) == (10, -4.0, 100.0, 2, 0)
    assert v.positive == (-1, (1, 2, 1, 0, 1, 0, 0, 1))  # (0.5,1], (1,2] x2, (2,4], (8,16], (64,128]
    assert v.negative == (-3, (1, 0, 0, 0, 1))  # 0.25 in (0.125,0.25], 4 in (2,4]
    assert v.sum == pytest.approx(113.2505)
    # exact powers of two are upper bounds at every scale
    for scale in (8, 3, 1, 0):
        w = _value([4.0], 4, 0.0, scale)
        assert w.ordered()[0][1] == 4.0
    with pytest.raises(ValueError, match="NaN"):
        _cell(cells, 4)[1].observe(math.nan)  # type: ignore[attr-defined]
    assert math.isnan(_value([], 4).percentile(0.5))


def test_downscale_keeps_every_count_and_fits_the_slots() -> None:
    observed = [10.0**k for k in range(-30, 31)] + [-(10.0**k) for k in range(-5, 5)]
    v = _value(observed, 20)
    assert len(v.positive[1]) <= 20 and len(v.negative[1]) <= 20
    assert sum(v.positive[1]) + sum(v.negative[1]) + v.zero_count == v.count == len(observed)
    _check_percentiles(v, observed, 0.0)


finite = st.floats(min_value=-1e300, max_value=1e300, allow_nan=False, allow_subnormal=False)
heavy = st.builds(lambda u, a: (1 - u) ** (-1 / a), st.floats(0, 0.999999), st.sampled_from([0.3, 1.0, 2.5]))
samples = st.lists(st.one_of(finite, heavy, heavy.map(lambda x: -x), st.just(0.0)), min_size=1, max_size=300)


@settings(max_examples=60, deadline=None)
@given(samples, st.sampled_from([4, 20, 160]), st.sampled_from([0.0, 1e-6]), st.sampled_from([8, 3, 0]))
def test_percentiles_within_the_documented_error(observed: list[float], m: int, zt: float, ms: int) -> None:
    assume(_fits(observed, m, zt))  # 132 slots hold every f64 at scale -4; fewer: a range up to 2**(16 * m)
    _check_percentiles(_value(observed, m, zt, ms), observed, zt)


@settings(max_examples=40, deadline=None)
@given(samples, samples, st.sampled_from([(8, 2), (20, 160), (160, 160)]))
def test_merges_of_different_scales_are_exact(a: list[float], b: list[float], slots: tuple[int, int]) -> None:
    assume(_fits(a, slots[0], 0.0) and _fits(b, slots[1], 0.0))
    va, vb = _value(a, slots[0], 0.0, 8), _value(b, slots[1], 0.0, 5)
    merged = va + vb
    assert merged.scale == min(va.scale, vb.scale)
    assert merged == vb + va
    # exact: the merge equals one histogram that saw everything, downscaled to the same scale
    both = _value(a + b, 2000, 0.0, merged.scale)
    common = min(both.scale, merged.scale)
    d, e = both.downscaled(common), merged.downscaled(common)
    assert (d.positive, d.negative, d.zero_count, d.count) == (e.positive, e.negative, e.zero_count, e.count)
    assert (merged.min, merged.max) == (min(a + b), max(a + b))
    _check_percentiles(merged, a + b, 0.0)
    assert merged.since(va).count == vb.count


def test_processes_of_different_scales_merge_expose_and_archive(statdir: str) -> None:
    code = """
import sys, statmap
p = statmap.Publisher("app", sys.argv[1])
h = p.histogram("lat", "Latency", unit="seconds", buckets=statmap.Exponential(20, max_scale=int(sys.argv[2])))
for i in range(1, 1001):
    h.observe(float(sys.argv[3]) * i)
p.close()
"""
    run_python(code, statdir, "8", "0.001")
    run_python(code, statdir, "2", "-1")
    collection = Collector(statdir).collect()
    (fam,) = [f for f in collection.families if f.name == "lat"]
    assert fam.type == "exphistogram"
    (sample,) = fam.samples
    value = sample.value
    assert value.count == 2000 and (value.min, value.max) == (-1000.0, 1.0)
    observed = [0.001 * i for i in range(1, 1001)] + [-1.0 * i for i in range(1, 1001)]
    _check_percentiles(value, observed, 0.0)
    text = expose.openmetrics(collection)
    assert 'lat_seconds_bucket{le="+Inf"} 2000' in text and "# TYPE lat_seconds histogram" in text
    # classic buckets are cumulative and increasing
    rows = [line for line in text.splitlines() if line.startswith("lat_seconds_bucket")]
    les = [float(line.split('le="')[1].split('"')[0]) for line in rows]
    assert les == sorted(les) and len(les) == len(set(les))
    # the dead processes' files fold into the archive without changing the total
    collector = Collector(statdir, clean=True, clean_older_than=0)
    again = next(f for f in collector.collect().families if f.name == "lat").samples[0].value
    assert again == value
    assert sorted(n for n in os.listdir(statdir) if n.startswith("app.")) == ["app.archive.statmap"]


def test_reader_reports_a_corrupt_scale(statdir: str) -> None:
    with statmap.Publisher("bad", statdir) as pub:
        pub.histogram("h", "H", buckets=statmap.Exponential(4)).observe(3.0)
        with open(pub.path, "r+b") as f:
            data = bytearray(f.read())
        with statmap.open(pub.path) as reader:
            (series,) = reader.snapshot().series
            start = series.record.value_offset + 8
        for copy in (0, 1):
            at = start + copy * L.exp_copy_size(4) + 8 * L.EXP_SCALE
            data[at : at + 8] = (99).to_bytes(8, "little")
        bad = os.path.join(statdir, "bad2.1.00000000.statmap")
        with open(bad, "wb") as f:
            f.write(data)
        os.chmod(bad, 0o600)
        with statmap.open(bad) as reader, pytest.raises(statmap.FormatError, match="scale 99"):
            reader.snapshot()


def test_declaration_checks() -> None:
    with pytest.raises(ValueError):
        statmap.Histogram("x", buckets=statmap.Exponential(0))
    with pytest.raises(ValueError):
        statmap.Histogram("x", buckets=statmap.Exponential(8, zero_threshold=-1))
    with pytest.raises(ValueError):
        statmap.Histogram("x", buckets=statmap.Exponential(8, max_scale=21))


def _exact_index(x: float, scale: int) -> int:
    """The largest i with base**i < x, base = 2**(2**-scale), in exact integer arithmetic."""
    num, den = x.as_integer_ratio()  # x = num / 2**t
    t = den.bit_length() - 1
    p = num ** (1 << scale) if scale >= 0 else num  # x**(2**scale) = p / 2**(t * 2**scale) for scale >= 0

    def below(i: int) -> bool:  # base**i < x, i.e. 2**(i * 2**-scale) < x
        if scale >= 0:
            e = i + t * (1 << scale)  # 2**i < p / 2**(t * 2**scale)  <=>  2**e < p
        else:
            e = (i << -scale) + t  # 2**(i * 2**-scale) < num / 2**t  <=>  2**e < num
        return e < 0 or (1 << e) < (p if scale >= 0 else num)

    i = math.floor(math.log2(x) * 2.0**scale)
    while not below(i):
        i -= 1
    while below(i + 1):
        i += 1
    return i


def _near_boundaries(scale: int) -> list[float]:
    """Doubles on and next to bucket boundaries (exact ones are powers of two), over the whole exponent range."""
    out: list[float] = []
    rnd = random.Random(scale)
    n = 1 << max(scale, 0)
    for k in sorted({0, 1, n - 1, n // 2, *(rnd.randrange(n) for _ in range(12))}):
        for shift in (-1070, -300, -20, -1, 0, 1, 7, 64, 1000):
            x = math.ldexp(2.0 ** (k / n), shift)
            down = up = x
            out.append(x)
            for _ in range(2):
                down, up = math.nextafter(down, 0.0), math.nextafter(up, math.inf)
                out += [down, up]
    return [x for x in out if 0 < x < math.inf]


@pytest.mark.parametrize("scale", [-4, -2, -1, 0, 1, 2, 3, 5, 7, 8])
def test_boundary_values_land_in_the_exact_bucket(scale: int) -> None:
    impls = [_pycells] + ([c_cells] if c_cells is not None else [])
    for x in [*_near_boundaries(scale), 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308]:
        want = _exact_index(x, scale)
        assert exp_index(x, scale) == want, (x.hex(), scale)
        for impl in impls:  # the cells, C and pure, place it there too
            h = _cell(impl, 1, 0.0, scale)[1]
            h.observe(x)  # type: ignore[attr-defined]
            assert h.get()[6] == (want, (1,)), (impl, x.hex(), scale)  # type: ignore[attr-defined]


def test_boundary_values_above_scale_8_are_within_one_bucket() -> None:
    for scale in (9, 10, 12):
        for x in _near_boundaries(4)[::5]:
            assert abs(exp_index(x, scale) - _exact_index(x, scale)) <= 1, (x.hex(), scale)


def test_threshold_table_is_exact() -> None:
    """Each T[K] is the smallest double above 2**(K/256), checked in integers (scripts/gen-exp-bounds)."""
    from statmap import _exp_bounds

    def above(f: float, k: int) -> bool:  # f > 2**(k/256), f in [1, 2)
        return bool(int(f * 2**52) ** 256 > 2 ** (k + 52 * 256))

    assert len(_exp_bounds.T) == 257 and _exp_bounds.T[256] == 2.0
    for k in range(1, 256):
        t = _exp_bounds.T[k]
        assert above(t, k) and not above(math.nextafter(t, 0.0), k), k
    for c, j in enumerate(_exp_bounds.J0):
        assert j == sum(1 for k in range(1, 256) if _exp_bounds.T[k] <= 1 + c / 512), c
