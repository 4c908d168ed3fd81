"""Knobs (issue 13): the program's side, ``statmap set`` / ``statmap knobs``, the control file, the format.

Real processes: workers declare knobs and report what their main thread
sees in a text metric (``observed``), so a test checks the value the program
reads, not only what it published.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import statmap
from statmap import _layout as L
from statmap import control_file, knobs
from statmap.knob_state import file_knobs_json, read_knobs
from statmap.knob_values import Control, Entry, KnobDecl, decode_control, decode_state, encode_control, parse_value

from .conftest import VECTORS

WORKER = r"""
import json, sys, time
import statmap

class WebStats(statmap.Stats):
    requests = statmap.Counter("Requests served")
    observed = statmap.Text("What the main thread reads", size=512)
    log_level = statmap.Knob("Log level", default="info", choices=("debug", "info", "warning", "error"))
    rate_limit = statmap.Knob("Requests per second allowed", default=100, min=1, max=int(sys.argv[2]))
    maintenance = statmap.Knob("Refuse new work", default=False)
    ratio = statmap.Knob("A share", default=0.5, min=0.0, max=1.0)

stats = WebStats("web", sys.argv[1])
stats.maintenance.on_change(lambda old, new: print("change", old, new, flush=True))
print("ready", flush=True)
while True:
    seen = {k: getattr(stats, k).value for k in ("log_level", "rate_limit", "maintenance", "ratio")}
    seen["origin"] = stats.maintenance.origin
    stats.observed.set(json.dumps(seen, sort_keys=True))
    time.sleep(0.01)
"""


def cli(statdir: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "statmap", *args, "--dir", statdir], capture_output=True, text=True, timeout=timeout
    )


class Workers:
    def __init__(self, statdir: str) -> None:
        self.statdir = statdir
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, max_rate: int = 10_000, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, self.statdir, str(max_rate)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        self.procs.append(proc)
        return proc

    def observed(self, proc: subprocess.Popen[str]) -> dict[str, Any]:
        """What the worker's main thread last read, from its ``observed`` text metric."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for path in statmap.discover.statmap_files(self.statdir):
                if f".{proc.pid}." in os.path.basename(path):
                    with statmap.open(path) as reader:
                        for s in reader.snapshot().series:
                            if s.name == "observed" and s.value:
                                return dict(json.loads(s.value))
            time.sleep(0.02)
        raise AssertionError(f"worker {proc.pid} published nothing")

    def wait_observed(self, proc: subprocess.Popen[str], **want: Any) -> dict[str, Any]:
        deadline = time.monotonic() + 10
        while True:
            seen = self.observed(proc)
            if all(seen[k] == v for k, v in want.items()) or time.monotonic() > deadline:
                return seen
            time.sleep(0.02)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stdout:
                proc.stdout.close()


@pytest.fixture
def workers(statdir: str) -> Iterator[Workers]:
    w = Workers(statdir)
    yield w
    w.stop()


# -- declarations and values ---------------------------------------------------------------


def test_declarations_take_their_type_from_the_default() -> None:
    assert statmap.Knob(default=True).decl.type == "bool"
    assert statmap.Knob(default=3, min=1, max=5).decl == KnobDecl("int", "3", "1", "5")
    assert statmap.Knob(default=0.5, min=0, max=1).decl == KnobDecl("float", "0.5", "0.0", "1.0")
    assert statmap.Knob(default="a", choices=("a", "b")).decl.choices == ("a", "b")
    for bad in (
        {"default": None},
        {"default": 0, "min": 5},  # default below min
        {"default": 0, "min": 2, "max": 1},
        {"default": True, "min": 0},
        {"default": 1, "choices": ("a",)},
        {"default": "c", "choices": ("a", "b")},
        {"default": "x" * 10, "size": 4},
        {"default": float("nan")},
    ):
        with pytest.raises((ValueError, TypeError)):
            statmap.Knob(**bad)


