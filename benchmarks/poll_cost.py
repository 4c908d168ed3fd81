"""What a reader polling 100 times a second costs a busy writer.

A shared, noisy machine drifts by more than the effect being measured, so
instead of comparing a run "alone" with a run "polled", one long run is cut
into short windows and the reader is switched on in one window of every
consecutive pair, in a random order chosen by a fixed seed. Each pair
(one window polled, one not, a second apart) gives one ratio of the writer's
throughput; the machine's drift is common to both halves of a pair and
cancels. The figure is the median of those ratios with a bootstrap 95%
confidence interval.

* writer: one process updating a counter, a histogram and a gauge flat out,
  recording how many updates it made in each slice of ~20 ms of wall time
  and of its own CPU time;
* reader: another process that, in its "on" windows, collects the writer's
  directory and renders OpenMetrics every 10 ms (``Collector`` +
  ``Exposer``, as ``statmap serve`` does), and sleeps in its "off" windows.

Two throughputs are reported: per second of the writer's own CPU time (what
the reader's memory accesses cost the writer itself) and per second of wall
time (which also counts the CPU the reader takes away, i.e. depends on
whether a spare core was free).

The writer and the reader are pinned to two different CPUs (``--no-pin`` to
let the scheduler place them).

    python3 benchmarks/poll_cost.py                  # 60 s
    python3 benchmarks/poll_cost.py --seconds 120 --json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

WRITER = """
import json, os, sys, time, statmap
directory, start, seconds, cpu = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
if cpu >= 0:
    os.sched_setaffinity(0, {cpu})
pub = statmap.Publisher("busy", directory)
c = pub.counter("ops")
h = pub.histogram("lat", buckets=(0.1, 1, 10))
g = pub.gauge("level")
while time.time() < start:
    time.sleep(0.001)
end = start + seconds
slices = []
wall, cpu = time.time(), time.thread_time()
while wall < end:
    for _ in range(2000):
        c.inc()
        h.observe(0.5)
        g.set(3.0)
    now, now_cpu = time.time(), time.thread_time()
    slices.append((wall, now, now - wall, now_cpu - cpu))
    wall, cpu = now, now_cpu
print(json.dumps({"ops_per_slice": 6000, "slices": slices}))
"""

READER = """
import os, sys, time
from statmap.collect import Collector
from statmap.expose import Exposer
directory, start, window = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
schedule, cpu = sys.argv[4], int(sys.argv[5])
if cpu >= 0:
    os.sched_setaffinity(0, {cpu})
c, e = Collector(directory), Exposer()
polls = 0
while time.time() < start:
    time.sleep(0.001)
for k, on in enumerate(schedule):
    window_end = start + (k + 1) * window
    while True:
        now = time.time()
        if now >= window_end:
            break
        if on == "1":
            e.openmetrics(c.collect())
            polls += 1
            time.sleep(max(0.0, min(0.01, window_end - time.time())))
        else:
            time.sleep(min(0.01, window_end - now))
print(polls)
"""


def schedule(pairs: int, seed: int) -> str:
    """One "on" window per consecutive pair, its position chosen at random."""
    rng = random.Random(seed)
    return "".join(rng.choice(("10", "01")) for _ in range(pairs))


def window_rates(
    slices: list[list[float]], start: float, window: float, windows: int, margin: float
) -> list[tuple[float, float]]:
    """Per window: (updates per CPU second, updates per wall second), from the slices wholly inside it."""
    totals = [[0.0, 0.0, 0] for _ in range(windows)]  # wall, cpu, slices
    for begin, end, dwall, dcpu in slices:
        k = int((begin - start) // window)
        if not 0 <= k < windows:
            continue
        lo, hi = start + k * window + margin, start + (k + 1) * window - margin
        if begin >= lo and end <= hi:
            t = totals[k]
            t[0] += dwall
            t[1] += dcpu
            t[2] += 1
    return [(n / cpu if cpu else 0.0, n / wall if wall else 0.0) for wall, cpu, n in totals]


def bootstrap_ci(values: list[float], rounds: int = 5000, seed: int = 1) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the median."""
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(rounds))
    return medians[int(0.025 * rounds)], medians[int(0.975 * rounds) - 1]


