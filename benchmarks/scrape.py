"""Scrape cost: statmap's aggregated OpenMetrics scrape against prometheus_client's multiprocess mode.

One run fills, for each load, a statmap directory and a prometheus_client
multiprocess directory from real worker processes (the same metrics, the
same values), then times on the same machine, in the same process:

The statmap workers stay alive during the measurement (so every scrape
probes their locks, as with a running server); prometheus_client's
multiprocess files do not depend on their writers being alive.

* statmap, cold: a new ``Collector`` (opens and parses every file) and the
  OpenMetrics text;
* statmap, repeated: the same ``Collector`` and ``Exposer`` scraping again
  (cached metadata; only values are re-read);
* prometheus_client: ``MultiProcessCollector`` + ``generate_latest`` (it
  re-reads every file at every scrape).

Loads: 16 and 64 processes, each with (a) 1000 counters (10 labelled
counters of 100 label sets) and (b) 200 counters plus 50 histograms
(5 labelled histograms of 10 label sets, prometheus_client's default buckets).

What a reader polling 100 times a second costs a busy writer is measured
by benchmarks/poll_cost.py.

    python3 benchmarks/scrape.py            # about a minute here
    python3 benchmarks/scrape.py --quick    # 16 processes only, fewer repeats
    python3 benchmarks/scrape.py --clock wall  # wall time instead of the thread's CPU time
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.abspath(__file__)
FAMILIES_A = (10, 100, 0, 0)  # counter families, label sets each, histogram families, label sets each
FAMILIES_B = (2, 100, 5, 10)


def worker(kind: str, directory: str, seed: int, counters: int, sets: int, hists: int, hsets: int) -> None:
    """One worker process: create the metrics, give every series a value (statmap's then wait, alive)."""
    values = [(seed * 7 + i) % 13 + 1 for i in range(max(sets, hsets))]
    if kind == "statmap":
        import statmap

        pub = statmap.Publisher("bench", directory, capacity=1 << 20)
        for f in range(counters):
            fam = pub.counter(f"requests_{f}", "Requests", labels=("endpoint",))
            for i in range(sets):
                fam.labels(f"/e{i}").inc(values[i])
        for f in range(hists):
            fam = pub.histogram(f"latency_{f}", "Latency", labels=("endpoint",), unit="seconds")
            for i in range(hsets):
                fam.labels(f"/e{i}").observe(values[i] / 100)
        print("ready", flush=True)
        sys.stdin.read()  # stay alive (holding the file's lock) until the benchmark is done
        pub.close()
    else:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        from prometheus_client import Counter, Histogram

        for f in range(counters):
            fam = Counter(f"requests_{f}", "Requests", ["endpoint"])
            for i in range(sets):
                fam.labels(f"/e{i}").inc(values[i])
        for f in range(hists):
            fam = Histogram(f"latency_{f}_seconds", "Latency", ["endpoint"])
            for i in range(hsets):
                fam.labels(f"/e{i}").observe(values[i] / 100)


def fill(kind: str, directory: str, processes: int, load: tuple[int, int, int, int]) -> list[subprocess.Popen[str]]:
    """Run the workers; statmap's stay alive (returned) until their stdin is closed."""
    alive: list[subprocess.Popen[str]] = []
    batch: list[subprocess.Popen[str]] = []
    for seed in range(processes):
        argv = [sys.executable, HERE, "--worker", kind, directory, str(seed), *map(str, load)]
        p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        batch.append(p)
        if len(batch) >= 8:
            _settle(kind, batch, alive)
    _settle(kind, batch, alive)
    return alive


def _settle(kind: str, batch: list[subprocess.Popen[str]], alive: list[subprocess.Popen[str]]) -> None:
    for p in batch:
        if kind == "statmap":
            assert p.stdout is not None and p.stdout.readline() == "ready\n"
            alive.append(p)
        else:
            assert p.wait() == 0
    batch.clear()


def stop(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        assert p.stdin is not None
        p.stdin.close()
    for p in procs:
        p.wait()


CLOCK = time.thread_time  # CPU time of this thread: time spent descheduled on a busy machine is not counted


def timed(fn, repeats: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(repeats):
        t = CLOCK()
        fn()
        out.append(CLOCK() - t)
    return out


def measure(processes: int, load_name: str, load: tuple[int, int, int, int], repeats: int) -> dict[str, object]:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    from statmap.collect import Collector
    from statmap.expose import Exposer

    base = tempfile.mkdtemp(prefix="statmap-scrape-")
    sdir, pdir = os.path.join(base, "statmap"), os.path.join(base, "prom")
    os.mkdir(sdir, 0o700)
    os.mkdir(pdir, 0o700)
    try:
        workers = fill("statmap", sdir, processes, load)
        fill("prom", pdir, processes, load)

        def statmap_cold() -> str:
            with Collector(sdir) as c:
                return Exposer().openmetrics(c.collect())

        warm = Collector(sdir)
        exposer = Exposer()

        def statmap_warm() -> str:
            return exposer.openmetrics(warm.collect())

        def prom() -> bytes:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=pdir)  # type: ignore[no-untyped-call]
            return generate_latest(registry)

        # Same totals on both sides (a sanity check of the comparison).
        text = statmap_warm()
        ptext = prom().decode()
        s_total = sum(
            float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("requests_0_total")
        )
        p_total = sum(
            float(line.rsplit(" ", 1)[1]) for line in ptext.splitlines() if line.startswith("requests_0_total")
        )
        assert s_total == p_total, (s_total, p_total)

        cold = timed(statmap_cold, max(3, repeats // 3))
        hot = timed(statmap_warm, repeats)
        pc = timed(prom, max(3, repeats // 3))
        warm.close()
        stop(workers)
        series = processes * (load[0] * load[1] + load[2] * load[3])
        return {
            "processes": processes,
            "load": load_name,
            "series_in_files": series,
            "statmap_cold_ms": [1e3 * min(cold), 1e3 * statistics.median(cold)],
            "statmap_repeated_ms": [1e3 * min(hot), 1e3 * statistics.median(hot)],
            "prometheus_client_ms": [1e3 * min(pc), 1e3 * statistics.median(pc)],
            "speedup_repeated": min(pc) / min(hot),
            "speedup_cold": min(pc) / min(cold),
            "output_bytes": len(text),
        }
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        kind, directory, seed, *sizes = sys.argv[2:]
        worker(kind, directory, int(seed), *map(int, sizes))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="16 processes only, fewer repeats")
    ap.add_argument("--repeats", type=int, default=30, help="scrapes timed per case (default 30)")
    ap.add_argument("--json", action="store_true", help="print JSON")
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu", help="thread CPU time (default) or wall time")
    args = ap.parse_args()
    global CLOCK
    CLOCK = time.thread_time if args.clock == "cpu" else time.perf_counter
    import statmap

    repeats = 10 if args.quick else args.repeats
    results = []
    for processes in (16,) if args.quick else (16, 64):
        for name, load in (("1000 counters", FAMILIES_A), ("200 counters + 50 histograms", FAMILIES_B)):
            results.append(measure(processes, name, load, repeats))
            if not args.json:
                r: Any = results[-1]
                rep, cold, prom = r["statmap_repeated_ms"], r["statmap_cold_ms"], r["prometheus_client_ms"]
                print(
                    f"{processes:3d} x {name:<30} statmap repeated {rep[0]:7.2f} ms (median {rep[1]:.2f}),"
                    f" cold {cold[0]:7.2f} ms; prometheus_client {prom[0]:8.2f} ms (median {prom[1]:.2f});"
                    f" x{r['speedup_repeated']:.0f} repeated, x{r['speedup_cold']:.1f} cold",
                    flush=True,
                )
    doc: dict[str, object] = {
        "statmap_backend": statmap.backend,
        "python": sys.version.split()[0],
        "clock": args.clock,
        "scrape": results,
    }
    if args.json:
        print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