@pytest.mark.parametrize(
    ("decl", "text", "want"),
    [
        (KnobDecl("bool", "false"), "TRUE", "true"),
        (KnobDecl("bool", "false"), "off", "false"),
        (KnobDecl("bool", "false"), "maybe", None),
        (KnobDecl("int", "1", "1", "10"), "10", "10"),
        (KnobDecl("int", "1", "1", "10"), "11", None),
        (KnobDecl("int", "1", "1", "10"), "1.5", None),
        (KnobDecl("int", "1"), str(1 << 63), None),
        (KnobDecl("int", "1"), "1_000", "1000"),
        (KnobDecl("float", "0.0", "0.0", "1.0"), "1e-3", "0.001"),
        (KnobDecl("float", "0.0"), "nan", None),
        (KnobDecl("float", "0.0"), "inf", None),
        (KnobDecl("float", "0.0"), "1e999", None),
        (KnobDecl("float", "0.0", "0.0", "1.0"), "-0.0", "0.0"),
        (KnobDecl("str", "a", choices=("a", "b")), "b", "b"),
        (KnobDecl("str", "a", choices=("a", "b")), "B", None),
        (KnobDecl("str", "", size=4), "abcd", "abcd"),
        (KnobDecl("str", "", size=4), "abcdé", None),
    ],
)
def test_values_are_checked_against_the_declaration(decl: KnobDecl, text: str, want: str | None) -> None:
    if want is None:
        with pytest.raises(ValueError):
            parse_value(decl, text)
    else:
        assert parse_value(decl, text) == want


def test_value_is_a_plain_slot_attribute(statdir: str) -> None:
    """``.value`` is a slot the watcher replaces whole: no property, no call, no system call."""
    assert type(vars(statmap.LiveKnob)["value"]).__name__ == "member_descriptor"
    pub = statmap.Publisher("plain", statdir)
    knob = pub.knob("flag", default=False)
    assert knob.value is False and knob.origin == "default"
    pub.remove()


# -- the program's side -----------------------------------------------------------------------


def test_environment_sets_the_start_value_and_a_bad_one_is_ignored(workers: Workers) -> None:
    proc = workers.start(env={"STATMAP_KNOB_MAINTENANCE": "yes", "STATMAP_KNOB_RATE_LIMIT": "0"})
    seen = workers.observed(proc)
    assert seen["maintenance"] is True and seen["origin"] == "environment"
    assert seen["rate_limit"] == 100  # 0 is below the minimum: the default stays
    states = {k.name: k for p in read_knobs(workers.statdir, "web")[0] for k in p.knobs.values()}
    assert states["maintenance"].state is not None and states["maintenance"].state.origin == "environment"
    assert states["rate_limit"].state is not None and states["rate_limit"].state.origin == "default"


def test_set_reaches_every_live_process_and_those_started_later(workers: Workers) -> None:
    a, b = workers.start(), workers.start()
    out = cli(workers.statdir, "set", "web", "maintenance=true", "rate_limit=250")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert sorted(lines) == sorted(
        f"web pid {p.pid}: {kv}: applied" for p in (a, b) for kv in ("maintenance=true", "rate_limit=250")
    )
    for p in (a, b):  # the main loop's next look (it reports every 10 ms)
        seen = workers.wait_observed(p, maintenance=True, rate_limit=250)
        assert (seen["maintenance"], seen["rate_limit"], seen["origin"]) == (True, 250, "operator")
        assert p.stdout is not None and p.stdout.readline().split() == ["change", "False", "True"]
    c = workers.start()  # a replaced worker starts with the operator's values
    seen = workers.observed(c)
    assert (seen["maintenance"], seen["rate_limit"], seen["origin"]) == (True, 250, "operator")
    out = cli(workers.statdir, "set", "web", "maintenance", "--reset")
    assert out.returncode == 0, out.stdout + out.stderr
    assert len(out.stdout.splitlines()) == 3 and all("reset: false (default)" in x for x in out.stdout.splitlines())
    for p in (a, b, c):
        seen = workers.wait_observed(p, maintenance=False)
        assert (seen["maintenance"], seen["rate_limit"]) == (False, 250)
    doc = json.loads(cli(workers.statdir, "knobs", "web", "--json").stdout)
    procs = doc["publishers"]["web"]["processes"]
    assert len(procs) == 3
    knob = {k["name"]: k for k in procs[0]["knobs"]}["maintenance"]
    assert knob["value"] is False and knob["origin"] == "default" and knob["set_by"]["pid"] > 0
    assert [(h["old"], h["new"]) for h in knob["history"]][-1] == ("true", "false")
    text = cli(workers.statdir, "knobs", "--history").stdout
    assert "rate_limit = 250  (operator" in text and "100 -> 250" in text


