"""Interoperability: the C library (clients/c) and the Rust reader (clients/rust),
both written from docs/format.md, agree with the Python implementation.

- every golden file reads identically (byte for byte) in Python, C and Rust,
  and so do thousands of mutated copies (same files reported corrupt, same
  series from the others);
- a live Python writer updating flat out is read by C and Rust with zero torn
  reads, and all three agree once it stops;
- a live C writer is read by ``statmap show --json``, ``statmap.open`` and
  ``statmap.collect`` with exact agreement and zero torn reads;
- C and Python processes under one publisher name aggregate together.

The C library and the Rust binary are built once per session. A missing
toolchain (make and a C compiler; cargo; clang for the fuzzer) skips the
tests that need it with a reason saying so, which fails the run under
STATMAP_REQUIRE_DEPS=1 (CI); a failed build is always a failure.
"""

from __future__ import annotations

import glob
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import statmap
import statmap.collect

from .conftest import SCALE

pytestmark = pytest.mark.external  # builds with make, cc and cargo; the fuzzer needs clang

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "tests" / "vectors"
CDIR = ROOT / "clients" / "c"
RUSTDIR = ROOT / "clients" / "rust"
CAT = CDIR / "build" / "statmap-cat"
CWRITER = CDIR / "build" / "statmap-writer"
CTEST = CDIR / "build" / "statmap-test"
RREAD = RUSTDIR / "target" / "release" / "statmap-read"
GOLDEN = sorted(p.stem for p in VECTORS.glob("*.statmap"))
# Vectors with format 1.2 records (exponential histograms): C and Rust read them; their
# mutants (value words included) get a test of their own.
NEWER = {"exphistogram"}


def _cargo() -> str:
    found = shutil.which("cargo") or str(Path.home() / ".cargo" / "bin" / "cargo")
    if not os.access(found, os.X_OK):
        pytest.skip("needs cargo to build clients/rust (Debian package cargo, or rustup)")
    return found


def _run_build(cmd: list[str], cwd: Path) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        pytest.fail(f"build failed: {' '.join(cmd)} in {cwd}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")


@pytest.fixture(scope="session")
def built_c() -> None:
    """Builds the C library and its programs (a failed build fails loudly)."""
    if not shutil.which("make") or not shutil.which("cc"):
        pytest.skip("needs make and a C compiler (cc) to build clients/c (Debian packages make, gcc)")
    _run_build(["make", "all"], CDIR)
    for exe in (CAT, CWRITER, CTEST):
        assert exe.exists(), f"{exe} was not built"


@pytest.fixture(scope="session")
def built_rust() -> None:
    """Builds the Rust reader (a failed build fails loudly)."""
    _run_build([_cargo(), "build", "--release", "--offline", "--quiet"], RUSTDIR)
    assert RREAD.exists(), f"{RREAD} was not built"


@pytest.fixture(scope="session")
def built(built_c: None, built_rust: None) -> None:
    """Both other readers, for the tests where Python, C and Rust must agree."""


def test_rust_unit_tests(built_rust: None) -> None:
    """The Rust crate's own tests (liveness by identity where locks do not work; exponential histogram checks)."""
    proc = subprocess.run(
        [_cargo(), "test", "--release", "--offline"], cwd=RUSTDIR, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "identity_fallback_tells_live_from_dead ... ok" in proc.stdout, proc.stdout
    assert "exp_copy_checks_and_negative_offsets ... ok" in proc.stdout, proc.stdout


# ---------------------------------------------------------------------------
# helpers


def py_show(paths: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "statmap", "show", "--json", *paths],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def c_show(paths: list[str], cwd: Path | None = None, repeat: int = 1) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CAT), "--json", "--repeat", str(repeat), *paths], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def rust_show(paths: list[str], cwd: Path | None = None, repeat: int = 1) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(RREAD), "--json", "--repeat", str(repeat), *paths], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def json_docs(text: str) -> Iterator[Any]:
    """The JSON documents printed one after another (``--repeat``)."""
    dec = json.JSONDecoder()
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return
        doc, pos = dec.raw_decode(text, pos)
        yield doc


