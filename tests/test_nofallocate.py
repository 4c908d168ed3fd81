"""Filesystems without fallocate (NFSv3, FUSE, older ZFS): creation and growth
reserve space by writing, and never touch the bytes readers already use.

A real LD_PRELOAD shim (tests/shims/nofallocate.c, built here with gcc) takes
fallocate away in the writer process, in the two ways real systems do:

* ``libc``: posix_fallocate() fails with EOPNOTSUPP (musl, which does not
  emulate it): statmap's own fallback runs.
* ``kernel``: the fallocate(2) system call fails with EOPNOTSUPP (a seccomp
  filter): glibc's posix_fallocate() emulates it by writing.

A reader in this process reads the file throughout the writer's growth.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import statmap

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> str:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("needs gcc to build the LD_PRELOAD shim")
    out = tmp_path_factory.mktemp("shim") / "nofallocate.so"
    source = str(ROOT / "tests/shims/nofallocate.c")
    subprocess.run(
        [gcc, "-shared", "-fPIC", "-O1", "-Wall", "-Werror", "-o", str(out), source, "-ldl"],
        check=True,
    )
    return str(out)


WRITER = textwrap.dedent(
    """
    import ctypes, errno, os, sys, time, statmap
    d, mode, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "kernel":  # prove the system call really is gone
        fd = os.open(os.path.join(d, "probe"), os.O_RDWR | os.O_CREAT, 0o600)
        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.fallocate(fd, 0, ctypes.c_long(0), ctypes.c_long(4096)) == -1
        assert ctypes.get_errno() == errno.EOPNOTSUPP
        os.close(fd)
        os.unlink(os.path.join(d, "probe"))
    pub = statmap.Publisher("nofalloc", d, capacity=4096)
    c = pub.counter("c", "C")
    t = pub.text("t", "T", size=40)
    fam = pub.counter("fam", "F", labels=("i",), max_series=100_000)
    c.inc(); t.set("round 0")
    print(pub.path, flush=True)
    sys.stdin.readline()  # the reader is attached
    for i in range(1, rounds + 1):
        fam.labels(str(i)).inc(i)  # new records: the file grows 4 KiB -> 8 -> ... while read
        c.inc()
        t.set(f"round {i}")
        if i % 50 == 0:
            time.sleep(0.005)  # let the reader in
    print(os.fstat(pub._fd).st_size, flush=True)
    sys.stdin.readline()
    pub.close()
    """
)


@pytest.mark.parametrize("mode", ["libc", "kernel"])
def test_growth_without_fallocate_keeps_the_live_file_readable(
    statdir: str, tmp_path: Path, shim: str, mode: str
) -> None:
    log = tmp_path / "shim.log"
    rounds = 1500
    preload = f"{os.environ['LD_PRELOAD']} {shim}" if os.environ.get("LD_PRELOAD") else shim  # after ASan's, if any
    env = dict(os.environ, LD_PRELOAD=preload, STATMAP_TEST_NOFALLOCATE=mode, STATMAP_TEST_NOFALLOCATE_LOG=str(log))
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, statdir, mode, str(rounds)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        path = proc.stdout.readline().strip()
        assert path, proc.stderr.read() if proc.stderr else ""
        reads, last_c, sizes = 0, 0, set()
        with statmap.open(path) as reader:
            proc.stdin.write("go\n")
            proc.stdin.flush()
            deadline = time.monotonic() + 120
            while proc.poll() is None and time.monotonic() < deadline:
                snap = reader.snapshot()  # FormatError here: the writer wiped live bytes
                values = {(s.name, tuple(s.labels.values())): s.value for s in snap.series}
                assert values[("c", ())] >= last_c  # type: ignore[operator]
                last_c = values[("c", ())]  # type: ignore[assignment]
                assert str(values[("t", ())]).startswith("round ")
                for (name, labels), v in values.items():
                    if name == "fam":
                        assert v in (0, int(labels[0])), (labels, v)
                sizes.add(os.stat(path).st_size)
                reads += 1
                # the writer then waits for stdin: its last round ends the loop, not the 120 s deadline
                if (len(sizes) > 4 and reads > 50) or last_c == rounds + 1:
                    break
            size = int(proc.stdout.readline())
            snap = reader.snapshot()
        values = {(s.name, tuple(s.labels.values())): s.value for s in snap.series}
        assert values[("c", ())] == rounds + 1 and values[("t", ())] == f"round {rounds}"
        assert all(values[("fam", (str(i),))] == i for i in range(1, rounds + 1))
        assert len(sizes) > 1, "the file never grew while it was read"
        assert os.stat(path).st_blocks * 512 >= size, "space beyond the old end was not reserved"
    finally:
        if proc.poll() is None:
            proc.stdin.write("done\n")
            proc.stdin.flush()
        proc.wait(timeout=60)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    with statmap.open(path) as reader:
        assert reader.snapshot().status == "closed"
    calls = log.read_text().split("\n")
    if mode == "libc":  # statmap's own fallback ran, asked only for the new range each time
        refused = [tuple(map(int, line.split()[1:])) for line in calls if line.startswith("posix_fallocate")]
        assert refused[0] == (0, 4096) and len(refused) > 3
        for (start, length), (next_start, _) in itertools.pairwise(refused):
            assert next_start == start + length, refused
    else:
        assert "seccomp 0 0" in calls


def test_fallback_never_overwrites_data_even_past_the_start(tmp_path: Path) -> None:
    """statmap's own fallback, called directly: where the file already has bytes in the
    range (an earlier, interrupted growth), it fills only holes and leaves data alone."""
    from statmap.diskspace import reserve_by_writing

    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.pwrite(fd, b"\xff" * 4096, 0)  # live bytes before start
        os.pwrite(fd, b"\xee" * 100, 8192)  # data already past start (block 2); block 1 is a hole
        os.ftruncate(fd, 12288)
        reserve_by_writing(fd, 4096, 32768)
        assert os.fstat(fd).st_size == 32768
        assert os.pread(fd, 4096, 0) == b"\xff" * 4096
        assert os.pread(fd, 100, 8192) == b"\xee" * 100
        assert os.pread(fd, 4096, 4096) == bytes(4096)
        assert os.pread(fd, 32768 - 12288, 12288) == bytes(32768 - 12288)
        assert os.fstat(fd).st_blocks * 512 >= 32768  # every block backed now
    finally:
        os.close(fd)