def test_exit_codes_and_refusals(workers: Workers) -> None:
    strict = workers.start(max_rate=500)
    loose = workers.start(max_rate=10_000)
    statdir = workers.statdir
    assert cli(statdir, "set", "nosuch", "a=1").returncode == 2
    assert cli(statdir, "set", "web", "nosuch=1").returncode == 2
    assert cli(statdir, "set", "web", "maintenance").returncode == 2  # no value, no --reset
    bad = cli(statdir, "set", "web", "rate_limit=0")  # no process accepts it: nothing is written
    assert bad.returncode == 2 and "below the minimum" in bad.stderr
    assert not os.path.exists(control_file.control_path(statdir, "web"))
    mixed = cli(statdir, "set", "web", "rate_limit=1000")  # only the newer declaration accepts it
    assert mixed.returncode == 1
    assert f"web pid {strict.pid}: rate_limit=1000: refused: 1000 is above the maximum 500" in mixed.stdout
    assert f"web pid {loose.pid}: rate_limit=1000: applied" in mixed.stdout
    assert workers.wait_observed(strict, rate_limit=100)["rate_limit"] == 100
    assert workers.wait_observed(loose, rate_limit=1000)["rate_limit"] == 1000
    refused = {p.pid: p.knobs["rate_limit"].state for p in read_knobs(statdir, "web")[0]}[strict.pid]
    assert refused is not None and refused.refused_value == "1000" and "maximum" in refused.refused_reason
    # --pid: one process only
    one = cli(statdir, "set", "web", "log_level=debug", "--pid", str(strict.pid))
    assert one.returncode == 0 and one.stdout.strip() == f"web pid {strict.pid}: log_level=debug: applied"
    assert (
        workers.wait_observed(strict, log_level="debug")["log_level"] == "debug"
        and workers.wait_observed(loose, log_level="info")["log_level"] == "info"
    )
    assert cli(statdir, "set", "web", "log_level=debug", "--pid", "1").returncode == 2
    # a process that cannot answer (stopped): exit 1, named
    os.kill(loose.pid, signal.SIGSTOP)
    try:
        late = cli(statdir, "set", "web", "ratio=0.25", "--timeout", "0.5")
    finally:
        os.kill(loose.pid, signal.SIGCONT)
    assert late.returncode == 1
    assert f"web pid {loose.pid}: ratio=0.25: no answer within 0.5s" in late.stdout
    assert f"web pid {strict.pid}: ratio=0.25: applied" in late.stdout
    assert workers.wait_observed(loose, ratio=0.25)["ratio"] == 0.25  # it catches up when it runs again


def test_only_the_owner_sets_knobs(workers: Workers, statdir: str) -> None:
    workers.start()
    os.chmod(statdir, 0o770)
    try:
        out = cli(statdir, "set", "web", "maintenance=true")
    finally:
        os.chmod(statdir, 0o700)
    assert out.returncode == 2 and "writable by group" in out.stderr


@pytest.mark.filterwarnings("ignore:statmap. control file:RuntimeWarning")
def test_a_foreign_or_shared_control_file_is_ignored(statdir: str) -> None:
    pub = statmap.Publisher("svc", statdir)
    knob = pub.knob("flag", default=False)
    path = control_file.control_path(statdir, "svc")
    # Group- and world-writable from the start (the watcher thread may look at any moment).
    temp = path + ".new"
    with open(temp, "w") as f:
        f.write(encode_control(Control(5, (Entry("flag", "", "set", "true", 0, 1, 1),))))
    os.chmod(temp, 0o666)
    os.rename(temp, path)
    knobs.check_now()
    assert knob.value is False and any(path in p and "writable by group or others" in p for p in knobs.problems)
    os.chmod(path, 0o600)
    knobs.check_now()
    assert knob.value is True and knob.origin == "operator"
    pub.remove()


def test_callbacks_run_on_the_watcher_and_an_exception_does_not_stop_the_others(statdir: str) -> None:
    pub = statmap.Publisher("cb", statdir)
    knob = pub.knob("level", default=1, min=0, max=9)
    seen: list[tuple[Any, Any]] = []

    def boom(old: Any, new: Any) -> None:
        raise RuntimeError("callback failed")

    knob.on_change(boom)
    knob.on_change(lambda old, new: seen.append((old, new)))
    with control_file.locked(statdir, "cb"):
        control_file.write(statdir, "cb", Control(9, (Entry("level", "", "set", "7", 0, 1, 1),)))
    with pytest.warns(RuntimeWarning, match="callback failed"):
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:  # the watcher thread applies it
            time.sleep(0.01)
    assert seen == [(1, 7)] and knob.value == 7 and knob.callback_errors == 1
    pub.remove()


