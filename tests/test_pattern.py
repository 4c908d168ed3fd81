"""statmap's name patterns: the same answers as ``re.search`` on the language they accept,
clear refusals of the rest, and time linear in the name whatever the pattern."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from statmap.collect import match_families
from statmap.pattern import MAX_PATTERN, Pattern, PatternError, compile_pattern

from .conftest import SCALE

pytestmark = pytest.mark.once  # pure string matching: no value cells

SETTINGS = settings(
    max_examples=max(1, int(300 * SCALE)),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

COMMON = ["http_.*", "^jobs", "a|b", "^requests_0$", "^lat", "lat.*|^lev", r"\w+_total$", "^req", "lat", "requests"]
NAMES = ["http_requests", "jobs", "svc:jobs", "requests_0", "requests_01", "latency", "level", "foo_total", "", "_9"]


def test_common_patterns_mean_what_they_meant() -> None:
    for p in COMMON:
        rx = re.compile(p)
        for name in NAMES:
            assert compile_pattern(p).search(name) == bool(rx.search(name)), (p, name)


ATOMS = [
    "a",
    "b",
    "_",
    ":",
    ".",
    "[ab]",
    "[^a]",
    "[a-c_]",
    r"\w",
    r"\W",
    r"\d",
    r"\s",
    r"\b",
    r"\B",
    "^",
    "$",
    r"\.",
    "x",
]


def _pattern() -> st.SearchStrategy[str]:
    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        quantified = st.tuples(inner, st.sampled_from(["*", "+", "?", "{2}", "{1,3}", "{,2}", "*?", "+?", "{2,}"])).map(
            lambda t: f"(?:{t[0]}){t[1]}"
        )
        return st.one_of(
            quantified,
            st.lists(inner, min_size=2, max_size=4).map("".join),
            st.lists(inner, min_size=2, max_size=3).map(lambda xs: "(" + "|".join(xs) + ")"),
        )

    return st.recursive(st.sampled_from(ATOMS), extend, max_leaves=8)


@SETTINGS
@given(_pattern(), st.lists(st.text(alphabet="ab_1 :x.", min_size=1, max_size=12), min_size=1, max_size=6))
def test_agrees_with_re_search(pattern: str, names: list[str]) -> None:
    rx = re.compile(pattern)
    ours = Pattern(pattern)
    for name in names:
        assert ours.search(name) == bool(rx.search(name)), (pattern, name)


@pytest.mark.parametrize(
    ("pattern", "words"),
    [
        (r"(a)\1", "backreferences are not supported at position 3"),
        ("(?P<x>a)(?P=x)", "backreferences are not supported"),
        ("(?=jobs)", "lookaround assertions are not supported"),
        ("(?<!a)b", "lookaround assertions are not supported"),
        ("(?i)jobs", "inline flags"),
        ("a++", "possessive quantifiers are not supported"),
        ("(", "missing ), unterminated subpattern at position 0"),
        ("a)", "unbalanced parenthesis"),
        ("*a", "nothing to repeat"),
        ("[z-a]", "bad character range"),
        ("[ab", "unterminated character set"),
        (r"\q", r"bad escape \q"),
        ("a{5000}", "repetition count too large"),
        ("(?:a{1,300}){1,300}", "pattern too large"),
        ("x" * (MAX_PATTERN + 1), f"pattern too long ({MAX_PATTERN + 1} characters, at most {MAX_PATTERN})"),
    ],
)
def test_refusals_name_the_problem(pattern: str, words: str) -> None:
    with pytest.raises(PatternError) as info:
        Pattern(pattern)
    assert words in str(info.value)
    assert isinstance(info.value, re.error)  # callers catching re.error keep working


EVIL = [
    r"(?:\w*\w*\w*\w*\w*)*!",
    r"(a|aa)*!",
    r"(\w+)+!",
    r"(.*)*x!",
    r"(a*)*b",
    r"(x+x+)+y",
    r"(?:.*a){20}",
    r"(?:a|a?)+b",
    r"(?:[a-z_]*[a-z_]*)*[0-9]{2}!",
    r"^(?:(?:a{1,30}){1,30})*$!",
]


def test_time_is_linear_in_the_name() -> None:
    """Patterns that take a backtracking engine minutes take us milliseconds on the longest names."""
    texts = ["a" * 264, "x" * 264, "a_rather_long_publisher_name_for_backtracking:" + "jobs_" * 40]
    for p in EVIL:
        started = time.monotonic()
        pattern = Pattern(p)  # fresh: no warm DFA cache
        for t in texts:
            pattern.search(t)
        assert time.monotonic() - started < 2.0, p  # re needs minutes to hours for several of them


def test_match_families_uses_the_safe_engine() -> None:
    from statmap.collect import MetricFamily

    fams = [MetricFamily("web", n, "counter", "", "", "sum", False, False, ()) for n in ("jobs", "latency", "a" * 60)]
    assert [f.name for f in match_families(fams, "^jobs|lat")] == ["jobs", "latency"]
    assert [f.name for f in match_families(fams, r"^web:j")] == ["jobs"]
    assert list(match_families(fams, r"(?:\w*\w*\w*\w*\w*)*!")) == []
    with pytest.raises(PatternError, match="backreferences"):
        list(match_families(fams, r"(a)\1"))
