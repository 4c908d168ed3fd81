"""Updates racing ``close()``: threads keep updating every kind of metric while
the main thread closes the publisher. No update raises; after close the
metrics keep working in private memory, reads return their values, and the
file keeps what it had.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import statmap


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Switch threads as often as possible, so updates are interrupted mid-way."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


def _metrics(pub: statmap.Publisher) -> dict[str, Any]:
    fam = pub.counter("fam", "F", labels=("k",))
    gfam = pub.gauge("gfam", "G", labels=("k",))
    hfam = pub.histogram("hfam", "H", labels=("k",), buckets=(1.0,))
    for k in "ab":  # label sets created before the close: updated through the family lookup
        fam.labels(k)
        gfam.labels(k)
        hfam.labels(k)
    return {
        "c": pub.counter("c", "C"),
        "fc": pub.counter("fc", "FC", float=True),
        "g": pub.gauge("g", "G"),
        "h": pub.histogram("h", "H", buckets=(1.0, 2.0)),
        "s": pub.summary("s", "S"),
        "t": pub.text("t", "T", size=32),
        "e": pub.enum("e", "E", states=("x", "y")),
        "fam": fam,
        "gfam": gfam,
        "hfam": hfam,
    }


def _updates(m: dict[str, Any], n: int) -> list[Callable[[], object]]:
    k = "ab"[n % 2]
    return [
        m["c"].inc,
        lambda: m["fc"].inc(0.5),
        lambda: m["g"].set(float(n)),
        m["g"].inc,
        lambda: m["h"].observe(0.5),
        lambda: m["s"].observe(1.0),
        lambda: m["t"].set(f"thread {n} " + "x" * (n % 20)),
        lambda: m["e"].state("xy"[n % 2]),
        lambda: m["fam"].labels(k).inc(),
        lambda: m["gfam"].labels(k).set(1.0),
        lambda: m["hfam"].labels(k).observe(2.0),
        m["c"].get,
        m["h"].get,
        m["t"].get,
        m["s"].get,
    ]


def _work(m: dict[str, Any], n: int, stop: threading.Event, started: threading.Barrier, failures: list[str]) -> None:
    ops = _updates(m, n)
    started.wait()
    try:
        while not stop.is_set():
            for op in ops:
                op()
    except Exception as exc:  # noqa: BLE001 - the point: report any exception from any thread
        failures.append(f"thread {n}: {exc!r}")


def test_updates_racing_close_never_raise(statdir: str, fast_switching: None) -> None:
    failures: list[str] = []
    for round_ in range(30):
        pub = statmap.Publisher(f"race{round_}", statdir)
        m = _metrics(pub)
        stop = threading.Event()
        started = threading.Barrier(5)
        threads = [threading.Thread(target=_work, args=(m, n, stop, started, failures)) for n in range(4)]
        for th in threads:
            th.start()
        started.wait()
        time.sleep(0.002 * (round_ % 5))  # close at different points of the updates
        pub.close()
        time.sleep(0.01)  # updates keep running after the close
        stop.set()
        for th in threads:
            th.join(timeout=60)
        assert not any(th.is_alive() for th in threads), "a thread hung"
        assert not failures, f"round {round_}: {failures[:5]}"

        # After close: updates work in private memory, reads return them, the file keeps its values.
        with statmap.open(pub.path) as reader:
            before = {(s.name, tuple(s.labels.values())): s.value for s in reader.snapshot().series}
            m["c"].inc(3)
            c = m["c"].get()
            m["c"].inc(2)
            assert m["c"].get() == c + 2
            count = m["h"].get()[0]
            m["h"].observe(0.1)
            assert m["h"].get()[0] == count + 1
            m["t"].set("after close")
            assert m["t"].get() == "after close"
            m["g"].set(-1.5)
            assert m["g"].get() == -1.5
            fam = m["fam"].labels("a")
            n = fam.get()
            fam.inc(7)
            assert fam.get() == n + 7
            after = {(s.name, tuple(s.labels.values())): s.value for s in reader.snapshot().series}
        assert after == before


def test_values_after_close_continue_from_the_final_ones(statdir: str) -> None:
    """Without any race: after close, reads return what the file holds, and updates go on from there."""
    pub = statmap.Publisher("final", statdir)
    m = _metrics(pub)
    m["c"].inc(5)
    m["fc"].inc(1.5)
    m["g"].set(4.0)
    m["h"].observe(1.5)
    m["s"].observe(2.0)
    m["t"].set("last words")
    m["e"].state("y")
    m["fam"].labels("a").inc(9)
    pub.close()
    got = {k: m[k].get() for k in ("c", "fc", "g", "h", "s", "t", "e")}
    assert got == {"c": 5, "fc": 1.5, "g": 4.0, "h": (1, 1.5, (0, 1, 0)), "s": (1, 2.0), "t": "last words", "e": "y"}
    assert m["fam"].labels("a").get() == 9
    m["c"].inc()
    assert m["c"].get() == 6
    with statmap.open(pub.path) as reader:
        assert {s.name: s.value for s in reader.snapshot().series}["c"] == 5  # the file keeps its final value
