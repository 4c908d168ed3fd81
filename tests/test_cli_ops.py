"""The operator commands: ls, show --aggregate, export, clean, top (plain mode)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import statmap

pytestmark = pytest.mark.once  # the commands' output: the values come from the collector, tested under both cells


def statmap_cmd(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "statmap", *args], capture_output=True, text=True, timeout=120, env=dict(os.environ)
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture
def workers(statdir: str):  # type: ignore[no-untyped-def]
    pubs = []
    for n in (1, 2):
        pub = statmap.Publisher("web", statdir)
        pub.counter("requests", "Requests", labels=("code",)).labels("200").inc(10 * n)
        pub.histogram("latency", "Latency", buckets=(0.1, 1.0), unit="seconds").observe(0.05 * n)
        pub.gauge("busy", "Busy workers", aggregate="sum").set(1)
        pubs.append(pub)
    pubs[1].close()
    yield pubs
    for pub in pubs:
        pub.close()


def test_ls(statdir: str, workers: list[statmap.Publisher]) -> None:
    out = statmap_cmd("ls", "--dir", statdir).stdout.splitlines()
    assert out[0].split() == ["NAME", "PID", "STATE", "AGE", "SIZE", "SERIES", "FILE"]
    rows = sorted(line.split()[2] for line in out[1:])
    assert rows == ["alive", "closed"]
    assert all(line.split()[0] == "web" and line.split()[1] == str(os.getpid()) for line in out[1:])
    assert all(line.split()[5] == "3" for line in out[1:])
    doc = json.loads(statmap_cmd("ls", "--dir", statdir, "--json").stdout)
    assert sorted(f["state"] for f in doc) == ["alive", "closed"]


def test_show_aggregate(statdir: str, workers: list[statmap.Publisher]) -> None:
    text = statmap_cmd("show", "--aggregate", "--dir", statdir).stdout
    assert "processes: 1 alive, 1 closed" in text
    assert '{code="200"}  30' in text
    doc = json.loads(statmap_cmd("show", "--aggregate", "--json", "--dir", statdir, "--match", "^req").stdout)
    assert [m["name"] for m in doc["metrics"]] == ["requests"]
    assert doc["metrics"][0]["series"] == [{"labels": {"code": "200"}, "value": 30}]
    assert doc["errors"] == []


def test_show_match_without_aggregate(statdir: str, workers: list[statmap.Publisher]) -> None:
    doc = json.loads(statmap_cmd("show", "--json", "--dir", statdir, "--match", "lat").stdout)
    assert {m["name"] for p in doc["processes"] for m in p["metrics"]} == {"latency"}


def test_export_formats(statdir: str, workers: list[statmap.Publisher]) -> None:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    om = statmap_cmd("export", "--dir", statdir).stdout
    names = {f.name for f in text_string_to_metric_families(om)}
    assert names == {"requests", "latency_seconds", "busy"}
    prom = statmap_cmd("export", "--dir", statdir, "--format", "prometheus").stdout
    assert 'requests_total{code="200"} 30' in prom
    doc = json.loads(statmap_cmd("export", "--dir", statdir, "--format", "json").stdout)
    assert {m["name"] for m in doc["metrics"]} == {"requests", "latency", "busy"}


def test_clean_command(statdir: str, workers: list[statmap.Publisher]) -> None:
    closed = workers[1].path
    dry = statmap_cmd("clean", "--dir", statdir, "--dry-run").stdout
    assert f"would fold {os.path.basename(closed)}" in dry and os.path.exists(closed)
    out = statmap_cmd("clean", "--dir", statdir).stdout
    assert f"folded {os.path.basename(closed)}" in out and not os.path.exists(closed)
    assert "web.archive.statmap" in out
    doc = json.loads(statmap_cmd("show", "--aggregate", "--json", "--dir", statdir).stdout)
    requests = next(m for m in doc["metrics"] if m["name"] == "requests")
    assert requests["series"][0]["value"] == 30
    assert "nothing to clean" in statmap_cmd("clean", "--dir", statdir).stdout
    ls = statmap_cmd("ls", "--dir", statdir).stdout
    assert "archive of 1" in ls


def test_top_plain_mode(statdir: str, workers: list[statmap.Publisher]) -> None:
    out = statmap_cmd("top", "--dir", statdir, "--count", "2", "--interval", "0.1", "--sort", "value").stdout
    blocks = [b for b in out.split("\n\n") if b.strip()]
    assert len(blocks) == 2
    assert "processes: 1 alive, 1 closed" in blocks[0]
    line = next(x for x in blocks[1].splitlines() if x.startswith('requests{code="200"}'))
    assert line.split()[1:3] == ["counter", "0"]  # rate over the interval: nothing happened
    assert line.split()[-1] == "30"


def test_top_shows_dead_and_corrupt_warnings(statdir: str) -> None:
    code = "import os, sys, statmap; statmap.Publisher('web', sys.argv[1]).counter('n').inc(); os._exit(0)"
    subprocess.run([sys.executable, "-c", code, statdir], check=True, timeout=60)
    with open(os.path.join(statdir, "web.1.00000000.statmap"), "wb") as f:
        f.write(b"garbage!" * 64)
    result = statmap_cmd("top", "--dir", statdir, "--count", "1", check=False)
    assert "1 dead process file(s)" in result.stdout and "1 corrupt file(s)" in result.stdout
    assert statmap_cmd("ls", "--dir", statdir, check=False).returncode == 1
