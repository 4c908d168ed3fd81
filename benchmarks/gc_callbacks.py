"""What ``statmap.gc_metrics`` costs: per collection, and on an allocation-heavy loop.

Two figures, each the median of alternating rounds (off, on, off, on...) so
a shared machine's drift is common to both:

* ``gc.collect(0)`` on a small heap, in a loop: the callback's cost per
  collection (two calls, a ``perf_counter()``, four counter increments);
* a loop that allocates container objects (so the collector runs by itself,
  every ~700 allocations for generation 0): the cost on a program's throughput.

    python3 benchmarks/gc_callbacks.py [--rounds 15] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import tempfile
import time

import statmap


def collect_loop(n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        gc.collect(0)
    return (time.perf_counter() - t) / n


def alloc_loop(n: int) -> float:
    t = time.perf_counter()
    keep: list[object] = []
    for i in range(n):
        keep.append({"i": i, "v": [i]})
        if len(keep) > 1000:
            keep = []
    return (time.perf_counter() - t) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        pub = statmap.Publisher("bench", d)
        results: dict[str, dict[str, list[float]]] = {"collect": {"off": [], "on": []}, "alloc": {"off": [], "on": []}}
        for _ in range(args.rounds):
            for state in ("off", "on"):
                metrics = statmap.gc_metrics(pub) if state == "on" else None
                results["collect"][state].append(collect_loop(20_000))
                results["alloc"][state].append(alloc_loop(1_000_000))
                if metrics is not None:
                    metrics.close()
        pub.close()
    out: dict[str, float] = {
        "collect0_ns_off": statistics.median(results["collect"]["off"]) * 1e9,
        "collect0_ns_on": statistics.median(results["collect"]["on"]) * 1e9,
        "alloc_ns_off": statistics.median(results["alloc"]["off"]) * 1e9,
        "alloc_ns_on": statistics.median(results["alloc"]["on"]) * 1e9,
    }
    out["per_collection_ns"] = out["collect0_ns_on"] - out["collect0_ns_off"]
    out["alloc_overhead_pct"] = 100 * (out["alloc_ns_on"] / out["alloc_ns_off"] - 1)
    if args.json:
        print(json.dumps({"backend": statmap.backend, **out}, indent=2))
    else:
        print(f"{'backend':20} {statmap.backend}")
        for k, v in out.items():
            print(f"{k:20} {v:.1f}")


if __name__ == "__main__":
    main()
