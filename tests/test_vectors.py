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
    assert hist == {"count": 6, "sum": hist["sum"], "buckets": [[0.01, 2], [0.1, 3], [1.0, 4], ["+Inf", 6]]}
    assert metrics("summary") == {"payload{}": {"count": 3, "sum": 4446.0}}
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
    assert log["count"] == 11 and log["sum"] == 375.0


def test_log_bucket_flag_in_vector() -> None:
    with statmap.open(VECTORS / "histogram_log.statmap") as reader:
        (series,) = reader.snapshot().series
    assert series.value.log_buckets
    assert series.value.percentile(0.5) == pytest.approx(13, rel=0.1)
