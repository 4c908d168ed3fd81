"""A real Prometheus with exemplar storage scrapes ``statmap serve`` (OpenMetrics) and keeps statmap's exemplars:
its ``/api/v1/query_exemplars`` gives back the trace ids the program attached (docs/format.md section 15)."""

from __future__ import annotations

import json
import os
import time
import urllib.parse
import urllib.request
from typing import Any

import pytest

import statmap

from .test_prometheus import PROMETHEUS, TOKEN, prometheus  # noqa: F401 - the fixture
from .test_server_support import Server, wait_for

pytestmark = [
    pytest.mark.external,
    pytest.mark.once,
    pytest.mark.skipif(PROMETHEUS is None, reason="needs the prometheus binary (Debian package prometheus)"),
]


def _exemplars(base: str, promql: str, start: float) -> list[dict[str, Any]]:
    params = {"query": promql, "start": f"{start:.3f}", "end": f"{time.time() + 60:.3f}"}
    with urllib.request.urlopen(base + "/api/v1/query_exemplars?" + urllib.parse.urlencode(params), timeout=10) as r:
        doc = json.load(r)
    assert doc["status"] == "success", doc
    return doc["data"]  # type: ignore[no-any-return]


def _trace_ids(found: list[dict[str, Any]]) -> dict[tuple[str, ...], list[tuple[str, float]]]:
    """(series name, le) -> [(trace_id, value)] in Prometheus' order (by time)."""
    out: dict[tuple[str, ...], list[tuple[str, float]]] = {}
    for series in found:
        labels = series["seriesLabels"]
        key = (labels["__name__"], labels.get("le", ""))
        out.setdefault(key, []).extend((e["labels"]["trace_id"], float(e["value"])) for e in series["exemplars"])
    return out


def test_prometheus_stores_statmap_exemplars(statdir: str, prometheus: Any) -> None:  # noqa: F811
    pub = statmap.Publisher("exemplary", statdir)
    jobs = pub.counter("jobs", "Jobs done")
    latency = pub.histogram("latency", "Latency", unit="seconds", buckets=(0.1, 1.0))
    jobs.inc(3, exemplar={"trace_id": "aaaa0001"})
    latency.observe(0.5, exemplar={"trace_id": "bbbb0001"})
    latency.observe(0.05)
    start = time.time() - 5
    server = Server(statdir, "--token", TOKEN, env=dict(os.environ))
    try:
        query = prometheus(f"127.0.0.1:{server.port}", "--enable-feature=exemplar-storage")
        base = query.base

        def stored(want: dict[tuple[str, ...], str]) -> bool:
            got = _trace_ids(_exemplars(base, '{__name__=~"jobs_total|latency_seconds_bucket"}', start))
            return all(key in got and got[key][-1][0] == trace for key, trace in want.items())

        wait_for(
            lambda: stored({("jobs_total", ""): "aaaa0001", ("latency_seconds_bucket", "1.0"): "bbbb0001"}),
            timeout=60,
            what="Prometheus to store the first exemplars",
        )
        got = _trace_ids(_exemplars(base, "jobs_total", start))
        assert got[("jobs_total", "")][-1] == ("aaaa0001", 3.0)
        # A newer exemplar replaces the old one in the file; Prometheus adds it to the series' exemplars.
        jobs.inc(exemplar={"trace_id": "aaaa0002"})
        latency.observe(7.0, exemplar={"trace_id": "cccc0001"})
        wait_for(
            lambda: stored({("jobs_total", ""): "aaaa0002", ("latency_seconds_bucket", "+Inf"): "cccc0001"}),
            timeout=60,
            what="Prometheus to store the newer exemplars",
        )
        got = _trace_ids(_exemplars(base, '{__name__=~"jobs_total|latency_seconds_bucket"}', start))
        assert got[("jobs_total", "")][-1] == ("aaaa0002", 1.0)
        assert got[("latency_seconds_bucket", "+Inf")][-1] == ("cccc0001", 7.0)
        assert [t for t, _ in got[("latency_seconds_bucket", "1.0")]] == ["bbbb0001"]  # no repeats
        assert ("latency_seconds_bucket", "0.1") not in got
        assert query("sum(jobs_total)")[0]["value"][1] == "4"
    finally:
        code, _, err = server.stop()
        pub.remove()
        assert code == 0, err