def run(seconds: float, window: float, seed: int, pin: bool) -> dict[str, Any]:
    pairs = max(1, int(seconds / window) // 2)
    plan = schedule(pairs, seed)
    d = tempfile.mkdtemp(prefix="statmap-poll-")
    os.chmod(d, 0o700)
    try:
        cpus = sorted(os.sched_getaffinity(0))
        writer_cpu, reader_cpu = (cpus[0], cpus[1]) if pin and len(cpus) > 1 else (-1, -1)
        start = time.time() + 1.5  # both processes imported and ready
        total = len(plan) * window
        w = subprocess.Popen(
            [sys.executable, "-c", WRITER, d, str(start), str(total), str(writer_cpu)],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(0.5)  # the writer's file exists before the reader's first collection
        r = subprocess.Popen(
            [sys.executable, "-c", READER, d, str(start), str(window), plan, str(reader_cpu)],
            stdout=subprocess.PIPE,
            text=True,
        )
        out, _ = w.communicate()
        polls = int(r.communicate()[0])
        if w.returncode or r.returncode:
            raise SystemExit(f"writer exited {w.returncode}, reader {r.returncode}")
    finally:
        shutil.rmtree(d, ignore_errors=True)
    data = json.loads(out)
    per_slice = data["ops_per_slice"]
    rates = window_rates(data["slices"], start, window, len(plan), margin=0.05)
    cpu_ratios, wall_ratios = [], []
    for p in range(pairs):
        a, b = rates[2 * p], rates[2 * p + 1]
        on, off = (a, b) if plan[2 * p] == "1" else (b, a)
        if on[0] and off[0]:
            cpu_ratios.append(on[0] / off[0])
            wall_ratios.append(on[1] / off[1])
    if not cpu_ratios:
        raise SystemExit("no usable window pairs: the run was too short")
    on_windows = sum(1 for ch in plan if ch == "1")

    def summary(ratios: list[float]) -> dict[str, float]:
        lo, hi = bootstrap_ci(ratios)
        med = statistics.median(ratios)
        # cost = 1 - (polled / alone): a ratio under 1 is a cost
        return {"cost_percent": 100 * (1 - med), "ci95_low": 100 * (1 - hi), "ci95_high": 100 * (1 - lo)}

    return {
        "python": sys.version.split()[0],
        "seconds": total,
        "window_s": window,
        "pinned": writer_cpu >= 0,
        "pairs_used": len(cpu_ratios),
        "polls_per_s_when_on": polls / (on_windows * window),
        "writer_updates_per_cpu_s": statistics.median(r[0] for r in rates if r[0]) * per_slice,
        "writer_updates_per_wall_s": statistics.median(r[1] for r in rates if r[1]) * per_slice,
        "per_cpu_time": summary(cpu_ratios),
        "per_wall_time": summary(wall_ratios),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="length of the run (default 60)")
    ap.add_argument("--window", type=float, default=0.5, help="seconds per window (default 0.5)")
    ap.add_argument("--seed", type=int, default=2011, help="seed of the on/off order")
    ap.add_argument("--no-pin", action="store_true", help="do not pin the writer and the reader to two CPUs")
    ap.add_argument("--json", action="store_true", help="print JSON")
    args = ap.parse_args()
    import statmap

    doc = run(args.seconds, args.window, args.seed, not args.no_pin)
    doc["statmap_backend"] = statmap.backend
    if args.json:
        print(json.dumps(doc, indent=2))
        return
    print(
        f"writer: {doc['writer_updates_per_cpu_s'] / 1e6:.2f} M updates per CPU second,"
        f" {doc['writer_updates_per_wall_s'] / 1e6:.2f} M per wall second ({statmap.backend} cells);"
        f" reader polling {doc['polls_per_s_when_on']:.0f}/s in its windows; {doc['pairs_used']} window pairs"
        f"{', pinned to two CPUs' if doc['pinned'] else ''}"
    )
    for key, label in (("per_cpu_time", "per writer CPU second"), ("per_wall_time", "per wall second")):
        s = doc[key]
        print(
            f"cost of the polling reader, {label}: {s['cost_percent']:+.2f}%"
            f" (95% CI {s['ci95_low']:+.2f}% .. {s['ci95_high']:+.2f}%)"
        )


if __name__ == "__main__":
    main()