def test_forked_child_applies_the_desired_state_before_fork_returns(statdir: str) -> None:
    code = r"""
import os, sys, time, statmap
from statmap import control_file
from statmap.knob_values import Control, Entry
d = sys.argv[1]
pub = statmap.Publisher("pre", d)
knob = pub.knob("flag", default=False)
# The operator's change lands, then the master forks before its watcher looked.
with control_file.locked(d, "pre"):
    control_file.write(d, "pre", Control(time.time_ns(), (Entry("flag", "", "set", "true", 0, 1, 1),)))
pid = os.fork()
if pid == 0:
    print("child", knob.value, knob.origin, os.path.exists(pub.path), flush=True)
    os._exit(0)
os.waitpid(pid, 0)
"""
    out = subprocess.run([sys.executable, "-c", code, statdir], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["child", "True", "operator", "True"]
    if sys.version_info < (3, 13):  # 3.13 counts threads after the fork hooks restarted the watcher (docs/knobs.md)
        assert "multi-threaded" not in out.stderr  # the watcher is stopped across fork


# -- the control file and the format -----------------------------------------------------


def test_golden_knob_vector() -> None:
    path = VECTORS / "knobs.statmap"
    assert file_knobs_json(str(path)) == json.loads((VECTORS / "knobs.knobs.json").read_text())
    data = path.read_bytes()
    assert int.from_bytes(data[10:12], "little") == L.MINOR  # written by a 1.2 writer (knobs are since 1.1)
    with statmap.open(path) as reader:  # a metrics reader skips knob records as an unknown type
        assert reader.snapshot().series == []
        assert {r.spec.mtype for r in reader.records} == {L.KNOB}


def test_golden_control_vector() -> None:
    control = decode_control((VECTORS / "control.knobs").read_bytes())
    doc = json.loads((VECTORS / "control.knobs.json").read_text())
    assert control.seq == doc[0]["seq"]
    assert [dict(vars(e)) for e in control.entries] == doc[1:]
    assert encode_control(control).encode() == (VECTORS / "control.knobs").read_bytes()


def test_collector_and_exporter_skip_knob_records(workers: Workers) -> None:
    workers.start()
    out = cli(workers.statdir, "export", "--format", "prometheus")
    assert out.returncode == 0 and "requests_total" in out.stdout and "maintenance" not in out.stdout


def test_state_decoding_refuses_malformed_text() -> None:
    for bad in (b"1:2,", b"x", b"1:1,1:x," + b"1:0," * 11, b"99:1,"):
        with pytest.raises(ValueError):
            decode_state(bad)
    assert decode_state(b"") is None


def test_operator_killed_mid_write_leaves_the_old_file_and_no_lock(workers: Workers) -> None:
    proc = workers.start()
    statdir = workers.statdir
    assert cli(statdir, "set", "web", "rate_limit=7").returncode == 0
    before = Path(control_file.control_path(statdir, "web")).read_bytes()
    killed = subprocess.run(
        [sys.executable, "-m", "statmap", "set", "web", "rate_limit=9", "--dir", statdir],
        env={**os.environ, "STATMAP_TEST_KILL_AT": "control-temp-written"},
        capture_output=True,
        timeout=60,
    )
    assert killed.returncode == -signal.SIGKILL
    assert Path(control_file.control_path(statdir, "web")).read_bytes() == before  # old file, whole
    assert any(n.endswith(".tmp") for n in os.listdir(statdir))  # what it left
    time.sleep(0.2)
    assert workers.wait_observed(proc, rate_limit=7)["rate_limit"] == 7  # the program never saw a half request
    again = cli(statdir, "set", "web", "rate_limit=9", "--timeout", "10")  # the lock died with it
    assert again.returncode == 0, again.stdout + again.stderr
    assert not any(n.endswith(".tmp") for n in os.listdir(statdir))
    assert workers.wait_observed(proc, rate_limit=9)["rate_limit"] == 9


def test_demo_knobs_visibly_change_the_demo(statdir: str) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "statmap.demo", statdir, "1"])
    try:

        def statuses() -> dict[str, int]:
            out: dict[str, int] = {}
            for path in statmap.discover.statmap_files(statdir):
                with statmap.open(path) as reader:
                    for s in reader.snapshot().series:
                        if s.name == "requests":
                            out[s.labels["status"]] = out.get(s.labels["status"], 0) + int(s.value)
            return out

        deadline = time.monotonic() + 20
        while not statuses().get("200") and time.monotonic() < deadline:
            time.sleep(0.1)
        out = cli(statdir, "set", "demo-web", "error_rate=1", "slow_mode=true")
        assert out.returncode == 0, out.stdout + out.stderr
        before = statuses()
        time.sleep(1.5)
        after = statuses()
        assert after.get("200", 0) == before.get("200", 0)  # every request fails now
        assert after["500"] > before.get("500", 0)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_an_idle_process_sees_a_change_within_the_poll_interval(workers: Workers) -> None:
    """The watcher applies a request in a process whose main thread never calls statmap (here: sleeping)."""
    code = r"""
import sys, time, statmap
pub = statmap.Publisher("idle", sys.argv[1])
knob = pub.knob("flag", default=False)
print("ready", flush=True)
time.sleep(60)
"""
    proc = subprocess.Popen([sys.executable, "-c", code, workers.statdir], stdout=subprocess.PIPE, text=True)
    workers.procs.append(proc)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    seq = time.time_ns()
    with control_file.locked(workers.statdir, "idle"):
        control_file.write(workers.statdir, "idle", Control(seq, (Entry("flag", "", "set", "true", 0, 1, 1),)))
    written = time.monotonic()
    while True:
        (found,) = read_knobs(workers.statdir, "idle")[0]
        state = found.knobs["flag"].state
        if state is not None and state.seen_seq == seq:
            break
        assert time.monotonic() - written < 1.0, "not applied within a second (the watcher looks every 50 ms)"
        time.sleep(0.005)
    assert state.value == "true" and state.origin == "operator"


