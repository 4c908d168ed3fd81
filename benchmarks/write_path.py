#!/usr/bin/env python3
"""Write-path benchmark: what one metric update costs, against plain Python and prometheus_client.

One run measures, each in its own process so that the choice made at import
time (statmap's cells, prometheus_client's value class) is clean:

  c      statmap with the C value cells
  pure   statmap with the pure-Python cells (STATMAP_PURE=1)
  prom   prometheus_client, one-process mode
  prommp prometheus_client, multiprocess mode (PROMETHEUS_MULTIPROC_DIR set before import)

Every process also times the two baselines, a plain ``obj.x += 1`` and a plain
``obj.x = v``, interleaved with its own operations, and ratios are taken
against the baselines of the same process (the machine may be shared and
noisy; only figures taken side by side are comparable).

Method: each statement is compiled once by ``timeit.Timer``; the loop count is
calibrated so one sample takes about ``--sample-ms``; the samples are taken
round-robin over all statements of a process (so load that comes and goes
hits every statement alike), ``--repeat`` times; we report the minimum (the
figure targets are judged on) and the median. The clock is the thread's CPU
time by default (``--clock wall`` for wall time), so time spent descheduled on
a busy machine is not counted. Figures include timeit's loop overhead (shown
as ``pass``), the same for every row.

``--instructions`` adds a deterministic second opinion: instructions per
call counted by ``valgrind --tool=callgrind`` (slow: a few minutes).

Usage:
  python benchmarks/write_path.py            # full run, a table
  python benchmarks/write_path.py --quick    # shorter samples, fewer repeats
  python benchmarks/write_path.py --json     # machine-readable results
  python benchmarks/write_path.py --suites c,pure --instructions
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from typing import Any

HERE = os.path.abspath(__file__)

# -- What is measured --------------------------------------------------------

# (key, statement, what it shows). Every process runs BASELINE first.
BASELINE = [
    ("loop", "pass", "timeit's loop overhead alone"),
    ("plain_incr", "obj.x += 1", "plain Python attribute increment"),
    ("plain_store", "obj.x = v", "plain Python attribute store"),
    ("plain_load", "obj.x", "plain Python attribute load"),
]

STATMAP = [
    ("counter_inc", "stats.requests.inc()", "Counter.inc() on a model-class attribute"),
    ("counter_iadd", "stats.requests += 1", "the same as += 1"),
    ("gauge_set", "stats.in_flight.set(v)", "Gauge.set(v)"),
    ("histogram_observe", "stats.latency.observe(v)", "Histogram.observe(v), default buckets"),
    ("histogram_log_observe", "stats.latency_log.observe(v)", "Histogram.observe(v), LogBuckets()"),
    ("exphistogram_observe", "stats.latency_exp.observe(v)", "Histogram.observe(v), Exponential() (format 1.2)"),
    # v = 0.25 is a power of two (no mantissa lookup); w = 0.3 is not
    ("histogram_observe_w", "stats.latency.observe(w)", "Histogram.observe(w), default buckets, w = 0.3"),
    ("exphistogram_observe_w", "stats.latency_exp.observe(w)", "Histogram.observe(w), Exponential(), w = 0.3"),
    ("summary_observe", "stats.average.observe(v)", "Summary.observe(v)"),
    ("text_set", "stats.last_path.set(path)", "Text.set(str)"),
    # exemplars (format 1.2, docs/format.md section 15): opt-in per update, the trace id of a request
    ("counter_inc_exemplar", "stats.requests.inc(exemplar=ex)", "Counter.inc(exemplar={trace_id, span_id})"),
    (
        "histogram_observe_exemplar",
        "stats.latency.observe(v, exemplar=ex)",
        "Histogram.observe(v, exemplar={trace_id, span_id}), default buckets",
    ),
    ("labels_pos_inc", 'stats.routes.labels("GET", "200").inc()', "labels(positional).inc(), existing child"),
    ("labels_kw_inc", 'stats.routes.labels(method="GET", status="200").inc()', "labels(by name).inc(), existing child"),
    ("knob_value", "knob.value", "a knob's .value (issue 13), the live knob in a variable"),
    ("knob_model_value", "stats.maintenance.value", "a knob's .value through the model-class attribute"),
    # Diagnostics: where the time of the rows above goes.
    ("diag_attr", "stats.requests", "diagnostic: the model-class attribute load alone"),
    # "local": the series held in a local variable (setup binds it once).
    ("diag_series_inc", "local.inc()", "diagnostic: inc() on the series held in a local variable"),
    ("diag_series_iadd", "local += 1", "diagnostic: += 1 on the series held in a local variable"),
    ("diag_gauge_set", "local_gauge.set(v)", "diagnostic: set(v) on the series held in a local variable"),
    ("diag_histogram_observe", "local_hist.observe(v)", "diagnostic: observe(v) on the series in a local variable"),
    ("diag_labels_pos", 'routes.labels("GET", "200")', "diagnostic: the positional child lookup alone"),
    (
        "diag_labels_kw_two",
        'routes.labels(method="GET", status="200").inc(); routes.labels(method="PUT", status="200").inc()',
        "diagnostic: two label sets in turn, by name (each call misses the last-hit shortcut): two calls",
    ),
    ("diag_call_floor", "empty.clear()", "diagnostic: the cheapest C method call (dict.clear on an empty dict)"),
]

PROM = [
    ("prom_counter_inc", "p_counter.inc()", "Counter.inc()"),
    ("prom_gauge_set", "p_gauge.set(v)", "Gauge.set(v)"),
    ("prom_histogram_observe", "p_histogram.observe(v)", "Histogram.observe(v), default buckets"),
    ("prom_summary_observe", "p_summary.observe(v)", "Summary.observe(v)"),
    ("prom_labels_pos_inc", 'p_routes.labels("GET", "200").inc()', "labels(positional).inc(), existing child"),
    (
        "prom_labels_kw_inc",
        'p_routes.labels(method="GET", status="200").inc()',
        "labels(by name).inc(), existing child",
    ),
]

SUITES: dict[str, dict[str, Any]] = {
    "c": {"title": "statmap, C cells", "env": {"STATMAP_PURE": None}, "cases": STATMAP},
    "pure": {"title": "statmap, pure-Python cells (STATMAP_PURE=1)", "env": {"STATMAP_PURE": "1"}, "cases": STATMAP},
    "prom": {
        "title": "prometheus_client, one-process mode",
        "env": {"PROMETHEUS_MULTIPROC_DIR": None, "prometheus_multiproc_dir": None},
        "cases": PROM,
    },
    "prommp": {
        "title": "prometheus_client, multiprocess mode",
        "env": {"PROMETHEUS_MULTIPROC_DIR": "<tmp>", "prometheus_multiproc_dir": None},
        "cases": PROM,
    },
}


class Plain:
    """The baseline object: an ordinary class instance."""

    def __init__(self) -> None:
        self.x = 0


def setup_namespace(suite: str, workdir: str) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """The globals the statements run in, facts about the process, and a clean-up callable."""
    ns: dict[str, Any] = {"obj": Plain(), "v": 0.25, "w": 0.3, "path": "/api/v1/orders/42", "empty": {}}
    ns["ex"] = {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7"}
    facts: dict[str, Any] = {}
    cleanup = lambda: None  # noqa: E731
    if suite in ("c", "pure"):
        import statmap

        class BenchStats(statmap.Stats):
            requests = statmap.Counter("Requests served")
            in_flight = statmap.Gauge("Requests being served")
            latency = statmap.Histogram("Request latency", unit="seconds")
            latency_log = statmap.Histogram("Request latency", unit="seconds", buckets=statmap.LogBuckets())
            latency_exp = statmap.Histogram("Request latency", unit="seconds", buckets=statmap.Exponential())
            average = statmap.Summary("Average latency", unit="seconds")
            last_path = statmap.Text("Last path served", size=128)
            routes = statmap.Counter("Requests by route", labels=("method", "status"))
            maintenance = statmap.Knob("Refuse new work", default=False)

        stats = BenchStats("bench", directory=workdir)
        stats.routes.labels("GET", "200").inc()  # the child exists before timing
        stats.routes.labels("PUT", "200").inc()
        ns.update(
            stats=stats,
            requests=stats.requests,
            in_flight=stats.in_flight,
            latency=stats.latency,
            routes=stats.routes,
            knob=stats.maintenance,
        )
        facts["backend"] = statmap.backend
        want = "python" if suite == "pure" else "c"
        if statmap.backend != want:
            raise SystemExit(f"suite {suite!r} wanted the {want!r} cells but statmap.backend is {statmap.backend!r}")
        cleanup = stats.remove
    else:
        from prometheus_client import CollectorRegistry, values
        from prometheus_client import Counter as PCounter
        from prometheus_client import Gauge as PGauge
        from prometheus_client import Histogram as PHistogram
        from prometheus_client import Summary as PSummary

        registry = CollectorRegistry()
        ns.update(
            p_counter=PCounter("bench_requests", "Requests served", registry=registry),
            p_gauge=PGauge("bench_in_flight", "Requests being served", registry=registry),
            p_histogram=PHistogram("bench_latency_seconds", "Request latency", registry=registry),
            p_summary=PSummary("bench_average_seconds", "Average latency", registry=registry),
            p_routes=PCounter("bench_routes", "Requests by route", ("method", "status"), registry=registry),
        )
        ns["p_routes"].labels("GET", "200").inc()
        multi = values.ValueClass is not values.MutexValue
        if multi != (suite == "prommp"):
            raise SystemExit(f"suite {suite!r}: prometheus_client multiprocess mode is {multi}")
        mode = "multiprocess" if multi else "one-process"
        facts["backend"] = f"prometheus_client {_dist_version('prometheus_client')}, {mode}"
    return ns, facts, cleanup


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:  # pragma: no cover
        return "?"


# -- Worker: runs inside the measured process --------------------------------


def calibrate(timer: timeit.Timer, sample_s: float) -> int:
    """A loop count that makes one sample last about ``sample_s`` seconds."""
    number = 1
    while True:
        took = timer.timeit(number)
        if took >= sample_s / 5:
            return max(1, int(number * sample_s / took))
        number *= 10


# Bound once per timer, as locals of timeit's function (unused names cost nothing).
LOCALS = "local = requests; local_gauge = in_flight; local_hist = latency"


CLOCKS = {"cpu": time.thread_time, "wall": time.perf_counter}
clock = CLOCKS["cpu"]


def timer_for(stmt: str, ns: dict[str, Any]) -> timeit.Timer:
    return timeit.Timer(stmt, setup=LOCALS if "local" in stmt else "pass", timer=clock, globals=ns)


def worker(suite: str, repeat: int, sample_s: float, workdir: str) -> dict[str, Any]:
    ns, facts, cleanup = setup_namespace(suite, workdir)
    try:
        cases = BASELINE + SUITES[suite]["cases"]
        timers = [(key, stmt, timer_for(stmt, ns)) for key, stmt, _ in cases]
        numbers = {key: calibrate(timer, sample_s) for key, _, timer in timers}
        samples: dict[str, list[float]] = {key: [] for key, _, _ in timers}
        for _ in range(repeat):  # round-robin: each round takes one sample of every statement
            for key, _, timer in timers:
                n = numbers[key]
                samples[key].append(timer.timeit(n) / n * 1e9)
        return {"facts": facts, "numbers": numbers, "samples": samples}
    finally:
        cleanup()


def count_worker(suite: str, count: int, workdir: str) -> dict[str, Any]:
    """For callgrind: around each loop call os.getppid(), where callgrind dumps its counters."""
    ns, facts, cleanup = setup_namespace(suite, workdir)
    try:
        order = []
        for key, stmt, _ in BASELINE + SUITES[suite]["cases"]:
            timer = timer_for(stmt, ns)
            timer.timeit(500)  # warm up: let the interpreter specialise the code
            os.getppid()  # dump: everything before the loop
            timer.timeit(count)
            os.getppid()  # dump: the loop
            order.append(key)
        return {"facts": facts, "order": order}
    finally:
        cleanup()


# -- Parent: runs the workers, checks targets, prints ----------------------------


def child_env(suite: str, multiproc_dir: str) -> dict[str, str]:
    env = dict(os.environ)
    for name, value in SUITES[suite]["env"].items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = multiproc_dir if value == "<tmp>" else value
    return env


def run_suite(suite: str, args: argparse.Namespace, workdir: str) -> dict[str, Any]:
    mpdir = tempfile.mkdtemp(prefix="prom-mp-", dir=workdir)
    cmd = [sys.executable, HERE, "--worker", suite, "--repeat", str(args.repeat), "--sample-ms", str(args.sample_ms)]
    cmd += ["--clock", args.clock]
    cmd += ["--workdir", workdir]
    out = subprocess.run(cmd, env=child_env(suite, mpdir), check=True, stdout=subprocess.PIPE, text=True).stdout
    result: dict[str, Any] = json.loads(out)
    return result


def count_suite(suite: str, count: int, workdir: str) -> dict[str, float]:
    """Instructions per call of every statement of a suite, by callgrind."""
    mpdir = tempfile.mkdtemp(prefix="prom-mp-", dir=workdir)
    cgdir = tempfile.mkdtemp(prefix="callgrind-", dir=workdir)
    cmd = [
        "valgrind", "--tool=callgrind", "--dump-before=getppid", "--compress-strings=no",
        f"--callgrind-out-file={cgdir}/cg.out",
        sys.executable, HERE, "--count-worker", suite, "--count", str(count), "--workdir", workdir,
    ]  # fmt: skip
    env = child_env(suite, mpdir)
    env["PYTHONHASHSEED"] = "0"
    out = subprocess.run(cmd, env=env, check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    order = json.loads(out.stdout)["order"]
    totals = {}
    for path in glob.glob(f"{cgdir}/cg.out.*"):
        with open(path) as f:
            m = re.search(r"^totals:\s*(\d+)", f.read(), re.M)
        totals[int(path.rsplit(".", 1)[1])] = int(m.group(1)) if m else 0
    # dumps 1, 3, 5... close the stretches before each loop; 2, 4, 6... the loops
    return {key: totals[2 * i + 2] / count for i, key in enumerate(order)}


def machine() -> dict[str, Any]:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "loadavg_1min": load,
    }


def summarise(raw: dict[str, Any], cases: list[tuple[str, str, str]]) -> dict[str, Any]:
    rows = {}
    samples = raw["samples"]
    base_incr = min(samples["plain_incr"])
    base_store = min(samples["plain_store"])
    for key, stmt, what in BASELINE + cases:
        s = samples[key]
        rows[key] = {
            "stmt": stmt,
            "what": what,
            "min_ns": min(s),
            "median_ns": statistics.median(s),
            "number": raw["numbers"][key],
            "samples_ns": s,
            "x_plain_incr": min(s) / base_incr,
            "x_plain_store": min(s) / base_store,
        }
    return {"backend": raw["facts"]["backend"], "rows": rows}


# (suite, name, measured key, limit: a number of ns, the key of a baseline, or "suite:key" for a row of
# another process of the same run; factor; strict "<"; judged on "min_ns" or "median_ns")
TARGETS: list[tuple[str, str, str, str | float, float, bool, str]] = [
    ("c", "C: stats.requests.inc() <= plain obj.x += 1", "counter_inc", "plain_incr", 1.0, False, "min_ns"),
    ("c", "C: stats.requests += 1 <= plain obj.x += 1", "counter_iadd", "plain_incr", 1.0, False, "min_ns"),
    ("c", "C: Gauge.set(v) <= plain obj.x = v", "gauge_set", "plain_store", 1.0, False, "min_ns"),
    ("c", "C: Histogram.observe(v) < 60 ns", "histogram_observe", 60.0, 1.0, True, "min_ns"),
    ("c", 'C: labels("GET", "200").inc() < 150 ns', "labels_pos_inc", 150.0, 1.0, True, "min_ns"),
    ("c", "C: labels(method=, status=).inc() < 150 ns", "labels_kw_inc", 150.0, 1.0, True, "min_ns"),
    ("pure", "pure: stats.requests.inc() < 4x plain obj.x += 1", "counter_inc", "plain_incr", 4.0, True, "min_ns"),
    ("c", 'C: labels("GET", "200").inc() < 100 ns, median', "labels_pos_inc", 100.0, 1.0, True, "median_ns"),
    ("c", "C: labels(method=, status=).inc() < 150 ns, median", "labels_kw_inc", 150.0, 1.0, True, "median_ns"),
    ("c", 'C: labels("GET", "200") alone < 100 ns, median', "diag_labels_pos", 100.0, 1.0, True, "median_ns"),
    (
        "pure",
        "pure: Histogram.observe(v) <= prometheus_client's",
        "histogram_observe",
        "prom:prom_histogram_observe",
        1.0,
        False,
        "min_ns",
    ),
    (
        "pure",
        "pure: Summary.observe(v) <= prometheus_client's",
        "summary_observe",
        "prom:prom_summary_observe",
        1.0,
        False,
        "min_ns",
    ),
    ("c", "C: knob.value <= 1.5x plain obj.x", "knob_value", "plain_load", 1.5, False, "min_ns"),
    ("pure", "pure: knob.value <= 1.5x plain obj.x", "knob_value", "plain_load", 1.5, False, "min_ns"),
    ("c", "C: Exponential Histogram.observe(v) < 60 ns", "exphistogram_observe", 60.0, 1.0, True, "min_ns"),
    ("c", "C: Exponential Histogram.observe(0.3) < 60 ns", "exphistogram_observe_w", 60.0, 1.0, True, "min_ns"),
]


def targets(suites: dict[str, Any], instructions: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """The issue's targets, judged on minimum (or median) times within one process, or against
    another process of the same run (``suite:key``, e.g. prometheus_client's one-process mode).

    A target relative to a baseline is also judged on instruction counts
    when they were taken (``by_instructions``), a second opinion free of noise.
    """
    out: list[dict[str, Any]] = []
    for suite, name, key, limit, factor, strict, stat in TARGETS:
        other, _, other_key = limit.partition(":") if isinstance(limit, str) else ("", "", "")
        if suite not in suites or (other_key and other not in suites):
            continue
        rows = suites[suite]["rows"]
        value = rows[key][stat]
        if isinstance(limit, str):
            bound = (suites[other]["rows"][other_key] if other_key else rows[limit])[stat] * factor
        else:
            bound = limit * factor
        entry = {
            "target": name,
            "value_ns": value,
            "limit_ns": bound,
            "pass": value < bound if strict else value <= bound,
        }
        counts = instructions.get(suite)
        if counts and isinstance(limit, str) and not other_key:
            ratio = counts[key] / counts[limit]
            entry["instructions_ratio"] = ratio
            entry["by_instructions"] = ratio < factor if strict else ratio <= factor
        out.append(entry)
    return out


def print_report(result: dict[str, Any]) -> None:
    m = result["machine"]
    print(f"# statmap write path: {m['cpu']}, {m['nproc']} CPUs, Python {m['python']}, load {m['loadavg_1min']}")
    print(f"# repeat={result['repeat']} sample={result['sample_ms']} ms clock={result['clock']}")
    print("# ns per call, including timeit's loop overhead (the 'pass' row); ratios use minimums")
    for name, suite in result["suites"].items():
        print(f"\n## {SUITES[name]['title']}  [{suite['backend']}]")
        print(f"{'operation':55s} {'min ns':>8s} {'median':>8s} {'x incr':>7s} {'x store':>7s}")
        for row in suite["rows"].values():
            print(
                f"{row['stmt']:55s} {row['min_ns']:8.1f} {row['median_ns']:8.1f} "
                f"{row['x_plain_incr']:7.2f} {row['x_plain_store']:7.2f}"
            )
    if result.get("instructions"):
        print("\n## instructions per call (callgrind, incl. loop overhead)")
        for name, counts in result["instructions"].items():
            print(f"-- {SUITES[name]['title']}")
            for key, n in counts.items():
                stmt = dict((k, s) for k, s, _ in BASELINE + SUITES[name]["cases"])[key]
                print(f"   {stmt:55s} {n:8.0f}")
    print("\n## targets (judged on minimum times unless 'median'; [instructions] = the same ratio, if counted)")
    for t in result["targets"]:
        line = (
            f"{'PASS' if t['pass'] else 'FAIL'}  {t['target']:50s} {t['value_ns']:7.1f} ns vs {t['limit_ns']:6.1f} ns"
            f" ({t['value_ns'] / t['limit_ns']:.2f}x)"
        )
        if "by_instructions" in t:
            verdict = "pass" if t["by_instructions"] else "fail"
            line += f"  [instructions: {t['instructions_ratio']:.2f}x, {verdict}]"
        print(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="shorter samples and fewer repeats (about 30 s)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--repeat", type=int, help="samples per statement (default 15, quick 5)")
    ap.add_argument("--sample-ms", type=float, help="length of one sample (default 5 ms, quick 2 ms)")
    ap.add_argument(
        "--clock", choices=sorted(CLOCKS), default="cpu",
        help="cpu: this thread's CPU time, so time spent descheduled on a busy machine is not counted (default); wall",
    )  # fmt: skip
    ap.add_argument("--suites", default="c,pure,prom,prommp", help="which processes to run (default all)")
    ap.add_argument("--instructions", action="store_true", help="also count instructions per call with callgrind")
    ap.add_argument("--count", type=int, default=5000, help=argparse.SUPPRESS)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--count-worker", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.repeat is None:
        args.repeat = 5 if args.quick else 15
    if args.sample_ms is None:
        args.sample_ms = 2.0 if args.quick else 5.0

    global clock
    clock = CLOCKS[args.clock]
    if args.worker:
        json.dump(worker(args.worker, args.repeat, args.sample_ms / 1000, args.workdir), sys.stdout)
        return
    if args.count_worker:
        json.dump(count_worker(args.count_worker, args.count, args.workdir), sys.stdout)
        return

    names = [s for s in args.suites.split(",") if s]
    for s in names:
        if s not in SUITES:
            ap.error(f"unknown suite {s!r}; choose from {','.join(SUITES)}")
    workdir = tempfile.mkdtemp(prefix="statmap-bench-")
    try:
        suites = {}
        for s in names:
            if not args.json:
                print(f"running {SUITES[s]['title']}...", file=sys.stderr)
            suites[s] = summarise(run_suite(s, args, workdir), SUITES[s]["cases"])
        instructions = {}
        if args.instructions:
            if not shutil.which("valgrind"):
                print("valgrind not found: skipping instruction counts", file=sys.stderr)
            else:
                for s in names:
                    if not args.json:
                        print(f"counting instructions: {SUITES[s]['title']}...", file=sys.stderr)
                    instructions[s] = count_suite(s, args.count, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result = {
        "command": " ".join(["python", os.path.relpath(HERE), *sys.argv[1:]]),
        "machine": machine(),
        "repeat": args.repeat,
        "sample_ms": args.sample_ms,
        "clock": args.clock,
        "suites": suites,
        "instructions": instructions,
        "targets": targets(suites, instructions),
    }
    if args.json:
        json.dump(result, sys.stdout, indent=1)
        print()
    else:
        print_report(result)


if __name__ == "__main__":
    main()
