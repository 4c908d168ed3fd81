"""Identity and liveness: readers tell live writers from dead ones when pids are
reused, when writers in separate pid namespaces share a directory with the same
pid, when a dead file's identity matches a live process, and when a writer's
children outlive it.

Real pid namespaces (``unshare --pid --fork --mount-proc``, root only), and the
kernel's ``ns_last_pid`` to make a new process get a dead writer's pid.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import statmap
import statmap.collect
from statmap import _layout as L

from .conftest import run_python


def _status(path: str) -> str:
    with statmap.open(path) as reader:
        return reader.snapshot().status


def _snapshot(path: str) -> statmap.Snapshot:
    with statmap.open(path) as reader:
        return reader.snapshot()


def _unshare() -> list[str]:
    if os.geteuid() != 0:
        pytest.skip("pid namespaces need root")
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare for pid namespaces (Debian package util-linux)")
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"unshare --pid refused here: {probe.stderr.strip()}")
    return ["unshare", "--pid", "--fork", "--mount-proc"]


NS_WRITER = textwrap.dedent(
    """
    import os, sys, statmap
    pub = statmap.Publisher("ns", sys.argv[1])
    pub.counter("c", "C").inc(int(sys.argv[2]))
    print(os.getpid(), pub.path, flush=True)
    sys.stdin.readline()
    os._exit(0)  # no close: a crash as far as the file is concerned
    """
)


@pytest.mark.external
def test_same_pid_in_two_pid_namespaces(statdir: str) -> None:
    cmd = _unshare()
    procs = [
        subprocess.Popen(
            [*cmd, sys.executable, "-c", NS_WRITER, statdir, str(n)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in (1, 2)
    ]
    try:
        found = [p.stdout.readline().split() for p in procs]  # type: ignore[union-attr]
        (pid1, path1), (pid2, path2) = found
        assert pid1 == pid2  # the same pid, in two namespaces
        assert path1 != path2  # told apart by the instance id in the name
        snaps = [_snapshot(path1), _snapshot(path2)]
        assert [s.pid for s in snaps] == [int(pid1)] * 2
        assert snaps[0].identity.instance_id != snaps[1].identity.instance_id  # type: ignore[union-attr]
        assert [s.status for s in snaps] == ["alive", "alive"]
        coll = statmap.collect.collect(statdir)
        assert coll.counts().get("alive") == 2
        procs[0].communicate("\n", timeout=30)  # the first one dies
        assert _status(path1) == "dead" and _status(path2) == "alive"
        assert [s.value for s in _snapshot(path1).series] == [1]  # post-mortem
        procs[1].communicate("\n", timeout=30)
        assert _status(path2) == "dead"
    finally:
        for p in procs:
            p.kill()
            p.wait()


PID_REUSE = textwrap.dedent(
    """
    import json, os, sys, time, statmap
    d = sys.argv[1]

    def writer(n, hold):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            pub = statmap.Publisher("reuse", d)
            pub.counter("c", "C").inc(n)
            os.write(w, pub.path.encode())
            os.close(w)
            if hold:
                sys.stdin.readline()  # alive until the test has looked
            os._exit(0)  # no close: the file stays 'ready', its lock is released
        os.close(w)
        path = os.read(r, 4096).decode()
        return pid, path

    assert os.getpid() == 1, "not in a new pid namespace"
    pid_a, path_a = writer(1, hold=False)
    os.waitpid(pid_a, 0)
    time.sleep(0.05)  # a different start time (clock ticks) for the fallback identity check
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(pid_a - 1))  # the next process gets pid_a again
    pid_b, path_b = writer(2, hold=True)
    print(json.dumps({"a": [pid_a, path_a], "b": [pid_b, path_b]}), flush=True)
    os.waitpid(pid_b, 0)
    """
)


@pytest.mark.external
def test_new_process_reusing_a_dead_writers_pid(statdir: str) -> None:
    cmd = _unshare()
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    proc = subprocess.Popen([*cmd, sys.executable, "-c", PID_REUSE, statdir], text=True, **pipes)  # type: ignore[call-overload]
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line, proc.stderr.read()  # type: ignore[union-attr]
        got = json.loads(line)
        (pid_a, path_a), (pid_b, path_b) = got["a"], got["b"]
        assert pid_a == pid_b, "ns_last_pid did not give the new process the dead writer's pid"
        a, b = _snapshot(path_a), _snapshot(path_b)
        assert (a.status, b.status) == ("dead", "alive")
        assert (a.series[0].value, b.series[0].value) == (1, 2)
        ia, ib = a.identity, b.identity
        assert ia is not None and ib is not None
        # what the pid-based fallback relies on where locks are unavailable
        assert ia.boot_id == ib.boot_id != bytes(16)
        assert ia.start_time != ib.start_time and ia.instance_id != ib.instance_id
        proc.communicate("\n", timeout=30)
        assert _status(path_b) == "dead"
    finally:
        proc.kill()
        proc.wait()


def test_identity_of_a_live_process_does_not_make_a_dead_file_alive(statdir: str) -> None:
    """A file whose header names *this* live process (pid, start time, boot id) but whose
    lock nobody holds is dead: the lock decides, not the pid."""
    from statmap._proc import boot_id, process_start_time

    me = os.getpid()
    code = textwrap.dedent(
        """
        import os, sys, statmap
        from statmap import _layout as L
        me, start = int(sys.argv[2]), int(sys.argv[3])
        ident = L.Identity(me, start, bytes.fromhex(sys.argv[4]), os.urandom(16), 0, "fake", "fake")
        pub = statmap.Publisher("fake", sys.argv[1], _identity=ident)
        pub.counter("c").inc()
        print(pub.path)
        os._exit(0)
        """
    )
    path = run_python(code, statdir, str(me), str(process_start_time(me)), boot_id().hex()).stdout.strip()
    snap = _snapshot(path)
    assert snap.identity is not None and snap.identity.pid == me
    assert snap.identity.start_time == process_start_time(me)
    assert snap.status == "dead"


def test_children_that_outlive_the_writer_do_not_keep_its_file_alive(statdir: str) -> None:
    """The writer's lock is not inherited: neither by a forked child (which gets its own
    file) nor by an exec'd program (O_CLOEXEC), so the writer's death shows."""
    code = textwrap.dedent(
        """
        import os, subprocess, sys, time, statmap
        pub = statmap.Publisher("parent", sys.argv[1])
        c = pub.counter("c", "C")
        c.inc(1)
        sleeper = subprocess.Popen(["sleep", "60"], close_fds=False)
        pid = os.fork()
        if pid == 0:
            c.inc(5)
            time.sleep(60)
            os._exit(0)
        time.sleep(0.2)  # let the child make its file
        print(pub.path, sleeper.pid, pid, flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code, statdir], stdout=subprocess.PIPE, text=True)
    others: list[int] = []
    try:
        path, sleeper, child = proc.stdout.readline().split()  # type: ignore[union-attr]
        others = [int(sleeper), int(child)]
        assert _status(path) == "alive"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        for pid in others:
            os.kill(pid, 0)  # both still running
        assert _status(path) == "dead"
        files = [str(p) for p in Path(statdir).glob("*.statmap") if str(p) != path]
        assert len(files) == 1  # the forked child's own file
        child_snap = _snapshot(files[0])
        assert child_snap.status == "alive" and child_snap.pid == int(child)
        assert child_snap.series[0].value == 5
    finally:
        proc.kill()
        proc.wait()
        for pid in others:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)


