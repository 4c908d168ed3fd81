"""Name patterns (``match=``, ``--match``) matched in time linear in the name.

Python's ``re`` backtracks: ``(?:\\w*\\w*\\w*)*!`` against a 40-character
metric name runs for minutes inside one C call that holds the interpreter
lock, so a single ``/metrics?match=...`` froze every thread of
``statmap serve``. Patterns come from untrusted clients, so statmap
compiles them with its own code into a Thompson NFA and runs it as a lazily
built DFA (the RE2 method): each character of a name costs one dictionary
look-up once the DFA state is known, and at most one pass over the NFA
(bounded by ``MAX_PROGRAM``) the first time. Nothing backtracks, whatever
the pattern. google-re2 is not used even when installed, so a pattern
means the same thing everywhere.

The language is the part of Python's regular expressions that needs no
backtracking (docs/serve.md, "Patterns"): literals and escaped
punctuation, ``.``, classes ``[a-z_]`` ``[^0-9]``, ``\\d \\w \\s \\D \\W \\S``,
groups ``(...)`` ``(?:...)`` ``(?P<name>...)``, ``|`` anywhere, ``* + ?
{n} {n,} {,m} {n,m}`` (and their lazy forms, which match the same names),
anchors ``^ $ \\A \\Z \\b \\B``. Backreferences, lookaround, inline flags,
conditionals and possessive quantifiers are refused with a ``PatternError``
(a ``re.error``) naming the construct and its position. ``search``
semantics, as ``re.search``: the pattern may match anywhere in the name.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from functools import lru_cache

MAX_PATTERN = 512  # characters; a metric name is at most 200
MAX_PROGRAM = 4000  # NFA instructions after expanding counted repetitions
MAX_CACHE = 4096  # DFA transitions kept per pattern (then the cache starts over)


class PatternError(re.error):
    """A pattern statmap does not accept; the message names the problem and its position."""


# -- character sets ---------------------------------------------------------------------

CharTest = Callable[[str], bool]


def _word(c: str) -> bool:
    return c.isalnum() or c == "_"


_CATEGORY: dict[str, CharTest] = {
    "d": str.isdecimal,
    "w": _word,
    "s": str.isspace,
    "D": lambda c: not c.isdecimal(),
    "W": lambda c: not _word(c),
    "S": lambda c: not c.isspace(),
}
_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v", "a": "\a", "0": "\0"}


class _Set:
    """A character class: single characters, ranges and categories, maybe negated."""

    __slots__ = ("chars", "negated", "ranges", "tests")

    def __init__(self) -> None:
        self.chars: set[str] = set()
        self.ranges: list[tuple[str, str]] = []
        self.tests: list[CharTest] = []
        self.negated = False

    def __call__(self, c: str) -> bool:
        hit = c in self.chars or any(lo <= c <= hi for lo, hi in self.ranges) or any(t(c) for t in self.tests)
        return hit != self.negated


def _literal(ch: str) -> CharTest:
    return ch.__eq__


def _any(c: str) -> bool:
    return c != "\n"


# -- parsing into a small tree -----------------------------------------------------------
# Nodes: ("char", test) ("assert", kind) ("cat", [nodes]) ("alt", [nodes]) ("repeat", node, min, max|None)

Node = tuple[object, ...]


class _Parser:
    def __init__(self, pattern: str) -> None:
        self.p = pattern
        self.i = 0

    def error(self, message: str, pos: int | None = None) -> PatternError:
        return PatternError(message, self.p, self.i if pos is None else pos)

    def peek(self) -> str | None:
        return self.p[self.i] if self.i < len(self.p) else None

    def parse(self) -> Node:
        node = self.alternation()
        if self.i < len(self.p):  # only a stray ")" stops an alternation early
            raise self.error("unbalanced parenthesis")
        return node

    def alternation(self) -> Node:
        branches = [self.concatenation()]
        while self.peek() == "|":
            self.i += 1
            branches.append(self.concatenation())
        return branches[0] if len(branches) == 1 else ("alt", branches)

    def concatenation(self) -> Node:
        items: list[Node] = []
        while (c := self.peek()) is not None and c not in "|)":
            start = self.i
            atom = self.atom()
            items.append(self.quantified(atom, start))
        return ("cat", items)

    def quantified(self, atom: Node, start: int) -> Node:
        c = self.peek()
        if c is None:
            return atom
        lo: int
        hi: int | None
        if c in "*+?":
            lo, hi = {"*": (0, None), "+": (1, None), "?": (0, 1)}[c]
            self.i += 1
        elif c == "{" and (counted := re.match(r"\{(\d*)(,?)(\d*)\}", self.p[self.i :])):
            a, comma, b = counted.groups()
            lo = int(a) if a else 0
            hi = (int(b) if b else None) if comma else lo
            if hi is not None and hi < lo:
                raise self.error("min repeat greater than max repeat")
            if lo > MAX_PROGRAM or (hi or 0) > MAX_PROGRAM:
                raise self.error("repetition count too large")
            self.i += counted.end()
        else:
            return atom
        if atom[0] == "assert":
            raise self.error("nothing to repeat", start)
        if self.peek() == "?":
            self.i += 1  # lazy: the same names match
        elif self.peek() == "+":
            raise self.error("possessive quantifiers are not supported")
        if (c2 := self.peek()) is not None and c2 in "*+?":
            raise self.error("multiple repeat")
        return ("repeat", atom, lo, hi)

    def atom(self) -> Node:
        c = self.p[self.i]
        start = self.i
        self.i += 1
        if c == "(":
            if self.p.startswith("?", self.i):
                rest = self.p[self.i :]
                if rest.startswith("?:"):
                    self.i += 2
                elif named := re.match(r"\?P<([A-Za-z_][A-Za-z0-9_]*)>", rest):
                    self.i += named.end()
                elif rest.startswith(("?=", "?!", "?<=", "?<!")):
                    raise self.error("lookaround assertions are not supported", start)
                elif rest.startswith("?P="):
                    raise self.error("backreferences are not supported", start)
                elif rest.startswith("?("):
                    raise self.error("conditional groups are not supported", start)
                elif rest.startswith("?>"):
                    raise self.error("atomic groups are not supported", start)
                else:
                    raise self.error("inline flags and other (?...) groups are not supported", start)
            inner = self.alternation()
            if self.peek() != ")":
                raise self.error("missing ), unterminated subpattern", start)
            self.i += 1
            return inner
        if c == ")":
            raise self.error("unbalanced parenthesis", start)
        if c in "*+?":
            raise self.error("nothing to repeat", start)
        if c == "{" and re.match(r"\{\d*,?\d*\}", self.p[start:]):
            raise self.error("nothing to repeat", start)
        if c == ".":
            return ("char", _any)
        if c == "^":
            return ("assert", "start")
        if c == "$":
            return ("assert", "end")
        if c == "[":
            return ("char", self.char_class(start))
        if c == "\\":
            return self.escape(start, in_class=False)
        return ("char", _literal(c))

    def escape(self, start: int, in_class: bool) -> Node:
        """The escape starting at ``start`` (its backslash); ``self.i`` is just after the backslash."""
        value = self.escape_value(start, in_class)
        if isinstance(value, tuple):
            return value
        return ("char", _literal(value) if isinstance(value, str) else value)

    def escape_value(self, start: int, in_class: bool) -> str | CharTest | Node:
        """One character, a category test, or (outside classes) an assertion node."""
        c = self.peek()
        if c is None:
            raise self.error("bad escape (end of pattern)", start)
        self.i += 1
        if c in _CATEGORY:
            return _CATEGORY[c]
        if c in _SIMPLE_ESCAPES and not (c == "0" and (self.peek() or "").isdigit()):
            return _SIMPLE_ESCAPES[c]
        if c in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[c]
            digits = self.p[self.i : self.i + width]
            if len(digits) != width or not all(d in "0123456789abcdefABCDEF" for d in digits):
                raise self.error(f"incomplete escape \\{c}{digits}", start)
            self.i += width
            if int(digits, 16) > 0x10FFFF:
                raise self.error(f"bad escape \\{c}{digits}", start)
            return chr(int(digits, 16))
        if c == "b" and in_class:
            return "\b"
        if not in_class and c in "AZbB":
            return ("assert", {"A": "start", "Z": "end", "b": "word", "B": "notword"}[c])
        if c.isdigit():
            raise self.error("backreferences are not supported", start)
        if c.isascii() and c.isalnum():
            raise self.error(f"bad escape \\{c}", start)
        return c

    def class_item(self) -> str | CharTest:
        start = self.i
        c = self.p[self.i]
        self.i += 1
        if c != "\\":
            return c
        value = self.escape_value(start, in_class=True)
        assert not isinstance(value, tuple)  # no assertions inside a class
        return value

    def char_class(self, start: int) -> _Set:
        s = _Set()
        if self.peek() == "^":
            s.negated = True
            self.i += 1
        first = True
        while True:
            c = self.peek()
            if c is None:
                raise self.error("unterminated character set", start)
            if c == "]" and not first:
                self.i += 1
                return s
            first = False
            item_start = self.i
            lo = self.class_item()
            if not isinstance(lo, str):
                s.tests.append(lo)
                continue
            if self.peek() == "-" and self.i + 1 < len(self.p) and self.p[self.i + 1] != "]":
                self.i += 1
                hi = self.class_item()
                if not isinstance(hi, str) or hi < lo:
                    raise self.error("bad character range", item_start)
                s.ranges.append((lo, hi))
            else:
                s.chars.add(lo)


# -- compiling to an NFA program --------------------------------------------------------
# Instructions: ("char", test, next) ("split", a, b) ("assert", kind, next) ("match",)


class _Compiler:
    def __init__(self, pattern: str) -> None:
        self.prog: list[list[object]] = []
        self.pattern = pattern

    def emit(self, *ins: object) -> int:
        if len(self.prog) >= MAX_PROGRAM:
            raise PatternError("pattern too large (repetition counts?)", self.pattern)
        self.prog.append(list(ins))
        return len(self.prog) - 1

    def node(self, n: Node, nxt: int) -> int:
        """Emit ``n`` so that it continues at ``nxt``; return its entry point."""
        kind = n[0]
        if kind == "char":
            return self.emit("char", n[1], nxt)
        if kind == "assert":
            return self.emit("assert", n[1], nxt)
        if kind == "cat":
            items: list[Node] = n[1]  # type: ignore[assignment]
            for item in reversed(items):
                nxt = self.node(item, nxt)
            return nxt
        if kind == "alt":
            branches: list[Node] = n[1]  # type: ignore[assignment]
            entry = self.node(branches[-1], nxt)
            for b in reversed(branches[:-1]):
                entry = self.emit("split", self.node(b, nxt), entry)
            return entry
        if kind == "repeat":
            inner: Node = n[1]  # type: ignore[assignment]
            lo: int = n[2]  # type: ignore[assignment]
            hi: int | None = n[3]  # type: ignore[assignment]
            if hi is None:  # inner{lo,}: lo copies, then a loop
                loop = self.emit("split", -1, nxt)
                body = self.node(inner, loop)
                self.prog[loop][1] = body
                entry = loop
            else:  # optional copies, each may stop early
                entry = nxt
                for _ in range(hi - lo):
                    entry = self.emit("split", self.node(inner, entry), nxt)
            for _ in range(lo):
                entry = self.node(inner, entry)
            return entry
        raise AssertionError(kind)


START, WORD, OTHER, END = 0, 1, 2, 3


class Pattern:
    """A compiled pattern: ``search(text)`` is True when it matches anywhere in ``text``."""

    def __init__(self, pattern: str) -> None:
        if len(pattern) > MAX_PATTERN:
            raise PatternError(f"pattern too long ({len(pattern)} characters, at most {MAX_PATTERN})", pattern)
        self.pattern = pattern
        tree = _Parser(pattern).parse()
        c = _Compiler(pattern)
        match = c.emit("match")
        entry = c.node(tree, match)
        self._prog = c.prog
        self._entry = entry
        self._match = match
        self._context = any(ins[0] == "assert" and ins[1] != "start" for ins in c.prog)
        self._ids: dict[frozenset[int], int] = {}
        self._states: list[frozenset[int]] = []
        self._accepting: list[bool] = []
        self._next: dict[tuple[int, str, int], int] = {}
        self._lock = threading.Lock()  # the DFA tables are built while searching

    def __repr__(self) -> str:
        return f"Pattern({self.pattern!r})"

    def _closure(self, pcs: list[int], prev: int, nxt: int) -> int:
        """The DFA state of the threads at ``pcs`` plus a new search starting here."""
        seen: set[int] = set()
        out: set[int] = set()
        stack = [*pcs, self._entry]
        prog = self._prog
        while stack:
            pc = stack.pop()
            if pc in seen:
                continue
            seen.add(pc)
            ins = prog[pc]
            op = ins[0]
            if op == "split":
                stack.append(ins[2])  # type: ignore[arg-type]
                stack.append(ins[1])  # type: ignore[arg-type]
            elif op == "assert":
                kind = ins[1]
                ok = (
                    (kind == "start" and prev == START)
                    or (kind == "end" and nxt == END)
                    or (kind == "word" and (prev == WORD) != (nxt == WORD))
                    or (kind == "notword" and (prev == WORD) == (nxt == WORD))
                )
                if ok:
                    stack.append(ins[2])  # type: ignore[arg-type]
            else:
                out.add(pc)
        key = frozenset(out)
        sid = self._ids.get(key)
        if sid is None:
            sid = len(self._states)
            self._ids[key] = sid
            self._states.append(key)
            self._accepting.append(self._match in key)
        return sid

    def search(self, text: str) -> bool:
        with self._lock:
            return self._search(text)

    def _search(self, text: str) -> bool:
        if len(self._next) > MAX_CACHE or len(self._states) > MAX_CACHE:
            # Bounded memory: start over (each step still costs at most one pass over the NFA).
            self._next = {}
            self._ids = {}
            self._states = []
            self._accepting = []
        context = self._context
        cats = [WORD if _word(ch) else OTHER for ch in text] if context else None
        first = (cats[0] if text else END) if cats is not None else OTHER
        state = self._closure([], START, first)
        accepting = self._accepting
        table = self._next
        prog = self._prog
        n = len(text)
        for i, ch in enumerate(text):
            if accepting[state]:
                return True
            nxt = (cats[i + 1] if i + 1 < n else END) if cats is not None else OTHER
            key = (state, ch, nxt)
            new = table.get(key)
            if new is None:
                moved = [
                    ins[2]  # type: ignore[misc]
                    for pc in self._states[state]
                    if (ins := prog[pc])[0] == "char" and ins[1](ch)  # type: ignore[operator]
                ]
                prev = cats[i] if cats is not None else OTHER
                new = table[key] = self._closure(moved, prev, nxt)  # type: ignore[arg-type]
            state = new
        return accepting[state]


@lru_cache(maxsize=32)
def compile_pattern(pattern: str) -> Pattern:
    """The compiled ``pattern`` (cached, so repeated requests reuse their DFA); ``PatternError`` if refused."""
    return Pattern(pattern)


__all__ = ["MAX_PATTERN", "Pattern", "PatternError", "compile_pattern"]
