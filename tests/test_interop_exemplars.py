"""Exemplar records (format 1.2, docs/format.md section 15) read by the C and Rust readers as by Python.

``statmap show --json`` prints no exemplars (they are not metrics), so ``statmap-cat --exemplars`` and
``statmap-read --exemplars`` add them to each process; the reference is Python's collection
(``collect(...).exemplars``, the latest per series and bucket). Corrupted copies of the golden vector
(value words included) must give the same exemplars, and the same rejected files, in the three readers.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

import statmap
from statmap.collect import collect

from .test_interop import CAT, RREAD, VECTORS, built, built_c, built_rust  # noqa: F401  (fixtures)

pytestmark = pytest.mark.external  # builds with make, cc and cargo

Row = tuple[str, tuple[tuple[str, str], ...], Any, Any, int, tuple[tuple[str, str], ...]]


def _num(x: float | None) -> Any:
    """A number as the readers' JSON prints it (non-finite ones as strings)."""
    if x is None or math.isfinite(x):
        return x
    return "NaN" if math.isnan(x) else ("+Inf" if x > 0 else "-Inf")


def python_exemplars(path: Path, scratch: Path) -> list[Row]:
    """The exemplars Python's collection finds in the file alone, as sorted rows."""
    scratch.mkdir()
    shutil.copy(path, scratch / path.name)
    rows = [
        (name, labels, _num(bound), _num(e.value), e.time_ns, e.labels)
        for (_pub, name, labels, bound), e in collect(str(scratch)).exemplars.items()
    ]
    return sorted(rows, key=repr)


def other_exemplars(tool: Path, paths: list[Path]) -> tuple[dict[str, list[Row]], str]:
    """Per path, the exemplars printed by ``tool --exemplars`` (the latest per key, as a collection keeps)."""
    proc = subprocess.run([str(tool), "--exemplars", *map(str, paths)], capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 1), f"{tool.name} crashed: rc={proc.returncode} {proc.stderr[-2000:]}"
    out: dict[str, list[Row]] = {}
    for p in json.loads(proc.stdout)["processes"]:
        latest: dict[Any, Row] = {}
        for e in p.get("exemplars", []):
            key = (e["name"], tuple(e["labels"].items()), e["bucket"])
            row = (*key, e["value"], e["time_ns"], tuple(e["exemplar_labels"].items()))
            if key not in latest or row[4] > latest[key][4]:
                latest[key] = row
        out[p["path"]] = sorted(latest.values(), key=repr)
    return out, proc.stdout


def test_golden_exemplars_read_alike(built: None, tmp_path: Path) -> None:  # noqa: F811
    path = VECTORS / "exemplars.statmap"
    want = python_exemplars(path, tmp_path / "py")
    assert len(want) == 3  # the counter's, and two buckets of the histogram (1.0 and +Inf)
    c, c_text = other_exemplars(CAT, [path])
    rs, rs_text = other_exemplars(RREAD, [path])
    assert c == rs == {str(path): want}
    assert c_text == rs_text  # the same bytes, too
    # without --exemplars, the JSON is statmap show --json's (exemplars are not metrics)
    plain = subprocess.run([str(CAT), "--json", str(path)], capture_output=True, text=True, check=True).stdout
    assert "exemplars" not in json.loads(plain)["processes"][0]


def test_mutated_exemplar_files_agree(built: None, tmp_path: Path) -> None:  # noqa: F811
    """Bytes changed anywhere in the exemplars vector (the exemplar texts included): the exemplars each
    reader finds agree with Python's; a malformed exemplar is no exemplar, never a rejected file."""
    rnd = random.Random(1515)
    source = (VECTORS / "exemplars.statmap").read_bytes()
    texts = [i for i in range(len(source)) if source[i : i + 1].isdigit() or source[i : i + 1] in b":,"]
    paths = []
    for k in range(300):
        data = bytearray(source)
        for _ in range(rnd.randint(1, 3)):
            # half the changes land in netstring text, where the exemplar decoding is checked
            at = rnd.choice(texts) if rnd.random() < 0.5 else rnd.randrange(len(data))
            data[at] = rnd.choice(b"0123456789:,.-eE x") if rnd.random() < 0.5 else rnd.randrange(256)
        p = tmp_path / f"m{k:04d}.statmap"
        p.write_bytes(bytes(data))
        paths.append(p)
    c, _ = other_exemplars(CAT, paths)
    rs, _ = other_exemplars(RREAD, paths)
    bad = []
    found = 0
    for k, p in enumerate(paths):
        want = python_exemplars(p, tmp_path / f"py{k:04d}")
        found += len(want)
        if c.get(str(p), []) != want or rs.get(str(p), []) != want:
            bad.append((p.name, want, c.get(str(p)), rs.get(str(p))))
    assert found > 0
    assert bad == [], bad[:3]


def test_live_python_exemplars_read_alike(built: None, statdir: str, tmp_path: Path) -> None:  # noqa: F811
    """Exemplars a Python publisher writes (labels, float counters, every bucket, non-ASCII and long
    values, a replaced exemplar) are read by C and Rust as Python's collection reads them."""
    with statmap.Publisher("live", statdir) as pub:
        c = pub.counter("requests", "Requests", labels=("route",))
        f = pub.counter("work", "Work done", unit="seconds", float=True)
        h = pub.histogram("latency", "Latency", buckets=(0.001, 0.1, 1.0))
        c.labels("/a").inc(exemplar={"trace_id": "first"})
        c.labels("/a").inc(3, exemplar={"trace_id": "second", "user": "ünï"})  # replaces the first
        c.labels("/b").inc(exemplar={"trace_id": "é" * 60})
        f.inc(0.125, exemplar={"k": 'quote " and \\ and\nnewline'})
        for v, t in ((0.0005, "tiny"), (0.05, "mid"), (0.5, "big"), (1e300, "huge"), (-2.0, "neg")):
            h.observe(v, exemplar={"trace_id": t})
        path = Path(pub.path)
        want = python_exemplars(path, tmp_path / "py")
        assert len(want) == 2 + 1 + 4  # two routes, the float counter, buckets 0.001, 0.1, 1.0 and +Inf
        c_rows, c_text = other_exemplars(CAT, [path])
        rs_rows, rs_text = other_exemplars(RREAD, [path])
        assert c_rows == rs_rows == {str(path): want}
        assert c_text == rs_text
