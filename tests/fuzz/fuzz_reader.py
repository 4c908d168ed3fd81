#!/usr/bin/env python3
"""Coverage-guided fuzzing of the statmap reader with atheris (libFuzzer).

Usage (run by tests/test_fuzz.py for a bounded time when atheris is installed):

    python tests/fuzz/fuzz_reader.py -max_total_time=60 [libFuzzer options]

The corpus starts from the golden files (tests/vectors/*.statmap), copied to a
scratch directory. Every input is written to a file and read with
``statmap.open(path).snapshot()`` twice, then ``to_json()``; the only
acceptable exception is ``statmap.FormatError``. A crash input is saved
under $STATMAP_FUZZ_ARTIFACTS (default: the scratch directory) and its path
printed: copy it to tests/regressions/ and add it to the suite.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    import statmap
    import statmap._layout
    import statmap.reader

HERE = Path(__file__).resolve().parent
VECTORS = HERE.parent / "vectors"
SCRATCH = tempfile.mkdtemp(prefix="statmap-atheris-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
TARGET = os.path.join(SCRATCH, "input.statmap")


def test_one_input(data: bytes) -> None:
    with open(TARGET, "wb") as f:
        f.write(data)
    try:
        with statmap.open(TARGET) as reader:
            snap = reader.snapshot()
            snap.to_json()
            reader.snapshot()
    except statmap.FormatError:
        pass


def main() -> None:
    corpus = os.path.join(SCRATCH, "corpus")
    os.mkdir(corpus)
    for p in VECTORS.glob("*.statmap"):
        shutil.copy(p, corpus)
    artifacts = os.environ.get("STATMAP_FUZZ_ARTIFACTS", SCRATCH)
    args = [*sys.argv, f"-artifact_prefix={artifacts.rstrip('/')}/", corpus]
    try:
        atheris.Setup(args, test_one_input)
        atheris.Fuzz()
    finally:
        shutil.rmtree(corpus, ignore_errors=True)


if __name__ == "__main__":
    main()