def test_closed_file_stays_closed_whoever_holds_its_pid(statdir: str) -> None:
    out = run_python("import statmap, sys; p = statmap.Publisher('c', sys.argv[1]); p.close(); print(p.path)", statdir)
    path = out.stdout.strip()
    snap = _snapshot(path)
    assert snap.status == "closed"
    with open(path, "rb") as f:
        header = L.decode_header(f.read(L.HEADER_SIZE))
    assert header.closed_ns > 0 and header.state == L.State.CLOSED


def test_identity_fallback_where_locks_do_not_work() -> None:
    """Where flock is not available (format.md, liveness), the reader judges by identity:
    same boot, the pid exists, and it started when the writer did."""
    from statmap._proc import boot_id, process_start_time
    from statmap.reader import Reader

    def identity(**changes: object) -> L.Identity:
        fields: dict[str, object] = {
            "pid": os.getpid(),
            "start_time": process_start_time(os.getpid()),
            "boot_id": boot_id(),
            "instance_id": bytes(16),
            "created_ns": 0,
            "publisher": "p",
            "program": "t",
        }
        fields.update(changes)
        return L.Identity(**fields)  # type: ignore[arg-type]

    me = identity()
    assert me.start_time > 0 and me.boot_id != bytes(16)
    assert Reader._liveness_by_pid(me) == "alive"
    assert Reader._liveness_by_pid(identity(start_time=me.start_time + 1)) == "dead"  # pid reused
    assert Reader._liveness_by_pid(identity(boot_id=bytes(b ^ 0xFF for b in me.boot_id))) == "dead"  # rebooted
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert Reader._liveness_by_pid(identity(pid=child.pid, start_time=0)) == "dead"  # exited and reaped
    assert Reader._liveness_by_pid(identity(start_time=0)) == "alive"  # start time unknown: the pid decides
