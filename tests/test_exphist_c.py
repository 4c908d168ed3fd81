"""The C library writes exponential histograms (format 1.2, docs/format.md section 14) byte for byte
as the Python cells do: the same observation stream gives the same value area (latch word, both copies),
and statmap reads the C file as it reads a Python publisher's file of the same stream."""

from __future__ import annotations

import math
import random
import subprocess
from pathlib import Path

import pytest

import statmap
from statmap import _layout as L
from statmap import _pycells

from .test_interop import CDIR, built_c  # noqa: F401  (fixture)

pytestmark = pytest.mark.external  # builds the C library with make and cc

EXPW = CDIR / "build" / "statmap-exp-writer"


def _stream(rnd: random.Random, n: int) -> list[float]:
    return [
        rnd.choice(
            [
                0.0,
                -0.0,
                2.0 ** rnd.randint(-1074, 1023),
                rnd.lognormvariate(0, rnd.choice([1, 5, 30])),
                -rnd.paretovariate(0.5),
                math.inf,
                -math.inf,
                5e-324,
                rnd.uniform(-1, 1),
                1e-3,
            ]
        )
        for _ in range(n)
    ]


def _c_file(exe: Path, directory: Path, name: str, m: int, zt: float, ms: int, values: list[float]) -> str:
    text = "".join(f"{v.hex() if math.isfinite(v) else v}\n" for v in values)
    proc = subprocess.run(
        [str(exe), str(directory), name, str(m), zt.hex(), str(ms)], input=text, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def _value_area(path: str) -> tuple[bytes, object]:
    with statmap.open(path) as reader:
        (series,) = reader.snapshot().series
        start, size = series.record.value_offset, series.record.value_size
        value = series.value
    return Path(path).read_bytes()[start : start + size], value


def _python(m: int, zt: float, ms: int, values: list[float]) -> bytearray:
    buf = bytearray(8 + 2 * L.exp_copy_size(m))
    h = _pycells.ExpHistogram(buf, 0, m, zt, ms)  # type: ignore[no-untyped-call]
    for v in values:
        h.observe(v)
    return buf


def check_streams(exe: Path, tmp_path: Path, trials: int) -> None:
    rnd = random.Random(1515)
    for trial in range(trials):
        m = rnd.choice([1, 2, 3, 8, 20, 160])
        zt = rnd.choice([0.0, 1e-3])
        ms = rnd.choice([-4, 0, 3, 8, 20])
        values = _stream(rnd, rnd.randint(0, 300))
        area, value = _value_area(_c_file(exe, tmp_path / f"c{trial}", "c", m, zt, ms, values))
        assert area == bytes(_python(m, zt, ms, values)), (trial, m, zt, ms)
        with statmap.Publisher("py", str(tmp_path / f"py{trial}")) as pub:
            h = pub.histogram(
                "latency", "Request latency", buckets=statmap.Exponential(m, zero_threshold=zt, max_scale=ms)
            )
            for v in values:
                h.observe(v)
            _area, py_value = _value_area(pub.path)
        assert repr(value) == repr(py_value), trial


def test_c_writes_the_python_cells_bytes(built_c: None, tmp_path: Path) -> None:  # noqa: F811
    check_streams(EXPW, tmp_path, 60)


def test_c_writer_refuses_bad_arguments(built_c: None, tmp_path: Path) -> None:  # noqa: F811
    for m, zt, ms in ((0, 0.0, 8), (2049, 0.0, 8), (4, -1.0, 8), (4, math.inf, 8), (4, 0.0, 21), (4, 0.0, -5)):
        proc = subprocess.run(
            [str(EXPW), str(tmp_path), "bad", str(m), repr(zt), str(ms)], input="", capture_output=True, text=True
        )
        assert proc.returncode == 1 and "max_buckets must be" in proc.stderr, (m, zt, ms, proc.stderr)
    cmd = [str(EXPW), str(tmp_path), "nan", "4", "0", "8"]
    nan = subprocess.run(cmd, input="nan\n", capture_output=True, text=True)
    assert nan.returncode == 1 and "refused" in nan.stderr  # NaN is refused, as by Python


@pytest.mark.slow
@pytest.mark.once
def test_c_exp_writer_under_address_and_undefined_sanitizers(built_c: None, tmp_path: Path) -> None:  # noqa: F811
    out = subprocess.run(["make", "asan"], cwd=CDIR, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    check_streams(CDIR / "build" / "asan" / "statmap-exp-writer", tmp_path, 30)