@pytest.mark.slow
def test_operator_killed_at_random_moments(workers: Workers) -> None:
    """SIGKILL ``statmap set`` at random moments (start-up, reading, under the lock, writing, waiting):
    the control file is always whole (old or new), the program keeps a declared value, the next set works."""
    proc = workers.start()
    statdir = workers.statdir
    rnd = random.Random(7)
    path = control_file.control_path(statdir, "web")
    for i in range(30):
        killed = subprocess.Popen(
            [sys.executable, "-m", "statmap", "set", "web", f"rate_limit={i + 2}", "--dir", statdir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rnd.uniform(0.0, 0.8))
        killed.kill()
        killed.wait()
        _control, problem = control_file.load(path)
        assert problem is None  # absent, or whole
        assert 2 <= workers.observed(proc)["rate_limit"] <= 100
    final = cli(statdir, "set", "web", "rate_limit=77", "--timeout", "10")
    assert final.returncode == 0, final.stdout + final.stderr
    assert workers.wait_observed(proc, rate_limit=77)["rate_limit"] == 77
    assert not any(n.endswith(".tmp") for n in os.listdir(statdir))


def test_declaring_a_knob_does_not_hide_a_change_from_the_others(statdir: str) -> None:
    """Regression: a knob declared after a change and before the watcher's next look made the
    publisher's other knobs miss that change (the file was marked as seen for all of them)."""
    pub = statmap.Publisher("late", statdir)
    first = pub.knob("first", default=False)
    with knobs._lock:  # hold the watcher off: the change and the declaration both land before its next look
        with control_file.locked(statdir, "late"):
            entries = (Entry("first", "", "set", "true", 0, 1, 1), Entry("second", "", "set", "true", 0, 1, 1))
            control_file.write(statdir, "late", Control(time.time_ns(), entries))
        second = pub.knob("second", default=False)
        assert second.value is True
    knobs.check_now()
    assert first.value is True and first.origin == "operator"
    pub.remove()


def test_a_process_that_declares_between_the_look_and_the_write_is_waited_for(
    workers: Workers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``statmap set`` looks at the live processes, then writes the control file: a process that declares
    its knobs in between reads the old file. The command must wait for its answer too, or requests it serves
    just after the command reported success get the old value (seen in test_knobs_gunicorn's fleet, where
    workers start all the time). The process is started (for real) right after the command's first look."""
    from statmap import knob_set

    first = workers.start()
    real = read_knobs
    late: list[subprocess.Popen[str]] = []

    def look(directory: str, name: str | None = None) -> Any:
        found = real(directory, name)
        if not late:  # the first look: a new process declares its knobs before the write
            late.append(workers.start())
        return found

    monkeypatch.setattr(knob_set, "read_knobs", look)
    result = knob_set.set_knobs(workers.statdir, "web", {"maintenance": "true"}, timeout=10)
    assert result.code == 0, result
    answered = {pid for _publisher, pid, _knob, _value, _outcome in result.answers}
    assert {first.pid, late[0].pid} <= answered, result.answers
    assert all(outcome == "applied" for *_, outcome in result.answers), result.answers
    assert workers.wait_observed(late[0], maintenance=True)["maintenance"] is True
