"""The C library's knobs (clients/c/knobs.c), turned by the Python operator tool.

clients/c/statmap-knobs-example declares four knobs and prints its values
whenever one changes. Built with AddressSanitizer and UBSan, so a control
file that made the C parser read out of bounds would abort it.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from statmap import control_file
from statmap.knob_state import read_knobs
from statmap.knob_values import Control, Entry, canonical, encode_control, parse_value

from .conftest import ROOT

pytestmark = [pytest.mark.external, pytest.mark.once]  # builds C with make and cc; no Python cells involved

CDIR = ROOT / "clients" / "c"
BUILD = "build/knobs-asan"
SAN = "-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all"


@pytest.fixture(scope="module")
def example() -> Path:
    if not shutil.which("make") or not shutil.which("cc"):
        pytest.skip("needs make and a C compiler (cc) to build clients/c (Debian packages make, gcc)")
    exe = CDIR / BUILD / "statmap-knobs-example"
    out = subprocess.run(
        ["make", f"B={BUILD}", f"CFLAGS={SAN}", f"{BUILD}/statmap-knobs-example"],
        cwd=CDIR,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return exe


@pytest.fixture
def program(example: Path, statdir: str) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [str(example), statdir], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
    yield proc
    if proc.stdin:
        proc.stdin.close()
    proc.wait(timeout=30)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""  # a sanitizer report exits 1


def values(line: str) -> dict[str, str]:
    return dict(x.split("=", 1) for x in line.split()[1:])


def cli(statdir: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "statmap", *args, "--dir", statdir], capture_output=True, text=True, timeout=60
    )


def test_python_operator_sets_knobs_of_a_c_program(program: subprocess.Popen[str], statdir: str) -> None:
    assert program.stdout is not None
    first = values(program.stdout.readline())
    assert first == {"maintenance": "false", "rate_limit": "100", "ratio": "0.5", "mode": "fast", "origin": "default"}
    out = cli(statdir, "set", "cknobs", "maintenance=on", "rate_limit=1_000", "ratio=1e-3", "mode=safe")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count(": applied") == 4
    assert values(program.stdout.readline()) == {
        "maintenance": "true", "rate_limit": "1000", "ratio": "0.001", "mode": "safe", "origin": "operator",
    }  # fmt: skip
    # A request the C program refuses (written directly: statmap set would refuse it first).
    with control_file.locked(statdir, "cknobs"):
        old, _ = control_file.load(control_file.control_path(statdir, "cknobs"))
        assert old is not None
        entries = (*old.entries, Entry("ratio", "", "set", "1.5", 0, 1, 1))
        entries = tuple(e for e in entries if not (e.knob == "ratio" and e.value != "1.5"))
        control_file.write(statdir, "cknobs", Control(old.seq + 1, entries))
    deadline = time.monotonic() + 10
    while True:
        (proc,) = read_knobs(statdir, "cknobs")[0]
        state = proc.knobs["ratio"].state
        if state is not None and state.seen_seq == old.seq + 1:
            break
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert state.value == "0.001" and state.refused_value == "1.5" and "maximum" in state.refused_reason
    out = cli(statdir, "set", "cknobs", "maintenance", "rate_limit", "--reset")
    assert out.returncode == 0, out.stdout + out.stderr
    assert values(program.stdout.readline())["maintenance"] == "false"
    doc = cli(statdir, "knobs", "cknobs", "--history").stdout
    assert "rate_limit = 100  (default" in doc and "100 -> 1000" in doc


def test_crafted_control_files_never_crash_the_c_program(program: subprocess.Popen[str], statdir: str) -> None:
    rnd = random.Random(13)
    path = control_file.control_path(statdir, "cknobs")
    knobs = ["maintenance", "rate_limit", "ratio", "mode", "other"]
    texts = ["true", "0", "-1", "10000", "10001", "0.5", "nan", "1e999", "safe", "é", "9" * 25, "", "1_0"]
    for i in range(200):
        entries = tuple(
            Entry(rnd.choice(knobs), rnd.choice(["", f"{rnd.randrange(1 << 16)}:1"]), rnd.choice(["set", "reset"]),
                  rnd.choice(texts), 0, 1, rnd.randrange(1 << 63))
            for _ in range(rnd.randrange(6))
        )  # fmt: skip
        data = bytearray(encode_control(Control(i + 1, entries)).encode())
        for _ in range(rnd.choice([0, 0, 1, 3])):
            if data:
                data[rnd.randrange(len(data))] = rnd.randrange(256)
        if rnd.random() < 0.2:
            data = data[: rnd.randrange(len(data) + 1)]
        if rnd.random() < 0.05:
            data = bytearray(rnd.randbytes(rnd.randrange(200)))
        temp = path + ".new"
        Path(temp).write_bytes(bytes(data))
        os.chmod(temp, 0o600)
        os.rename(temp, path)
        time.sleep(0.025)
    time.sleep(0.2)
    assert program.poll() is None, program.stderr.read() if program.stderr else ""
    (proc,) = read_knobs(statdir, "cknobs")[0]
    for view in proc.knobs.values():
        assert view.problem is None and view.decl is not None and view.state is not None
        parse_value(view.decl, canonical(view.decl, view.typed_value()))  # inside its declaration
