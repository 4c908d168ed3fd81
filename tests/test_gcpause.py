"""gcpause: the cyclic collector off across a bulk read, as it was afterwards, its deferred pass paid inside."""

from __future__ import annotations

import gc
import threading

from statmap.collect import Collector
from statmap.expose import Exposer
from statmap.gcpause import paused


def test_pause_nests_and_restores_an_enabled_collector() -> None:
    assert gc.isenabled()
    with paused:
        assert not gc.isenabled()
        with paused:
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer pause is still on
    assert gc.isenabled()


def test_a_disabled_collector_stays_disabled() -> None:
    gc.disable()
    try:
        with paused:
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_an_exception_ends_the_pause() -> None:
    try:
        with paused:
            raise KeyError("x")
    except KeyError:
        pass
    assert gc.isenabled()


def test_the_young_objects_left_by_a_pause_are_collected_at_its_end() -> None:
    """The collection the pause held back runs at its end, inside the pause's caller, not at the program's
    next allocation; cycles made during the pause are freed then."""
    gc.collect()
    threshold = gc.get_threshold()[0]
    collections: list[int] = []

    def seen(phase: str, info: dict[str, int]) -> None:
        if phase == "stop":
            collections.append(info["generation"])

    gc.callbacks.append(seen)
    try:
        with paused:
            junk: list[object] = [Node() for _ in range(threshold * 3)]
            cycle: list[object] = []
            cycle.append(cycle)
            ref = id(cycle)
            del cycle
            assert gc.get_count()[0] > threshold and not collections
        assert collections  # collected before the pause returned
        assert gc.get_count()[0] < threshold
        assert all(id(o) != ref for o in gc.get_objects())
    finally:
        gc.callbacks.remove(seen)
    del junk


class Node:
    """An object the collector tracks."""


def test_threads_share_one_pause() -> None:
    """A thread ending its pause does not turn the collector back on under another thread's pause."""
    inside, release = threading.Event(), threading.Event()

    def other() -> None:
        with paused:
            inside.set()
            release.wait(10)

    t = threading.Thread(target=other)
    t.start()
    try:
        assert inside.wait(10)
        with paused:
            pass
        assert not gc.isenabled()  # the other thread's pause still holds
    finally:
        release.set()
        t.join()
    assert gc.isenabled()


def test_a_scrape_leaves_the_collector_as_it_found_it(statdir: str) -> None:
    import statmap

    pub = statmap.Publisher("app", statdir)
    for f in range(3):
        fam = pub.counter(f"hits{f}", "Hits", labels=("k",))
        for i in range(1000):
            fam.labels(str(i)).inc()
    try:
        with Collector(statdir) as collector:
            text = Exposer().openmetrics(collector.collect())
            assert gc.isenabled()
            assert gc.get_count()[0] < gc.get_threshold()[0]
        assert 'hits2_total{k="999"} 1' in text
        gc.disable()
        try:
            with Collector(statdir) as collector:
                Exposer().prometheus(collector.collect())
            assert not gc.isenabled()
        finally:
            gc.enable()
    finally:
        pub.close()
