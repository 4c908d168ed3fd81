#!/usr/bin/env python3
"""fork + exec cost with a live publisher (100 counters): subprocess.run with
preexec_fn (a fork that runs the at-fork hooks, then exec) against the same
without preexec_fn (posix_spawn/vfork: no hooks), and the files left behind.

Usage: PYTHONPATH=src python benchmarks/fork_exec.py [N spawns, default 20]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

import statmap


def main() -> None:
    d = tempfile.mkdtemp()
    os.chmod(d, 0o700)
    pub = statmap.Publisher("spawn", d)
    counters = [pub.counter(f"c{i}", "C") for i in range(100)]
    counters[0].inc()
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    with_hook = without = 0.0
    for _ in range(2):
        t0 = time.perf_counter()
        for _ in range(n):
            subprocess.run(["/bin/true"], preexec_fn=lambda: None, check=True)
        with_hook = (time.perf_counter() - t0) / n
        t0 = time.perf_counter()
        for _ in range(n):
            subprocess.run(["/bin/true"], check=True)
        without = (time.perf_counter() - t0) / n
    files = os.listdir(d)
    size = sum(os.stat(os.path.join(d, f)).st_size for f in files)
    print(
        f"{statmap.backend}: {with_hook * 1e3:.2f} ms per spawn with preexec_fn, {without * 1e3:.2f} ms without; "
        f"files left after {2 * n} spawns: {len(files)} ({size / 1048576:.1f} MiB)"
    )
    pub.close()
    shutil.rmtree(d)


if __name__ == "__main__":
    main()
