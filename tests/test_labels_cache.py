"""``labels(...)``'s last-hit shortcut (C ``Family``): the same series as the full lookup, always.

The C lookup returns the last hit's series when every value is the very
object of the last key (no tuple built, hashed or looked up; issue 12: the
labelled hot path). These tests hold it to the full lookup: equal values
that are other objects, alternating label sets, names in any order, values
whose deallocation calls ``labels()`` again, a freed value whose address a
new one might take. Both cell backends (the pure ``Family`` has no shortcut).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import statmap


@pytest.fixture
def family(statdir: str) -> Iterator[Any]:
    pub = statmap.Publisher("web", statdir)
    yield pub.counter("requests", "Requests", labels=("method", "status"))
    pub.close()


def test_every_spelling_of_a_label_set_is_one_series(family: Any) -> None:
    first = family.labels("GET", "200")
    status = "".join(["2", "00"])  # equal, another object
    assert family.labels("GET", "200") is first
    assert family.labels(method="GET", status="200") is first
    assert family.labels(status="200", method="GET") is first
    assert family.labels("GET", status) is first
    assert family.labels(method="GET", status=status) is first
    assert family.labels("GET", 200) is first  # values are strings in the file
    first.inc(2)
    assert family.labels(status=200, method="GET").get() == 2


def test_alternating_label_sets_each_get_their_own_series(family: Any) -> None:
    sets = [("GET", "200"), ("POST", "200"), ("GET", "500"), ("GET", "200"), ("POST", "500")]
    made = {s: family.labels(*s) for s in sets}
    for _ in range(3):
        for s in sets:
            family.labels(*s).inc()
            family.labels(method=s[0], status=s[1]).inc()
    for s in set(sets):
        assert made[s].get() == 6 * sets.count(s)
        assert family.labels(*s) is made[s]


def test_a_freed_value_cannot_alias_a_new_one(family: Any) -> None:
    for i in range(100):  # fresh strings each round: freed ones' addresses are reused by new ones
        method = f"M{i}"
        child = family.labels(method, "200")
        child.inc()
        del method
        assert family.labels(f"M{i + 1000}", "200") is not child
        assert family.labels(f"M{i}", "200") is child
    assert all(family.labels(f"M{i}", "200").get() == 1 for i in range(100))


class _Reentrant(str):
    """A label value whose deallocation looks a series up again (runs while the cache is replaced)."""

    family: Any = None

    def __del__(self) -> None:
        if _Reentrant.family is not None:
            _Reentrant.family.labels("DEL", "200").inc()


def test_a_value_whose_deallocation_calls_labels_leaves_the_lookup_sound(family: Any) -> None:
    for i in range(50):
        family.labels(f"R{i}", "200")  # the series exist: the dict's keys are these plain strings
    family.labels("DEL", "200")
    _Reentrant.family = family
    try:
        for i in range(50):
            # an equal value, another object: a dict hit whose key (only the shortcut holds it) is
            # replaced by the next call, which frees it, which calls labels() during the replacement
            family.labels(_Reentrant(f"R{i}"), "200").inc()
            family.labels("GET", "200").inc()
    finally:
        _Reentrant.family = None
    assert family.labels("GET", "200").get() == 50
    assert family.labels("DEL", "200").get() == 50  # every replaced value ran its __del__
    assert all(family.labels(f"R{i}", "200").get() == 1 for i in range(50))


def test_wrong_names_and_counts_still_fail_after_a_hit(family: Any) -> None:
    family.labels(method="GET", status="200")
    with pytest.raises(ValueError, match="expected labels"):
        family.labels(method="GET", code="200")
    with pytest.raises(ValueError, match="expected 2 label values"):
        family.labels("GET")
    with pytest.raises(TypeError, match="not both"):
        family.labels("GET", status="200")
