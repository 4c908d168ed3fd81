"""OTLP export of exponential histograms: two writer processes at different scales, merged, pushed
by ``statmap push --otlp`` and decoded by the receiver with opentelemetry-proto.

The expected buckets are computed here from the observations alone, with the
exact rule of docs/format.md section 14 for scales <= 0 (the merge is at scale 0).
"""

from __future__ import annotations

import glob
import json
import math
import os
import subprocess
import sys
from collections import Counter

import pytest

import statmap

from .conftest import run_python

pytest.importorskip("opentelemetry.sdk.metrics", reason="needs the otel extra (pip install 'statmap[otel]')")
pytest.importorskip("opentelemetry.proto", reason="needs opentelemetry-proto (the otel extra)")

from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

from .otlp_receiver import Receiver, metrics

pytestmark = pytest.mark.once  # the values come from the collector, tested under both cells

WRITER = """
import json, sys, statmap
directory, slots, max_scale, values = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
with statmap.Publisher("app", directory) as p:
    h = p.histogram("delay", "Delay", unit="seconds",
                    buckets=statmap.Exponential(slots, zero_threshold=0.001, max_scale=max_scale))
    for v in values:
        h.observe(v)
"""


def index_at_scale_0(a: float) -> int:
    """Section 14's exact index for scale 0: bucket i holds (2**i, 2**(i+1)]."""
    m, e = math.frexp(a)
    return e - 2 if m == 0.5 else e - 1


def test_exponential_histogram_arrives_as_otlp_exponential_histogram(statdir: str) -> None:
    fine = [1 + i * 15 / 200 for i in range(200)] + [0.0, 0.0005]  # 1..16 and two zero-bucket ones
    wide = [0.002 * 1.1**i for i in range(150)] + [-(3 * 1.3**i) for i in range(20)]  # 0.002..3200, -3..-440
    run_python(WRITER, statdir, "40", "3", json.dumps(fine))
    run_python(WRITER, statdir, "40", "8", json.dumps(wide))
    scales = set()
    for path in glob.glob(os.path.join(statdir, "app.*.statmap")):
        with statmap.open(path) as reader:
            (series,) = reader.snapshot().series
            scales.add(series.value.scale)
    assert scales == {3, 0}, "the two writers should have ended at different scales"

    with Receiver() as r:
        done = subprocess.run(
            [sys.executable, "-m", "statmap", "push", "--otlp", r.url, "--dir", statdir],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        (request,) = r.requests
    metric = metrics(request)[("app", "delay")]
    assert metric.WhichOneof("data") == "exponential_histogram" and metric.unit == "s"
    eh = metric.exponential_histogram
    assert eh.aggregation_temporality == AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    (point,) = eh.data_points
    observed = fine + wide
    assert point.scale == 0  # the coarser of the two, exactly
    assert point.count == len(observed)
    assert point.sum == pytest.approx(math.fsum(observed), rel=1e-12)
    assert (point.min, point.max) == (min(observed), max(observed))
    assert point.zero_count == sum(1 for v in observed if abs(v) <= 0.001)
    assert 0 < point.start_time_unix_nano < point.time_unix_nano

    def expected(sign: int) -> tuple[int, list[int]]:
        got = Counter(index_at_scale_0(abs(v)) for v in observed if sign * v > 0.001)
        lo, hi = min(got), max(got)
        return lo, [got[i] for i in range(lo, hi + 1)]

    assert (point.positive.offset, list(point.positive.bucket_counts)) == expected(1)
    assert (point.negative.offset, list(point.negative.bucket_counts)) == expected(-1)
