"""Whole-process time of the statmap commands against prometheus_client's one-shot script (issue 12).

One run fills a statmap directory (64 live workers x 1000 counters, holding
their locks: benchmarks/scrape.py's workers) and a prometheus_client
multiprocess directory with the same series, then runs, interleaved in
rounds, each command as a fresh process and times it from start to exit:

* prometheus_client: ``python3 -c`` MultiProcessCollector + generate_latest,
  the text written to stdout (the one-shot script a cron job or a textfile
  exporter would run);
* ``statmap export`` (OpenMetrics of the aggregated directory);
* ``statmap show --aggregate``;
* ``statmap show`` (every series of every file, per file);
* ``python3 -c pass``: the interpreter's own start-up, the floor of all.

Output goes to /dev/null. Bytecode is cached as for an installed package
(PYTHONPYCACHEPREFIX in a temporary directory, one warm-up run of each
command first): without it every statmap module would be compiled from
source at every run (this machine sets PYTHONDONTWRITEBYTECODE=1), which is
not what a user's installed statmap does and prometheus_client, installed,
never pays.

Two clocks: wall time (the target) and the child's CPU time (user + system
from wait4: the same work without the time spent waiting for a CPU on a busy
machine). Best of the rounds and the median; ratios against
prometheus_client in the same run.

    python3 benchmarks/cli_wall.py                 # 64 x 1000, 15 rounds
    python3 benchmarks/cli_wall.py --rounds 5 --processes 16
    python3 benchmarks/cli_wall.py --src /other/checkout/src   # another checkout's statmap
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import scrape  # noqa: E402 - the workers and the directory filling

PROM_SCRIPT = (
    "import sys\n"
    "from prometheus_client import CollectorRegistry, generate_latest\n"
    "from prometheus_client.multiprocess import MultiProcessCollector\n"
    "registry = CollectorRegistry()\n"
    "MultiProcessCollector(registry, path=sys.argv[1])\n"
    "sys.stdout.buffer.write(generate_latest(registry))\n"
)


def run(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of one process, from start to exit."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.stderr is not None
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: {err}")
    return wall, usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--processes", type=int, default=64, help="worker processes, 1000 series each (default 64)")
    ap.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    ap.add_argument("--src", default=os.path.join(os.path.dirname(HERE), "src"), help="statmap's source directory")
    args = ap.parse_args()

    base = tempfile.mkdtemp(prefix="statmap-cli-wall-")
    sdir, pdir, pyc = (os.path.join(base, n) for n in ("statmap", "prom", "pycache"))
    for d in (sdir, pdir):
        os.mkdir(d, 0o700)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH")}
    env.update(PYTHONPATH=os.path.abspath(args.src), PYTHONPYCACHEPREFIX=pyc)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    py = sys.executable
    commands = {
        "python3 -c pass (start-up floor)": [py, "-c", "pass"],
        "prometheus_client one-shot script": [py, "-c", PROM_SCRIPT, pdir],
        "statmap export": [py, "-m", "statmap", "export", "--dir", sdir],
        "statmap show --aggregate": [py, "-m", "statmap", "show", "--aggregate", "--dir", sdir],
        "statmap show": [py, "-m", "statmap", "show", "--dir", sdir],
    }
    # name: (target as a fraction of prometheus_client's time, or None; target in seconds, or None)
    targets: dict[str, tuple[float | None, float | None]] = {
        "statmap export": (0.5, None),
        "statmap show --aggregate": (0.5, None),
        "statmap show": (None, 0.2),
    }
    workers = []
    try:
        load = (10, 100, 0, 0)
        workers = scrape.fill("statmap", sdir, args.processes, load)
        scrape.fill("prom", pdir, args.processes, load)
        for argv in commands.values():  # warm-up: bytecode written, files in the page cache
            run(argv, env)
        walls: dict[str, list[float]] = {n: [] for n in commands}
        cpus: dict[str, list[float]] = {n: [] for n in commands}
        for _ in range(args.rounds):
            for name, argv in commands.items():
                wall, cpu = run(argv, env)
                walls[name].append(wall)
                cpus[name].append(cpu)
    finally:
        scrape.stop(workers)
        shutil.rmtree(base, ignore_errors=True)

    import statmap

    prom = "prometheus_client one-shot script"
    pw, pc = min(walls[prom]), min(cpus[prom])
    print(
        f"{args.processes} processes x 1000 series; Python {sys.version.split()[0]}, statmap {statmap.backend} cells;"
        f" best of {args.rounds} interleaved rounds (median in brackets); ms"
    )
    print("| command | wall | CPU | wall / prometheus_client | CPU / prometheus_client | target | met |")
    print("|---|---|---|---|---|---|---|")
    for name in commands:
        w, c = min(walls[name]), min(cpus[name])
        ratio_target, seconds_target = targets.get(name, (None, None))
        target, met = "", ""
        if ratio_target is not None:
            target, met = f"<= {ratio_target:g}x", "met" if w <= ratio_target * pw else "not met"
        elif seconds_target is not None:
            target, met = f"<= {seconds_target:g} s", "met" if w <= seconds_target else "not met"
        print(
            f"| {name} | {w * 1e3:.0f} ({statistics.median(walls[name]) * 1e3:.0f})"
            f" | {c * 1e3:.0f} ({statistics.median(cpus[name]) * 1e3:.0f})"
            f" | {w / pw:.2f}x | {c / pc:.2f}x | {target} | {met} |"
        )


if __name__ == "__main__":
    main()