def without_problems(doc: dict[str, Any]) -> dict[str, Any]:
    """The error messages are free text; only which files failed must agree."""
    out = dict(doc)
    if "errors" in out:
        out["errors"] = sorted(e["path"] for e in out["errors"])
    return out


def value_of(proc: dict[str, Any], name: str) -> Any:
    (value,) = [m["value"] for m in proc["metrics"] if m["name"] == name]
    return value


OBS = (0.5, 1.5, 3.0, 10.0)
PREFIX = (0.0, 0.5, 2.0, 5.0)


def expected_text(i: int) -> str:
    return f"{i}:" + "x" * (i % 50) + f":{i}"


def check_self(metrics: list[dict[str, Any]]) -> list[str]:
    """Problems in one process's self-checking values (see clients/c/statmap-writer.c)."""
    by = {m["name"]: m["value"] for m in metrics}
    problems = []
    h = by["latency"]
    if h is None:
        return ["latency unreadable"]
    c = h["count"]
    if h["sum"] != 15.0 * (c // 4) + PREFIX[c % 4]:
        problems.append(f"latency sum {h['sum']} for count {c}")
    cum, want = 0, []
    for i in range(4):
        cum += c // 4 + (1 if i < c % 4 else 0)
        want.append(cum)
    if [b[1] for b in h["buckets"]] != want:
        problems.append(f"latency buckets {h['buckets']} for count {c}")
    s = by["average"]
    if s is None or s["sum"] != 2.0 * s["count"]:
        problems.append(f"average {s}")
    t = by["status"]
    if t is None:
        problems.append("status unreadable")
    elif t != "":
        head = t.partition(":")[0]
        if not head.isdigit() or t != expected_text(int(head)):
            problems.append(f"status {t!r}")
    return problems


PY_WRITER = r"""
import sys, time, statmap

class W(statmap.Stats):
    requests = statmap.Counter("Requests handled", labels=["worker"])
    bytes = statmap.Counter("Bytes sent", float=True, unit="bytes")
    temperature = statmap.Gauge("Last iteration, as a gauge", aggregate="max")
    latency = statmap.Histogram("Observations 0.5, 1.5, 3, 10 in turn", buckets=(1, 2, 5), unit="seconds")
    average = statmap.Summary("Observations of 2.0")
    status = statmap.Text("Self-checking text", size=80)
    phase = statmap.Enum("Iteration modulo 3", states=["start", "run", "stop"])
    build = statmap.Info("Build information", values={"version": "1.0", "lang": "c"})

directory, publisher, worker, mode, amount = sys.argv[1:6]
w = W(publisher, directory=directory)
req = w.requests.labels(worker)
print("path", w.path, flush=True)
obs = (0.5, 1.5, 3.0, 10.0)
states = ("start", "run", "stop")
i = 0
deadline = time.monotonic() + float(amount) if mode == "--seconds" else None
while (i < int(amount)) if deadline is None else (time.monotonic() < deadline):
    i += 1
    req.inc()
    w.bytes.inc(0.5)
    w.temperature.set(i)
    w.latency.observe(obs[(i - 1) % 4])
    w.average.observe(2.0)
    w.status.set(f"{i}:" + "x" * (i % 50) + f":{i}")
    w.phase.set(states[i % 3])
print("done", i, flush=True)
sys.stdin.read()
"""


class Proc:
    """A writer process that prints ``path PATH`` first and waits for stdin to close at the end."""

    def __init__(self, cmd: list[str]) -> None:
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.p.stdout is not None
        line = self.p.stdout.readline()
        if not line.startswith("path "):
            self.p.kill()
            raise AssertionError(f"writer did not start: {line!r} {self.p.stderr.read() if self.p.stderr else ''}")
        self.path = line.split(" ", 1)[1].strip()

    def wait_done(self, timeout: float = 120) -> int:
        assert self.p.stdout is not None
        line = self.p.stdout.readline()
        assert line.startswith("done "), f"writer failed: {line!r}"
        return int(line.split()[1])

    def finish(self) -> None:
        if self.p.stdin and not self.p.stdin.closed:
            self.p.stdin.close()
        try:
            self.p.wait(timeout=30)
        finally:
            if self.p.poll() is None:
                self.p.kill()
                self.p.wait()
        assert self.p.returncode == 0, self.p.stderr.read() if self.p.stderr else ""


def py_writer(directory: str, publisher: str, worker: str, *amount: str) -> Proc:
    return Proc([sys.executable, "-c", PY_WRITER, directory, publisher, worker, *amount])


def c_writer(directory: str, publisher: str, worker: str, *args: str) -> Proc:
    return Proc([str(CWRITER), directory, publisher, worker, *args])


# ---------------------------------------------------------------------------
# golden files


def test_golden_files_exist() -> None:
    assert GOLDEN, "no golden files under tests/vectors/"


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_file_reads_identically(built: None, name: str) -> None:
    f = [f"{name}.statmap"]
    py, c, rs = py_show(f, VECTORS), c_show(f, VECTORS), rust_show(f, VECTORS)
    assert py.returncode == 0, py.stderr
    assert c.returncode == 0, c.stderr + c.stdout
    assert rs.returncode == 0, rs.stderr + rs.stdout
    golden = json.loads((VECTORS / f"{name}.json").read_text())
    assert json.loads(py.stdout) == golden
    assert json.loads(c.stdout) == golden
    assert json.loads(rs.stdout) == golden
    # The three print the same bytes, too (Python's float repr and JSON escapes).
    assert c.stdout == py.stdout
    assert rs.stdout == py.stdout


def _mutants(tmp: Path, count: int, seed: int, names: list[str] | None = None) -> list[str]:
    rnd = random.Random(seed)
    sources = [(VECTORS / f"{n}.statmap").read_bytes() for n in names or GOLDEN if names or n not in NEWER]
    paths = []
    for k in range(count):
        data = bytearray(rnd.choice(sources))
        how = rnd.random()
        if how < 0.1:
            data = data[: rnd.randrange(len(data) + 1)]  # truncation
        else:
            # flips concentrated on the header and the first records, where the checks are
            limit = len(data) if how > 0.6 else min(len(data), 1024)
            for _ in range(rnd.randint(1, 4)):
                at = rnd.randrange(limit)
                if rnd.random() < 0.5:
                    data[at] = rnd.randrange(256)
                else:
                    data[at] ^= 1 << rnd.randrange(8)
        p = tmp / f"m{k:05d}.statmap"
        p.write_bytes(bytes(data))
        paths.append(p.name)
    return paths


def test_mutated_golden_files_agree(built: None, tmp_path: Path) -> None:
    """Corrupted copies of the golden files: the three readers reject the same files
    and read the same values from the rest (none crashes)."""
    names = _mutants(tmp_path, 1500, seed=20240601)
    py, c, rs = py_show(names, tmp_path), c_show(names, tmp_path), rust_show(names, tmp_path)
    for proc, who in ((py, "python"), (c, "c"), (rs, "rust")):
        assert proc.returncode in (0, 1), f"{who} crashed: rc={proc.returncode} {proc.stderr[-2000:]}"
    dp, dc, dr = (without_problems(json.loads(x.stdout)) for x in (py, c, rs))
    corrupt = len(dp.get("errors", []))
    assert 0 < corrupt < len(names)

    def disagreements(other: dict[str, Any]) -> list[str]:
        bad = sorted(set(dp.get("errors", [])) ^ set(other.get("errors", [])))
        po = {p["path"]: p for p in dp["processes"]}
        for p in other["processes"]:
            if p["path"] in po and po[p["path"]] != p:
                bad.append(p["path"])
        return bad

    assert disagreements(dc) == [], "C and Python disagree on these files"
    assert disagreements(dr) == [], "Rust and Python disagree on these files"


def test_mutated_exphistogram_files_agree(built: None, tmp_path: Path) -> None:
    """The 1.2 vector corrupted anywhere (value words included): Python, C and Rust reject the same
    files (bad scale, lengths, counts that do not add up) and read the same values from the rest."""
    names = _mutants(tmp_path, 600, seed=15, names=sorted(NEWER))
    py, c, rs = py_show(names, tmp_path), c_show(names, tmp_path), rust_show(names, tmp_path)
    for proc, who in ((py, "python"), (c, "c"), (rs, "rust")):
        assert proc.returncode in (0, 1), f"{who} crashed: rc={proc.returncode} {proc.stderr[-2000:]}"
    dp, dc, dr = (without_problems(json.loads(x.stdout)) for x in (py, c, rs))
    assert 0 < len(dp.get("errors", [])) < len(names)
    po = {p["path"]: p for p in dp["processes"]}
    for other, who in ((dc, "C"), (dr, "Rust")):
        assert sorted(dp.get("errors", [])) == sorted(other.get("errors", [])), f"{who} rejects other files"
        assert [p["path"] for p in other["processes"] if po.get(p["path"]) != p] == [], f"{who} reads other values"


def _align8(n: int) -> int:
    return (n + 7) & ~7


def _record(
    rtype: int,
    name: bytes,
    *,
    labels: tuple[bytes, ...] = (),
    params: tuple[float, ...] = (),
    extra: tuple[bytes, ...] = (),
    flags: int = 0,
    agg: int = 0,
    cap: int = 0,
    value: bytes = b"",
) -> bytes:
    """One record, encoded from docs/format.md section 4.1 (independently of both implementations)."""
    strings = b"".join(struct.pack("<I", len(x)) + x for x in (name, b"help", b"", *labels, *extra))
    voff = _align8(40 + 8 * len(params) + len(strings))
    head = struct.pack(
        "<IHHHHIIIIIII",
        voff + len(value),
        rtype,
        flags,
        agg,
        0,
        voff,
        len(value),
        len(labels) // 2,
        len(params),
        3 + len(labels) + len(extra),
        len(strings),
        cap,
    )
    body = head + b"".join(struct.pack("<d", p) for p in params) + strings
    return body + bytes(voff - len(body)) + value


def _file(
    records: list[bytes],
    *,
    magic: bytes = b"STATMAP1",
    major: int = 1,
    minor: int = 0,
    state: int = 1,
    header_size: int = 256,
    hflags: int = 0,
    publisher: bytes = b"crafted",
    program: bytes = b"prog",
    trailing: int = 0,
) -> bytes:
    recs = b"".join(records)
    end = header_size + len(recs)
    capacity = max(4096, (end + 4095) // 4096 * 4096)
    head = bytearray(header_size)
    struct.pack_into("<8sHHIQQQQQQ", head, 0, magic, major, minor, header_size, state, capacity, end, hflags, 4242, 7)
    head[64:80] = bytes(range(16))
    head[80:96] = bytes(range(16, 32))
    struct.pack_into("<QQ", head, 96, 1_700_000_000_000_000_000, 0)
    head[112 : 112 + len(publisher)] = publisher
    head[176 : 176 + len(program)] = program
    data = bytes(head) + recs
    return data + bytes(capacity - len(data) + trailing)


def _u64(v: int) -> bytes:
    return struct.pack("<Q", v)


def _latch(copy: bytes, seq: int = 2) -> bytes:
    return _u64(seq) + copy + copy


def _text(t: bytes, cap: int, length: int | None = None) -> bytes:
    copy = _u64(len(t) if length is None else length) + t + bytes(_align8(cap) - len(t))
    return _latch(copy)


CRAFTED: dict[str, bytes] = {
    "plain": _file([_record(1, b"c", value=_u64(5))]),
    "newer_minor_and_header_flags": _file([_record(1, b"c", value=_u64(5))], minor=7, hflags=0xFF00),
    "larger_header": _file([_record(1, b"c", value=_u64(5))], header_size=264),
    "unknown_record_type_skipped": _file([_record(99, b"future", value=_u64(1)), _record(1, b"c", value=_u64(5))]),
    "bad_utf8_everywhere": _file(
        [
            _record(1, b"c\xff", labels=(b"k\xe0\x80", b"v\xed\xa0\x80x\xf0\x9f\x98"), value=_u64(1)),
            _record(5, b"t", cap=16, value=_text(b"a\xc3\x28b\xf4\x90\x80\x80", 16)),
            _record(6, b"i", extra=(b"k", b"\xc0\xaf")),
        ],
        publisher=b"p\xfe",
        program=b"\xe2\x82",
    ),
    "control_and_astral_characters": _file(
        [_record(6, b"i", extra=(b"k", '\x00\x01\x1f\x7f\u2028\U0001f600"\\/'.encode()))]
    ),
    "duplicate_label_names": _file([_record(1, b"c", labels=(b"a", b"1", b"b", b"2", b"a", b"3"), value=_u64(1))]),
    "nan_and_infinite_gauges": _file(
        [
            _record(2, b"nan", value=struct.pack("<d", float("nan"))),
            _record(2, b"inf", value=struct.pack("<d", float("-inf"))),
            _record(1, b"f", flags=1, value=struct.pack("<d", 1e300)),
        ]
    ),
    "big_endian_magic": _file([_record(1, b"c", value=_u64(5))], magic=b"1PAMTATS"),
    "bad_magic": _file([_record(1, b"c", value=_u64(5))], magic=b"STATMAPX"),
    "major_2": _file([_record(1, b"c", value=_u64(5))], major=2),
    "state_0_not_ready": _file([_record(1, b"c", value=_u64(5))], state=0),
    "state_3": _file([_record(1, b"c", value=_u64(5))], state=3),
    "size_not_multiple_of_8": _file([_record(1, b"c", value=_u64(5))], trailing=3),
    "text_longer_than_capacity": _file([_record(5, b"t", cap=8, value=_text(b"abcdefgh", 8, length=9))]),
    "histogram_count_mismatch": _file(
        [_record(3, b"h", params=(1.0,), value=_latch(_u64(3) + struct.pack("<d", 1.0) + _u64(1) + _u64(1)))]
    ),
    "histogram_bounds_not_increasing": _file([_record(3, b"h", params=(2.0, 1.0), value=_latch(bytes(8 * 5)))]),
    "enum_index_out_of_range": _file([_record(7, b"e", extra=(b"a", b"b"), value=_u64(2))]),
    "closed": _file([_record(1, b"c", value=_u64(5))], state=2),
    "same_name_different_types": _file([_record(1, b"c", value=_u64(5)), _record(2, b"c", value=_u64(0))]),
    "same_series_twice": _file(
        [_record(1, b"c", labels=(b"a", b"1"), value=_u64(5)), _record(1, b"c", labels=(b"a", b"1"), value=_u64(6))]
    ),
    "histogram_without_bounds": _file([_record(3, b"h", value=_latch(_u64(1) + struct.pack("<d", 2.0) + _u64(1)))]),
    "text_capacity_0": _file([_record(5, b"t", value=_latch(_u64(0)))]),
    "latch_seq_odd": _file(
        [_record(4, b"s", value=_u64(3) + _u64(1) + struct.pack("<d", 1.0) + _u64(2) + struct.pack("<d", 4.0))]
    ),
}


def test_crafted_files_agree(built: None, tmp_path: Path) -> None:
    """Edge cases built byte by byte from docs/format.md: the three readers agree."""
    names = []
    for name, data in CRAFTED.items():
        (tmp_path / f"{name}.statmap").write_bytes(data)
        names.append(f"{name}.statmap")
    py, c, rs = py_show(names, tmp_path), c_show(names, tmp_path), rust_show(names, tmp_path)
    dp, dc, dr = (without_problems(json.loads(x.stdout)) for x in (py, c, rs))
    assert dc == dp
    assert dr == dp
    assert c.stdout.replace("\n", "") and rs.returncode == py.returncode == c.returncode == 1
    errors = set(dp["errors"])
    assert errors == {
        f"{n}.statmap"
        for n in (
            "big_endian_magic",
            "bad_magic",
            "major_2",
            "state_3",
            "size_not_multiple_of_8",
            "text_longer_than_capacity",
            "histogram_count_mismatch",
            "histogram_bounds_not_increasing",
        )
    }
    states = {p["path"]: p["state"] for p in dp["processes"]}
    assert states["state_0_not_ready.statmap"] == "not-ready"
    assert states["closed.statmap"] == "closed"


# ---------------------------------------------------------------------------
# live processes


@pytest.mark.parametrize("reader", ["c", "rust"])
def test_live_python_writer_read_by_c_and_rust(built: None, statdir: str, reader: str) -> None:
    w = py_writer(statdir, "pylive", "py", "--seconds", "4")
    try:
        show = c_show if reader == "c" else rust_show
        reads = torn = 0
        last_count = -1
        rounds = 0
        while w.p.poll() is None and rounds < 40:
            rounds += 1
            out = show([w.path], repeat=200)
            assert out.returncode == 0, out.stdout[-2000:] + out.stderr
            for doc in json_docs(out.stdout):
                (proc,) = doc["processes"]
                if proc["state"] == "not-ready":
                    continue
                reads += 1
                problems = check_self(proc["metrics"])
                count = value_of(proc, "requests")
                if count < last_count:
                    problems.append("counter went backwards")
                last_count = count
                torn += bool(problems)
                assert not problems, problems
            if reads >= 2000:
                break
        final = w.wait_done()
        assert reads >= 200 and torn == 0
        # Once the writer stopped, all three read exactly the same thing.
        py, c, rs = py_show([w.path]), c_show([w.path]), rust_show([w.path])
        assert json.loads(c.stdout if reader == "c" else rs.stdout) == json.loads(py.stdout)
        assert c.stdout == py.stdout and rs.stdout == py.stdout
        (proc,) = json.loads(py.stdout)["processes"]
        assert proc["state"] == "alive"
        assert value_of(proc, "requests") == final
        print(f"{reader}: {reads} reads of a live Python writer ({statmap.backend} cells), {torn} torn")
    finally:
        w.finish()


def test_live_c_writer_read_by_python(built_c: None, statdir: str) -> None:
    w = c_writer(statdir, "clive", "c1", "--forever")
    try:
        reader = statmap.open(w.path)
        reads = torn = 0
        deadline = time.monotonic() + 3
        last = -1
        while time.monotonic() < deadline:
            doc = reader.snapshot().to_json()
            reads += 1
            problems = check_self(doc["metrics"])
            if value_of(doc, "requests") < last:
                problems.append("counter went backwards")
            last = value_of(doc, "requests")
            torn += bool(problems)
            assert not problems, problems
        reader.close() if hasattr(reader, "close") else None
        assert reads > 100 and torn == 0
        print(f"python ({statmap.backend}): {reads} reads of a live C writer, {torn} torn")
    finally:
        w.p.terminate()
        w.p.wait(timeout=30)


def test_c_writer_agrees_exactly_with_python_show_and_collect(built_c: None, statdir: str) -> None:
    w = c_writer(statdir, "cexact", "c1", "--iterations", "12345")
    try:
        assert w.wait_done() == 12345
        py, c, rs = py_show([w.path]), c_show([w.path]), rust_show([w.path])
        assert py.returncode == 0, py.stderr
        assert c.stdout == py.stdout and rs.stdout == py.stdout
        (proc,) = json.loads(py.stdout)["processes"]
        assert proc["state"] == "alive" and proc["name"] == "cexact" and proc["program"] == "statmap-writer"
        values = {m["name"]: m["value"] for m in proc["metrics"]}
        assert values == {
            "requests": 12345,
            "bytes": 12345 * 0.5,
            "temperature": 12345.0,
            "latency": {
                "count": 12345,
                "sum": 15.0 * (12345 // 4) + PREFIX[12345 % 4],
                "buckets": [[1.0, 3087], [2.0, 6173], [5.0, 9259], ["+Inf", 12345]],
                "min": 0.5,
                "max": 10.0,
            },
            "average": {"count": 12345, "sum": 24690.0, "min": 2.0, "max": 2.0},
            "status": expected_text(12345),
            "phase": "start",
            "build": {"version": "1.0", "lang": "c"},
        }
        assert proc["metrics"][0]["labels"] == {"worker": "c1"}
        col = statmap.collect.collect(statdir)
        assert not col.errors
        assert col.value("requests", {"worker": "c1"}) == 12345
        assert col.value("temperature") == 12345.0
        assert col.value("bytes") == 6172.5
        h = col.value("latency")
        assert (h.count, h.sum) == (12345, 15.0 * (12345 // 4) + PREFIX[12345 % 4])
    finally:
        w.finish()
    # closing: the C writer marks the file closed
    w2 = c_writer(statdir, "cexact", "c2", "--iterations", "3", "--close")
    w2.wait_done()
    w2.finish()
    (proc,) = json.loads(py_show([w2.path]).stdout)["processes"]
    assert proc["state"] == "closed"
    assert json.loads(c_show([w2.path]).stdout) == json.loads(py_show([w2.path]).stdout)


def test_c_and_python_processes_aggregate(built_c: None, statdir: str) -> None:
    """Several C writers beside Python writers under one publisher name."""
    cw = [c_writer(statdir, "mixed", f"c{k}", "--iterations", str(1000 * (k + 1))) for k in range(3)]
    pw = [py_writer(statdir, "mixed", f"py{k}", "--iterations", str(700 + k)) for k in range(2)]
    try:
        counts = {f"c{k}": w.wait_done() for k, w in enumerate(cw)}
        counts.update({f"py{k}": w.wait_done() for k, w in enumerate(pw)})
        total = sum(counts.values())
        col = statmap.collect.collect(statdir)
        assert not col.errors, col.errors
        assert col.counts().get("alive") == 5
        for worker, n in counts.items():
            assert col.value("requests", {"worker": worker}, publisher="mixed") == n
        assert col.value("bytes", publisher="mixed") == total * 0.5
        assert col.value("temperature", publisher="mixed") == float(max(counts.values()))  # aggregate max
        h = col.value("latency", publisher="mixed")
        assert h.count == total
        assert h.sum == sum(15.0 * (n // 4) + PREFIX[n % 4] for n in counts.values())
        s = col.value("average", publisher="mixed")
        assert (s.count, s.sum) == (total, 2.0 * total)
        export = subprocess.run(
            [sys.executable, "-m", "statmap", "export", "--dir", statdir], capture_output=True, text=True, timeout=120
        )
        assert export.returncode == 0, export.stderr
        for worker, n in counts.items():
            assert f'requests_total{{worker="{worker}"}} {n}' in export.stdout
        assert f"latency_seconds_count {total}" in export.stdout
    finally:
        for w in cw + pw:
            w.finish()


# ---------------------------------------------------------------------------
# the C library's own tests, sanitizers and fuzzing


def test_c_unit_tests(built_c: None) -> None:
    out = subprocess.run([str(CTEST)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 failed" in out.stdout


@pytest.mark.slow
@pytest.mark.once
def test_c_under_address_and_undefined_sanitizers(built_c: None) -> None:
    if os.environ.get("STATMAP_PURE") == "1":
        pytest.skip("the C library does not depend on the Python backend: sanitizers run in the STATMAP_PURE=0 pass")
    out = subprocess.run(["make", "asan"], cwd=CDIR, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert "0 failed" in out.stdout


@pytest.mark.slow
@pytest.mark.once
def test_fuzz_c_reader(built_c: None) -> None:
    """libFuzzer on the C reader for a bounded time (60 s x STATMAP_SCALE)."""
    if os.environ.get("STATMAP_PURE") == "1":
        pytest.skip("fuzzing runs once, in the STATMAP_PURE=0 pass")
    if not shutil.which("clang"):
        pytest.skip("needs clang for the libFuzzer harness (Debian package clang)")
    runtime = subprocess.run(["clang", "--print-runtime-dir"], capture_output=True, text=True).stdout.strip()
    if not glob.glob(os.path.join(runtime, "libclang_rt.fuzzer*.a")):
        pytest.skip(f"needs clang's libFuzzer runtime, not in {runtime!r} (Debian package libclang-rt-14-dev)")
    seconds = max(1, int(60 * SCALE))
    out = subprocess.run(
        ["make", "fuzz-run", f"FUZZ_SECONDS={seconds}", f"FUZZ_SEEDS={VECTORS}"],
        cwd=CDIR,
        capture_output=True,
        text=True,
        timeout=int(seconds) + 600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
