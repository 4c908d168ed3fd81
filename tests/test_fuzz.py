"""Fuzzing the reader: mutated golden files and hostile live mutations.

Files are untrusted input. For every input the reader must either read it
(``snapshot()``, a second cached ``snapshot()``, ``to_json()``) or raise
``statmap.FormatError``: never another exception, a crash, a hang, or
unbounded time or memory.

1. ``test_mutated_golden_files``: hypothesis picks a golden file
   (tests/vectors/*.statmap) and a chain of mutations (bit flips, byte
   overwrites, header and record fields set to edge values such as 0, the
   file size, 2**32 - 1 or offsets outside the file, records copied over
   other records so that they overlap or repeat, truncation at any length,
   extension with zeros or garbage); the reader reads the file after every
   mutation of the chain, so each example checks several inputs.
2. ``test_truncation_at_every_length``: every golden file cut at every
   length.
3. ``test_random_bytes_into_a_live_file``: a reader keeps its cached view of
   a live publisher's file while the test writes random bytes into that file
   and truncates or extends it between snapshots (Chromium's
   PersistentMemoryAllocator tests do the same).
4. ``test_regressions``: every input under tests/regressions/ (anything a
   fuzzer ever found) reads cleanly or raises FormatError.
5. ``test_atheris_harness``: the coverage-guided harness in tests/fuzz/
   runs for a bounded time when atheris is installed.

Budget: about 50,000 inputs per backend in CI (100,000 per CI run with both
backends). ``STATMAP_SCALE=N`` multiplies every budget by N.
"""

from __future__ import annotations

import os
import random
import resource
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import statmap
from statmap import _layout as L

from .conftest import SCALE

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "tests" / "vectors"
REGRESSIONS = ROOT / "tests" / "regressions"
GOLDEN = {p.stem: p.read_bytes() for p in sorted(VECTORS.glob("*.statmap"))}

EXAMPLES = int(2_500 * SCALE)  # ~4.5 inputs each
LIVE_INPUTS = int(6_000 * SCALE)
MAX_SECONDS_PER_INPUT = 2.0
MAX_RSS_GROWTH_MB = 300

COUNTS: dict[str, int] = {"inputs": 0, "format errors": 0, "read cleanly": 0}
SLOWEST = [0.0]  # seconds, the slowest single read of any input
RAN: set[str] = set()  # which input-counting tests ran to the end
RSS_AT_START = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _record_offsets(data: bytes) -> list[int]:
    """Where the records of an intact file start (to aim mutations at record fields)."""
    out, offset = [], L.HEADER_SIZE
    end = struct.unpack_from("<Q", data, L.OFF_END)[0]
    while offset + L.RECORD_HEADER_SIZE <= end:
        size = struct.unpack_from("<I", data, offset)[0]
        if size < L.RECORD_HEADER_SIZE:
            break
        out.append(offset)
        offset += size
    return out


RECORDS = {name: _record_offsets(data) for name, data in GOLDEN.items()}


