"""Knobs: values an operator turns in a running program (the program's side).

    class WebStats(statmap.Stats):
        maintenance = statmap.Knob("Refuse new work", default=False)

    if stats.maintenance.value: ...

``.value`` is a plain attribute of a ``LiveKnob``: reading it makes no
system call and is never torn, because the watcher replaces the whole
object. One daemon thread per process (the *watcher*) looks at each
publisher's control file (control_file.py) every ``POLL_INTERVAL``
seconds, checks every requested value against the knob's declaration
(knob_values.parse_value), applies it, and publishes in the knob's record
what it applied, where it came from and who asked, or the refusal and why.
``on_change`` callbacks run on the watcher thread, after the new value is
in place; an exception in one is reported (a RuntimeWarning) and counted
in ``callback_errors``, and the others still run.

Start-up value: ``STATMAP_KNOB_<NAME>`` in the environment if set and valid
(origin ``environment``), else the declared default (``default``); then the
operator's desired state in the control file is applied at once, before the
constructor returns (``operator``). A forked child (gunicorn ``--preload``)
creates its file at fork and applies the control file before it returns
from fork, so ``statmap set`` either waits for it or it sees the request.
The watcher is stopped before a fork and started again after it in both
processes: no thread is copied half-way through a callback.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _layout as L
from . import cells, control_file
from ._proc import process_start_time
from .knob_values import (
    HISTORY,
    Change,
    Control,
    KnobDecl,
    KnobState,
    canonical,
    decl_extras,
    encode_state,
    parse_value,
    state_capacity,
    typed,
)
from .metrics import Metric

if TYPE_CHECKING:
    from .owner import FileOwner

ENV_PREFIX = "STATMAP_KNOB_"
POLL_INTERVAL = 0.05  # seconds between two looks at the control files
_RECENT_NS = 1_000_000_000  # a control file changed this recently is read again (coarse file times)


class LiveKnob:
    """One declared knob in this process. Read ``.value``; never assign it."""

    __slots__ = ("_callbacks", "_cap", "_cell", "_start", "_state", "callback_errors", "decl", "help", "name", "value")

    def __init__(self, name: str, decl: KnobDecl, help: str, cell: Any, start: tuple[str, str]) -> None:
        self.name = name
        self.decl = decl
        self.help = help
        self._cell = cell
        self._cap = cell.capacity
        self._start = start  # (canonical value, origin) this process starts from
        self._callbacks: list[Callable[[Any, Any], Any]] = []
        self.callback_errors = 0
        now, uid, pid = time.time_ns(), os.getuid(), os.getpid()
        self._state = KnobState(origin=start[1], uid=uid, pid=pid, when_ns=now, value=start[0])
        self.value: Any = typed(decl, start[0])

    @property
    def origin(self) -> str:
        """Where the value came from: ``default``, ``environment`` or ``operator``."""
        return self._state.origin

    @property
    def default(self) -> Any:
        return typed(self.decl, self.decl.default)

    @property
    def state(self) -> KnobState:
        """What this process published about the knob (value, origin, who, when, last refusal, history)."""
        return self._state

    def on_change(self, callback: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        """Call ``callback(old, new)`` on the watcher thread after each change; usable as a decorator."""
        self._callbacks.append(callback)
        return callback

    def _publish(self, state: KnobState) -> None:
        self._state = state
        self._cell.set(encode_state(state, self._cap))

    def __repr__(self) -> str:
        return f"<statmap knob {self.name}={self.value!r} ({self.origin})>"


def _decl_for(default: Any, min: Any, max: Any, choices: Any, size: int | None) -> KnobDecl:
    if isinstance(default, bool):
        kind = "bool"
    elif isinstance(default, int):
        kind = "int"
    elif isinstance(default, float):
        kind = "float"
    elif isinstance(default, str):
        kind = "str"
    else:
        raise TypeError(f"knob default must be a bool, int, float or str, not {type(default).__name__}")
    if (min is not None or max is not None) and kind not in ("int", "float"):
        raise ValueError("min and max apply to int and float knobs")
    if (choices or size is not None) and kind != "str":
        raise ValueError("choices and size apply to str knobs")
    bare = KnobDecl(kind, "")
    lo = canonical(bare, min) if min is not None else None
    hi = canonical(bare, max) if max is not None else None
    if lo is not None and hi is not None and float(lo) > float(hi):
        raise ValueError(f"knob min {min!r} is above max {max!r}")
    choice_tuple = tuple(choices or ())
    if any(not isinstance(c, str) for c in choice_tuple) or len(set(choice_tuple)) != len(choice_tuple):
        raise ValueError("choices must be distinct strings")
    if size is not None and not 0 < size <= 4096:
        raise ValueError("size must be 1..4096 bytes")
    decl = KnobDecl(kind, "", lo, hi, choice_tuple, size or 256)
    return dataclasses.replace(decl, default=canonical(decl, default))


class Knob(Metric[LiveKnob]):
    """A value an operator can change at run time (``statmap set``). The default's type is the knob's type.

    bool, int, float (``min``/``max``), or str (``choices``, or at most ``size`` bytes).
    """

    mtype = L.KNOB

    def __init__(
        self,
        help: str = "",
        *,
        default: Any,
        min: Any = None,
        max: Any = None,
        choices: Any = (),
        size: int | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(help, name=name)
        self.decl = _decl_for(default, min, max, choices, size)

    def _spec_extra(self) -> dict[str, Any]:
        return {"extras": decl_extras(self.decl), "capacity": state_capacity(self.decl)}

    def _series(self, publisher: FileOwner, name: str, labels: tuple[tuple[str, str], ...]) -> Any:
        capacity = state_capacity(self.decl)
        cell = publisher.add_series(self._spec(name, labels), lambda b: cells.Text(b.buffer, b.offset, capacity))
        knob = LiveKnob(name, self.decl, self.help, cell, _start_value(name, self.decl))
        _register(publisher, knob)
        return knob


def _start_value(name: str, decl: KnobDecl) -> tuple[str, str]:
    env = os.environ.get(ENV_PREFIX + name.upper())
    if env is not None:
        try:
            return parse_value(decl, env), "environment"
        except ValueError as exc:
            warnings.warn(f"statmap: {ENV_PREFIX}{name.upper()} ignored: {exc}", RuntimeWarning, stacklevel=4)
    return decl.default, "default"


# -- the watcher ---------------------------------------------------------------------


class _Group:
    """The knobs of one publisher and what was last read from its control file."""

    def __init__(self, publisher: FileOwner) -> None:
        self.publisher = publisher
        self.path = control_file.control_path(publisher.directory, publisher.name)
        self.knobs: dict[str, LiveKnob] = {}
        self.signature: tuple[int, int, int, int] | None = None
        self.raw: Control | None = None
        self.problem: str | None = None


_groups: dict[int, _Group] = {}
_lock = threading.RLock()  # applies (watcher, declarations, fork) one at a time
_stop = threading.Event()
_thread: threading.Thread | None = None
_pending: list[tuple[LiveKnob, Any, Any]] = []  # callbacks the watcher runs next (changes applied at fork)
#: Problems reported so far (control files refused, callbacks that raised), for tests and tools.
problems: list[str] = []


def _target() -> str:
    pid = os.getpid()
    return f"{pid}:{process_start_time(pid)}"


def _register(publisher: FileOwner, knob: LiveKnob) -> None:
    with _lock:
        group = _groups.get(id(publisher))
        if group is None:
            group = _groups[id(publisher)] = _Group(publisher)
        group.knobs[knob.name] = knob
        knob._publish(knob._state)
        # The record is visible now: read the control file after that, so that an operator who wrote it
        # before either finds this record (and waits for its answer) or wrote before this read.
        control, problem = control_file.load(group.path)
        _note_problem(group, problem)
        # No callback can be registered yet: none to run. The group's other knobs see this file at the
        # watcher's next look (group.raw is left as it was, so a change is not taken as seen).
        _evaluate(knob, control, _target(), force=True)
        _ensure_thread()


def _note_problem(group: _Group, problem: str | None) -> None:
    if problem and problem != group.problem:
        message = f"statmap: control file {group.path}: {problem}"
        problems.append(message)
        warnings.warn(message, RuntimeWarning, stacklevel=2)
    group.problem = problem


def _evaluate(knob: LiveKnob, control: Control | None, target: str, *, force: bool = False) -> list[Any]:
    """Apply what ``control`` asks of ``knob``; publish the state; return the (knob, old, new) changes."""
    old = knob._state
    seq = control.seq if control else 0
    entry = control.desired(knob.name, target) if control else None
    new = dataclasses.replace(old, seen_seq=seq)
    if entry is not None and entry.action == "set":
        try:
            value = parse_value(knob.decl, entry.value)
        except ValueError as exc:
            new = dataclasses.replace(
                new,
                refused_seq=seq,
                refused_value=entry.value[: knob.decl.value_bytes],
                refused_reason=str(exc),
                refused_when_ns=time.time_ns(),
            )
        else:
            new = dataclasses.replace(
                new, applied_seq=seq, origin="operator", uid=entry.uid, pid=entry.pid, when_ns=entry.when_ns,
                value=value, refused_seq=0, refused_value="", refused_reason="", refused_when_ns=0,
            )  # fmt: skip
    else:
        value, origin = knob._start
        new = dataclasses.replace(new, refused_seq=0, refused_value="", refused_reason="", refused_when_ns=0)
        if (old.value, old.origin) != (value, origin):  # back to the start value: who asked, if known
            who = (entry.uid, entry.pid, entry.when_ns) if entry else (os.getuid(), os.getpid(), time.time_ns())
            new = dataclasses.replace(
                new, applied_seq=seq if entry else 0, origin=origin, uid=who[0], pid=who[1], when_ns=who[2], value=value
            )
    changes = []
    if (new.value, new.origin) != (old.value, old.origin):
        change = Change(time.time_ns(), new.origin, new.uid, new.pid, old.value, new.value)
        new = dataclasses.replace(new, history=(*old.history, change)[-HISTORY:])
        if new.value != old.value:
            before = knob.value
            knob.value = typed(knob.decl, new.value)  # one store of a whole object: never torn
            changes.append((knob, before, knob.value))
    if force or new != old:
        knob._publish(new)
    return changes


def _apply_group(group: _Group, *, force: bool = False) -> list[Any]:
    control, problem = control_file.load(group.path)
    _note_problem(group, problem)
    if problem is not None:
        return []  # keep what is applied: a refused file changes nothing
    if not force and control == group.raw:
        return []
    group.raw = control
    target = _target()
    changes: list[Any] = []
    for knob in list(group.knobs.values()):
        changes += _evaluate(knob, control, target, force=force)
    return changes


def _run_callbacks(changes: list[Any]) -> None:
    for knob, old, new in changes:
        for callback in list(knob._callbacks):
            try:
                callback(old, new)
            except Exception as exc:  # noqa: BLE001 - reported, and the other callbacks still run
                knob.callback_errors += 1
                message = f"statmap: on_change callback {callback!r} of knob {knob.name!r} raised {exc!r}"
                problems.append(message)
                warnings.warn(message, RuntimeWarning, stacklevel=1)


def check_now() -> None:
    """Look at every control file now, as the watcher does every POLL_INTERVAL (callbacks run here)."""
    with _lock:
        changes, _pending[:] = list(_pending), []
        for key, group in list(_groups.items()):
            if group.publisher.closed:
                del _groups[key]
                continue
            signature = control_file.signature(group.path)
            recent = signature is not None and time.time_ns() - signature[1] < _RECENT_NS
            if signature != group.signature or recent:
                group.signature = signature
                changes += _apply_group(group)
    _run_callbacks(changes)


def _loop(stop: threading.Event) -> None:
    while not stop.wait(POLL_INTERVAL):
        try:
            check_now()
        except Exception as exc:  # noqa: BLE001 - the watcher must outlive any one failure
            problems.append(f"statmap: knob watcher: {exc!r}")
            warnings.warn(f"statmap: knob watcher: {exc!r}", RuntimeWarning, stacklevel=1)


def _ensure_thread() -> None:
    global _thread, _stop
    if _thread is not None and _thread.is_alive():
        return
    _stop = threading.Event()
    _thread = threading.Thread(target=_loop, args=(_stop,), name="statmap-knobs", daemon=True)
    _thread.start()


def _os_threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 0


def _stop_thread() -> None:
    global _thread
    thread = _thread
    if thread is None or thread is threading.current_thread():
        return  # a fork from a callback: the watcher goes on in the parent
    before = _os_threads()
    _stop.set()
    thread.join(1.0)  # a callback stuck longer: fork anyway, as without knobs
    _thread = None
    # join() returns before the OS thread is gone; Python 3.12+ counts OS threads at fork
    # (and warns): wait the few microseconds it takes, at most 20 ms.
    deadline = time.monotonic() + 0.02
    while before and _os_threads() >= before and time.monotonic() < deadline:
        time.sleep(0)


def _before_fork() -> None:
    _stop_thread()  # first: the watcher may be waiting for the lock
    _lock.acquire()


def _after_fork_in_parent() -> None:
    if _groups:
        _ensure_thread()
    _lock.release()


def _after_fork_in_child() -> None:
    global _lock, _thread
    _lock = threading.RLock()
    _thread = None
    for key, group in list(_groups.items()):
        if group.publisher.closed:
            del _groups[key]
            continue
        try:
            group.publisher.path  # noqa: B018 - creates the child's file now (owner.py makes it lazily)
            group.signature = control_file.signature(group.path)
            _pending.extend(_apply_group(group, force=True))  # the values were zeroed in the child's file
        except Exception as exc:  # noqa: BLE001 - never break the fork
            problems.append(f"statmap: knobs after fork: {exc!r}")
    if _groups:
        _ensure_thread()


# After owner.py's hooks (imported before this module): the child's file is set up when this runs.
os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)
