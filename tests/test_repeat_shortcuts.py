"""The repeat scrape's shortcuts write what a fresh collector and exposer write.

An integer counter family whose slots are a run and whose values did not
change keeps its Samples (one compare of its sums, ``aggregate``), and a
family whose Samples were all kept keeps its lines (``expose``). Here files
of different layouts (a run, a subset of it, interleaved families, a float
counter, gauges through 0.0 and -0.0) come, change, stay idle and go, and
every scrape is compared with a fresh ``Collector`` and ``Exposer``.
"""

from __future__ import annotations

import os
from typing import Any

import statmap
from statmap.collect import Collector
from statmap.expose import Exposer

from .test_render_plan import _Pair


def _after(statdir: str, path: str) -> statmap.Publisher:
    """A publisher of "app" whose file sorts after ``path``: a fresh collector meets the series in the
    same order as a kept one (series are ordered as first seen, files by name)."""
    while True:
        pub = statmap.Publisher("app", statdir)
        if pub.path > path:
            return pub
        other = pub.path
        pub.close()
        os.unlink(other)


def test_idle_and_moving_counters_of_several_layouts(statdir: str) -> None:
    pair = _Pair(statdir)
    full = statmap.Publisher("app", statdir)
    reqs = full.counter("reqs", "Requests", labels=("k",))
    errs = full.counter("errs", "Errors", labels=("k",))
    gauge = full.gauge("temp", "Temperature", labels=("k",))
    for i in range(10):
        reqs.labels(str(i)).inc(i)
        errs.labels(str(i)).inc(2**60 + i)  # big: two files sum beyond 2**64
    gauge.labels("a").set(0.0)
    pair.check()
    pair.check()  # idle: every shortcut taken
    reqs.labels("3").inc()
    pair.check()  # one value moved: the family's samples again, the others kept
    gauge.labels("a").set(-0.0)  # equal to 0.0, written otherwise
    pair.check()
    gauge.labels("a").set(float("nan"))
    pair.check()
    # A second file: a subset of the series, its families interleaved (not a run of slots).
    part = _after(statdir, full.path)
    preqs = part.counter("reqs", "Requests", labels=("k",))
    perrs = part.counter("errs", "Errors", labels=("k",))
    for i in (9, 0, 5):
        perrs.labels(str(i)).inc(2**63)
        preqs.labels(str(i)).inc(i)
    pair.check()
    pair.check()
    preqs.labels("new").inc()  # a new label set: a new slot in the family
    pair.check()
    part.counter("flt", "Float", labels=("k",), float=True).labels("x").inc(0.5)
    pair.check()
    pair.check()
    part.close()  # closed: its values still count
    pair.check()
    reqs.labels("3").inc(0)
    pair.check()
    full.close()


def test_a_kept_exposer_across_a_file_that_comes_back(statdir: str) -> None:
    """Families present, absent (no file), present again: a family with no series must not keep old lines."""
    pub = statmap.Publisher("app", statdir)
    pub.counter("reqs", "Requests", labels=("k",)).labels("a").inc(5)
    kept, exposer = Collector(statdir), Exposer()
    first = exposer.openmetrics(kept.collect())
    assert first == exposer.openmetrics(kept.collect())
    path = pub.path
    pub.close()
    os.unlink(path)
    assert exposer.openmetrics(kept.collect()) == Exposer().openmetrics(Collector(statdir).collect())
    again = statmap.Publisher("app", statdir)
    again.counter("reqs", "Requests", labels=("k",)).labels("a").inc(5)
    with Collector(statdir) as fresh:
        assert exposer.openmetrics(kept.collect()) == Exposer().openmetrics(fresh.collect())
        assert exposer.openmetrics(kept.collect()) == Exposer().openmetrics(fresh.collect())
    again.close()
    kept.close()


def test_a_run_summed_after_a_file_summed_slot_by_slot(statdir: str) -> None:
    """The first file's counters are not a run of slots (a gauge between them); the second's are."""
    pair = _Pair(statdir)
    first = statmap.Publisher("app", statdir)
    reqs = first.counter("reqs", "Requests", labels=("k",))
    reqs.labels("a").inc(3)
    first.gauge("load", "Load").set(1.5)
    reqs.labels("b").inc(4)
    second = _after(statdir, first.path)
    second.counter("reqs", "Requests", labels=("k",)).labels("a").inc(10)
    pair.check()
    text = Exposer().openmetrics(pair.collector.collect())
    assert 'reqs_total{k="a"} 13\n' in text and 'reqs_total{k="b"} 4\n' in text
    reqs.labels("b").inc()
    pair.check()
    first.close()
    second.close()


def _worker_like(statdir: str, after: str | None = None) -> tuple[statmap.Publisher, Any]:
    pub = _after(statdir, after) if after else statmap.Publisher("app", statdir)
    fam = pub.counter("reqs", "Requests", labels=("k",))
    for i in range(20):  # enough records for a template (record_table.TEMPLATE_MIN_RECORDS)
        fam.labels(f"v{i:02d}").inc(i)
    return pub, fam


def test_files_of_one_template_grow_apart(statdir: str) -> None:
    """Files that share a template's classification (shared lists) grow, each its own way, and others join."""
    pair = _Pair(statdir)
    first, ffam = _worker_like(statdir)
    pair.check()
    second, sfam = _worker_like(statdir, first.path)
    pair.check()  # the second file takes the first's classification
    ffam.labels("only-first").inc(7)  # the template's own first file grows: its own lists from here on
    pair.check()
    sfam.labels("only-second").inc(5)  # so does the second
    pair.check()
    third, _tfam = _worker_like(statdir, second.path)
    pair.check()  # joins with the template's classification, not the others' growth
    fourth, _ = _worker_like(statdir, third.path)
    pair.check()
    text = Exposer().openmetrics(pair.collector.collect())
    assert 'reqs_total{k="v03"} 12\n' in text  # 4 files x 3
    assert 'reqs_total{k="only-second"} 5\n' in text and 'reqs_total{k="only-first"} 7\n' in text
    sources = {s.path: s for s in pair.collector._sources.values()}
    assert len(sources[third.path].int_off) == 20 and len(sources[fourth.path].int_off) == 20
    assert len(sources[first.path].int_off) == 21 and len(sources[second.path].int_off) == 21
    for pub in (first, second, third, fourth):
        pub.close()