class Scratch:
    """One file, rewritten in place for each input (on tmpfs when available)."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, "fuzz.statmap")
        self.slowest = 0.0

    def read(self, data: bytes) -> None:
        with open(self.path, "wb") as f:
            f.write(data)
        started = time.perf_counter()
        try:
            with statmap.open(self.path) as reader:
                snap = reader.snapshot()
                snap.to_json()
                reader.snapshot()  # again, from the cached records
                for series in snap.series:
                    if isinstance(series.value, statmap.reader.HistogramValue):
                        series.value.percentile(0.5)
            COUNTS["read cleanly"] += 1
        except statmap.FormatError:
            COUNTS["format errors"] += 1
        elapsed = time.perf_counter() - started
        self.slowest = max(self.slowest, elapsed)
        SLOWEST[0] = max(SLOWEST[0], elapsed)
        COUNTS["inputs"] += 1
        assert elapsed < MAX_SECONDS_PER_INPUT, f"one input took {elapsed:.2f}s"


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scratch]:
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    if base:
        import tempfile

        d = tempfile.mkdtemp(prefix="statmap-fuzz-", dir=base)
    else:
        d = str(tmp_path_factory.mktemp("fuzz"))
    yield Scratch(d)
    for name in os.listdir(d):
        os.unlink(os.path.join(d, name))
    os.rmdir(d)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


EDGE_U32 = [0, 1, 7, 8, 39, 40, 41, 48, 255, 256, 4095, 4096, 4097, 65535, 65536, 1 << 20, (1 << 24) + 8,
            (1 << 31) - 1, 1 << 31, (1 << 32) - 8, (1 << 32) - 1]  # fmt: skip
EDGE_U64 = [*EDGE_U32, 1 << 32, 1 << 40, (1 << 63) - 1, 1 << 63, (1 << 64) - 8, (1 << 64) - 1]
HEADER_WORDS = [L.OFF_VERSION, L.OFF_STATE, L.OFF_CAPACITY, L.OFF_END, L.OFF_FLAGS]


@st.composite
def mutation(draw: st.DrawFn, name: str) -> tuple:  # type: ignore[type-arg]
    data = GOLDEN[name]
    size = len(data)
    kind = draw(st.sampled_from(["flip", "bytes", "header", "record", "value", "splice", "truncate", "extend"]))
    if kind == "flip":
        return ("flip", draw(st.integers(0, size * 8 - 1)))
    if kind == "bytes":
        at = draw(st.integers(0, size - 1))
        return ("bytes", at, draw(st.binary(min_size=1, max_size=16)))
    if kind == "header":
        at = draw(st.sampled_from(HEADER_WORDS))
        rel = draw(st.sampled_from([0, size, size - 8, size + 8, 4096, 8192]))
        return ("u64", at, draw(st.sampled_from([*EDGE_U64, rel, L.HEADER_SIZE + 40])))
    records = RECORDS[name] or [L.HEADER_SIZE]
    rec = draw(st.sampled_from(records))
    if kind == "record":  # one of the 40-byte record header's u32 fields
        field = draw(st.integers(0, 9)) * 4
        if field == 4:  # type, flags: two u16
            return (
                "u16",
                rec + draw(st.sampled_from([4, 6, 8, 10])),
                draw(st.sampled_from([0, 1, 2, 3, 5, 7, 8, 255, 65535])),
            )
        return ("u32", rec + field, draw(st.sampled_from([*EDGE_U32, size, size - rec, size - rec + 8])))
    if kind == "value":  # latch words: sequence, lengths, counts
        at = draw(st.integers(rec // 8, size // 8 - 1)) * 8
        return ("u64", at, draw(st.sampled_from(EDGE_U64)))
    if kind == "splice":  # a record (or any chunk) copied over another place: overlaps, repeats
        src = draw(st.sampled_from([*records, *range(0, size, 8)][:256]))
        length = draw(st.integers(8, 512))
        dst = draw(st.integers(0, size // 8 - 1)) * 8
        return ("splice", src, length, dst)
    if kind == "truncate":
        return ("truncate", draw(st.integers(0, size)))
    return ("extend", draw(st.integers(1, 9000)), draw(st.booleans()))


def apply(data: bytearray, m: tuple) -> bytearray:  # type: ignore[type-arg]
    kind = m[0]
    if kind == "flip":
        if m[1] // 8 < len(data):
            data[m[1] // 8] ^= 1 << (m[1] % 8)
    elif kind == "bytes":
        data[m[1] : m[1] + len(m[2])] = m[2]
    elif kind in ("u16", "u32", "u64"):
        fmt, n = {"u16": ("<H", 2), "u32": ("<I", 4), "u64": ("<Q", 8)}[kind]
        if m[1] + n <= len(data):
            struct.pack_into(fmt, data, m[1], m[2])
    elif kind == "splice":
        _, src, length, dst = m
        chunk = bytes(data[src : src + length])
        data[dst : dst + len(chunk)] = chunk
    elif kind == "truncate":
        del data[m[1] :]
    elif kind == "extend":
        data += os.urandom(m[1]) if m[2] else bytes(m[1])
    return data


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(st.data())
@pytest.mark.slow
def test_mutated_golden_files(scratch: Scratch, data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(GOLDEN)))
    buf = bytearray(GOLDEN[name])
    for m in data.draw(st.lists(mutation(name), min_size=1, max_size=8)):
        buf = apply(buf, m)
        scratch.read(bytes(buf))
    COUNTS["hypothesis examples"] = COUNTS.get("hypothesis examples", 0) + 1
    if COUNTS["hypothesis examples"] >= EXAMPLES:
        RAN.add("mutated")


@pytest.mark.slow
def test_truncation_at_every_length(scratch: Scratch) -> None:
    before = COUNTS["inputs"]
    for data in GOLDEN.values():
        for cut in range(len(data) + 1):
            scratch.read(data[:cut])
    assert COUNTS["inputs"] - before == sum(len(d) + 1 for d in GOLDEN.values())
    RAN.add("truncation")


@pytest.mark.slow
def test_random_bytes_into_a_live_file(tmp_path: Path) -> None:
    """A reader keeps its mapping and cached records while a hostile process of the
    same user writes random bytes into a live file (the writer keeps updating), then,
    once the writer has closed it, truncates and extends it. (Truncating a file under
    a live writer or reader is not survivable: see docs/reliability.md.)"""
    rnd = random.Random(f"live-{statmap.backend}")
    directory = tmp_path / "live"
    directory.mkdir(mode=0o700)
    inputs = errors = 0
    slowest = 0.0

    def read(reader: statmap.reader.Reader) -> None:
        nonlocal inputs, errors, slowest
        started = time.perf_counter()
        try:
            reader.snapshot().to_json()
        except statmap.FormatError:
            errors += 1
        slowest = max(slowest, time.perf_counter() - started)
        inputs += 1

    while inputs < LIVE_INPUTS:
        pub = statmap.Publisher("live", str(directory), capacity=4096)
        c = pub.counter("c", "C", labels=("i",))
        h = pub.histogram("h", "H", buckets=(1.0, 2.0))
        t = pub.text("t", "T", size=100)
        s = pub.summary("s", "S")
        pub.enum("e", "E", states=("x", "y")).state("y")
        pub.info("i", "I", values={"k": "v"})
        reader = statmap.open(pub.path)
        reader.snapshot()
        with open(pub.path, "r+b") as f:
            for k in range(40):
                size = os.fstat(f.fileno()).st_size
                f.seek(rnd.randrange(0, size, 8) if rnd.random() < 0.3 else rnd.randrange(size))
                f.write(
                    struct.pack("<Q", rnd.choice(EDGE_U64))
                    if rnd.random() < 0.3
                    else os.urandom(rnd.choice((1, 2, 8, 16)))
                )
                f.flush()
                c.labels(str(k % 7)).inc()  # the writer goes on: new records, new values
                h.observe(rnd.random() * 3)
                t.set("x" * rnd.randrange(100))  # the writer must survive corrupted lengths
                s.observe(1.0)
                read(reader)
            pub.close()
            for _ in range(10):
                size = os.fstat(f.fileno()).st_size
                f.truncate(rnd.randrange(0, size + 1) if rnd.random() < 0.6 else size + rnd.choice((4, 8, 4096)))
                read(reader)
        reader.close()
        os.unlink(pub.path)
    COUNTS["inputs"] += inputs
    COUNTS["live inputs"] = COUNTS.get("live inputs", 0) + inputs
    assert slowest < MAX_SECONDS_PER_INPUT
    assert 0 < errors < inputs
    RAN.add("live")


def test_regressions(scratch: Scratch) -> None:
    found = sorted(REGRESSIONS.glob("*.statmap"))
    assert found, "tests/regressions/ holds the inputs fuzzers found; it must not be empty"
    for path in found:
        scratch.read(path.read_bytes())


@pytest.mark.slow
def test_atheris_harness() -> None:
    """Coverage-guided fuzzing of the reader for a bounded time, when atheris is installed."""
    try:
        import atheris  # noqa: F401
    except ImportError:
        pytest.skip("atheris is not installed (pip install atheris): coverage-guided fuzzing skipped")
    seconds = max(1, int(10 * SCALE))
    env = dict(os.environ)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "fuzz" / "fuzz_reader.py"), f"-max_total_time={seconds}",
         "-rss_limit_mb=1024", "-timeout=5", "-print_final_stats=1"],
        capture_output=True, text=True, timeout=seconds + 120, env=env,
    )  # fmt: skip
    tail = (proc.stdout + proc.stderr)[-3000:]
    assert proc.returncode == 0, tail
    runs = [line for line in proc.stderr.splitlines() if line.startswith("stat::number_of_executed_units")]
    COUNTS["atheris runs"] = int(runs[-1].split(":")[-1]) if runs else 0
    assert COUNTS["atheris runs"] > 1000, tail


@pytest.mark.slow
def test_budget_and_memory(capsys: pytest.CaptureFixture[str]) -> None:
    """Runs last in this file: the totals, and the memory the reader needed."""
    with capsys.disabled():
        sys.stderr.write(
            f"\n[statmap {statmap.backend}] fuzz: {COUNTS}, max RSS {_rss_mb():.0f} MB "
            f"(+{_rss_mb() - RSS_AT_START:.0f} MB while fuzzing), slowest input {SLOWEST[0] * 1000:.1f} ms\n"
        )
    if RAN >= {"mutated", "truncation", "live"}:  # the whole file ran, not one test alone
        assert COUNTS["inputs"] >= 50_000 * min(1.0, SCALE)
    if "asan" not in os.environ.get("LD_PRELOAD", ""):  # AddressSanitizer's quarantine holds freed memory
        assert _rss_mb() - RSS_AT_START < MAX_RSS_GROWTH_MB


def _crafted(path: Path, specs: list[L.RecordSpec]) -> None:
    """A closed file holding these records: what a hostile writer can make cheaply."""
    body = b"".join(L.encode_record(spec)[0] for spec in specs)
    capacity = (L.HEADER_SIZE + len(body) + 4095) // 4096 * 4096
    ident = L.Identity(1, 0, bytes(16), os.urandom(16), 1, "crafted", "crafted")
    head = bytearray(L.encode_header(ident, capacity))
    struct.pack_into("<QQQ", head, L.OFF_STATE, L.State.CLOSED, capacity, L.HEADER_SIZE + len(body))
    path.write_bytes(bytes(head) + body + bytes(capacity - len(head) - len(body)))


def _tiny(n: int, labels: int = 0) -> list[L.RecordSpec]:
    pairs = tuple((f"k{j}", "") for j in range(labels))
    return [L.RecordSpec(L.MetricType.COUNTER, f"m{i:x}", labels=pairs) for i in range(n)]


def test_reader_memory_is_bounded_per_file(tmp_path: Path) -> None:
    """10.11: crafted files cost a reader at most MEMORY_PER_METADATA_BYTE per byte of metadata (so at most
    that times MAX_METADATA per file); a file over MAX_RECORDS or MAX_METADATA is a FormatError naming the
    limit; the shared metadata cache lets go of a file's records when its reader closes."""
    import tracemalloc

    cases = {
        "records": _tiny(L.MAX_RECORDS // 8),  # the smallest records
        "labels": _tiny(1000, labels=120),  # many tiny strings: the costliest bytes
        "over-records": _tiny(L.MAX_RECORDS + 1),
        "over-metadata": [L.RecordSpec(L.MetricType.COUNTER, f"m{i}", help="h" * 60000) for i in range(150)],
    }
    for name, specs in cases.items():
        path = tmp_path / f"{name}.statmap"
        _crafted(path, specs)
        before = len(statmap.record_table._decoded)
        traced = name != "over-records"  # tracing 131,073 records is slow; the others check the bound
        if traced:
            tracemalloc.start()
        try:
            with statmap.open(path) as reader:
                if name.startswith("over-"):
                    with pytest.raises(statmap.FormatError, match="over the reader limit"):
                        reader.poll()
                    metadata = L.MAX_METADATA
                else:
                    reader.poll()
                    metadata = reader._table.metadata
                    assert len(reader.records) == len(specs)
            held, peak = tracemalloc.get_traced_memory() if traced else (0, 0)
        finally:
            tracemalloc.stop()
        assert peak <= L.MEMORY_PER_METADATA_BYTE * metadata, (name, peak, metadata)
        assert len(statmap.record_table._decoded) == before, name  # nothing of the file is left in the cache
        assert held < 1 << 20, (name, held)  # and nothing much else
        path.unlink()
