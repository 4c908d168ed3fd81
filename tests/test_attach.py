"""``--pid``: read what a process publishes without knowing its directory (attach.py).

Real child processes publishing into directories the command is never told
about; one in a private mount namespace (a tmpfs only it can see), one the
operator may not inspect (the command runs as nobody).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from statmap.attach import AttachError, attach

from .conftest import ROOT, run_as_nobody

pytestmark = pytest.mark.once  # finding files: what is read is the reader's, tested under both cells

# Publishes NAME's counter `requests` = N into DIR, prints "ready", waits for stdin to close.
CHILD = r"""
import sys, statmap
directory, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
pub = statmap.Publisher(name, directory)
pub.counter("requests", "Requests").inc(n)
print("ready", flush=True)
sys.stdin.read()
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []

    def start(directory: str, name: str, n: int, prefix: tuple[str, ...] = ()) -> subprocess.Popen[str]:
        cmd = [*prefix, sys.executable, "-c", CHILD, directory, name, str(n)]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_env())
        procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "ready", f"child did not start: {line!r}"
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(timeout=30)


def statmap_cmd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "statmap", *args], capture_output=True, text=True, timeout=120)


def test_show_and_export_by_pid_in_a_directory_nobody_named(tmp_path: Path, spawn: Callable[..., Any]) -> None:
    secret = tmp_path / "somewhere" / os.urandom(6).hex()
    secret.mkdir(parents=True, mode=0o700)
    target = spawn(str(secret), "app", 5)
    spawn(str(secret), "app", 7)  # a sibling worker of the same program
    spawn(str(secret), "other", 100)  # another program sharing the directory
    shown = statmap_cmd("show", "--pid", str(target.pid))
    assert shown.returncode == 0, shown.stderr
    assert f"app  pid {target.pid}  alive" in shown.stdout and "requests  counter    5" in shown.stdout
    assert shown.stdout.count(" pid ") == 1 and "other" not in shown.stdout  # only the process's own file
    doc = json.loads(statmap_cmd("show", "--json", "--pid", str(target.pid)).stdout)
    assert [p["pid"] for p in doc["processes"]] == [target.pid]
    # the aggregate: its directory's files of the same publisher name (the whole program)
    exported = statmap_cmd("export", "--pid", str(target.pid))
    assert exported.returncode == 0, exported.stderr
    assert "requests_total 12\n" in exported.stdout and "publisher=" not in exported.stdout
    top = statmap_cmd("top", "--pid", str(target.pid), "--plain", "--count", "1")
    assert top.returncode == 0 and "12" in top.stdout
    found = attach(target.pid)
    assert found.inner == [str(secret / os.path.basename(found.paths[0]))]


def test_refusals_say_why(tmp_path: Path, spawn: Callable[..., Any]) -> None:
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        done = statmap_cmd("show", "--pid", str(sleeper.pid))
        assert done.returncode == 2 and "maps no statmap file" in done.stderr
    finally:
        sleeper.kill()
        sleeper.wait()
    done = statmap_cmd("show", "--pid", str(sleeper.pid))  # reaped: gone
    assert done.returncode == 2 and "no such process" in done.stderr
    with pytest.raises(AttachError, match="not a process id"):
        attach(0)
    d = tmp_path / "d"
    d.mkdir(mode=0o700)
    child = spawn(str(d), "app", 1)
    both = statmap_cmd("export", "--pid", str(child.pid), "--dir", str(d))
    assert both.returncode == 2 and "not both" in both.stderr


def test_a_published_file_removed_while_mapped_is_reported(tmp_path: Path, spawn: Callable[..., Any]) -> None:
    d = tmp_path / "d"
    d.mkdir(mode=0o700)
    child = spawn(str(d), "app", 1)
    for f in d.iterdir():
        f.unlink()
    done = statmap_cmd("show", "--pid", str(child.pid))
    assert done.returncode == 2
    assert "no published file" in done.stderr and str(d) in done.stderr


def test_another_users_process_is_refused_with_the_reason(tmp_path: Path, spawn: Callable[..., Any]) -> None:
    d = tmp_path / "d"
    d.mkdir(mode=0o700)
    child = spawn(str(d), "app", 1)  # runs as root (the tests' user)
    code = "import sys, statmap.cli; sys.exit(statmap.cli.main(['show', '--pid', sys.argv[1]]))"
    done = run_as_nobody(code, str(child.pid))
    if os.geteuid() == 0 and done.returncode != 2:
        pytest.fail(done.stdout + done.stderr)
    assert "permission denied" in done.stderr and "another user (uid 0" in done.stderr


@pytest.mark.external
def test_a_process_in_another_mount_namespace(tmp_path: Path, spawn: Callable[..., Any]) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare (util-linux) for a private mount namespace")
    inside = tmp_path / "container-only"
    inside.mkdir(mode=0o700)
    # a tmpfs mounted over `inside` in the child's own mount namespace: from here, `inside` stays empty
    script = 'mount -t tmpfs -o mode=0700 none "$1" && shift && exec "$@"'
    prefix = ("unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(inside))
    child = spawn(str(inside), "boxed", 3, prefix=prefix)
    assert list(inside.iterdir()) == []  # the operator's view: nothing there
    shown = statmap_cmd("show", "--pid", str(child.pid))
    assert shown.returncode == 0, shown.stderr
    assert "boxed  pid" in shown.stdout and "requests  counter    3" in shown.stdout
    exported = statmap_cmd("export", "--pid", str(child.pid))
    assert "requests_total 3\n" in exported.stdout
