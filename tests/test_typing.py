"""What a type checker sees of the model-class API: mypy (strict) run on real user code.

Each model-class attribute is typed as its live series (or a ``Labelled``
family of them when declared with labels), so a typo or a wrong method is a
type error before it is a run-time AttributeError.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.once  # mypy reads the code; nothing runs it

ROOT = Path(__file__).resolve().parent.parent

GOOD = """
from typing_extensions import assert_type

import statmap
from statmap.metrics import (
    CounterSeries, EnumSeries, FloatCounterSeries, GaugeSeries, HistogramSeries, InfoSeries,
    Labelled, SummarySeries, TextSeries,
)


class WebStats(statmap.Stats):
    requests = statmap.Counter("Requests served")
    seconds = statmap.Counter("CPU seconds", float=True, unit="seconds")
    errors = statmap.Counter("Failed requests", labels=("code",))
    in_flight = statmap.Gauge("Requests being served", aggregate="sum")
    latency = statmap.Histogram("Request latency", unit="seconds")
    by_route = statmap.Histogram("Latency by route", labels=("route",), buckets=statmap.LogBuckets())
    db = statmap.Timer("Database time")
    size = statmap.Summary("Response size", unit="bytes")
    last_path = statmap.Text("Last path served", size=128)
    phase = statmap.Enum("Phase", states=("starting", "serving"))
    build = statmap.Info("Build", values={"version": "1.0"})


def serve(directory: str) -> float:
    with WebStats("web", directory=directory) as stats:
        assert_type(stats, WebStats)
        assert_type(stats.requests, CounterSeries)
        assert_type(stats.seconds, FloatCounterSeries)
        assert_type(stats.errors, Labelled[CounterSeries])
        assert_type(stats.errors.labels(code="500"), CounterSeries)
        assert_type(stats.in_flight, GaugeSeries)
        assert_type(stats.latency, HistogramSeries)
        assert_type(stats.by_route.labels("/"), HistogramSeries)
        assert_type(stats.db, HistogramSeries)
        assert_type(stats.size, SummarySeries)
        assert_type(stats.last_path, TextSeries)
        assert_type(stats.phase, EnumSeries)
        assert_type(stats.build, InfoSeries)
        assert_type(WebStats.requests, statmap.Counter[CounterSeries])
        stats.requests.inc()
        stats.requests += 1
        stats.in_flight.set(3)
        stats.in_flight += 2
        stats.in_flight -= 0.5
        stats.seconds.inc(0.25)
        stats.errors.labels("500").inc()
        with stats.latency.time():
            pass
        stats.size.observe(512)
        stats.last_path.set("/index")
        stats.phase.state("serving")

        @stats.db.time()
        def query(n: int) -> int:
            return n

        assert_type(query(1), int)
        return stats.in_flight.get()


def procedural(pub: statmap.Publisher) -> None:
    jobs = statmap.Counter("Jobs done", labels=("queue",)).bind(pub, "jobs")
    assert_type(jobs, Labelled[CounterSeries])
    jobs.labels("high").inc()
    depth = statmap.Gauge("Jobs waiting", aggregate="max").bind(pub, "queue_depth")
    assert_type(depth, GaugeSeries)
    depth.set(12)
"""

BAD = """
import statmap


class WebStats(statmap.Stats):
    requests = statmap.Counter("Requests served")
    errors = statmap.Counter("Failed requests", labels=("code",))
    last_path = statmap.Text("Last path served")


stats = WebStats("web")
stats.requests.observe(1.0)
stats.errors.inc()
stats.last_path.set(3)
"""


def _mypy(tmp_path: Path, code: str) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("mypy", reason="mypy is not installed (pip install mypy)")
    src = tmp_path / "user_code.py"
    src.write_text(textwrap.dedent(code))
    cmd = [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--cache-dir", str(tmp_path / "cache")]
    return subprocess.run([*cmd, str(src)], capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_model_class_attributes_are_typed_as_their_series(tmp_path: Path) -> None:
    out = _mypy(tmp_path, GOOD)
    assert out.returncode == 0, out.stdout + out.stderr


def test_wrong_use_of_a_series_is_a_type_error(tmp_path: Path) -> None:
    out = _mypy(tmp_path, BAD)
    assert out.returncode == 1, out.stdout + out.stderr
    errors = [line for line in out.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 3, out.stdout
    assert '"Counter" has no attribute "observe"' in errors[0]
    assert 'has no attribute "inc"' in errors[1] and "Labelled" in errors[1]
    assert 'incompatible type "int"' in errors[2] and '"str"' in errors[2]
