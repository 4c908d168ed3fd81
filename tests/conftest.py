"""Shared fixtures. The suite runs once per value-cell backend (see ./run-tests)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import statmap

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "tests" / "vectors"


def pytest_report_header(config: pytest.Config) -> str:
    return f"statmap value cells: {statmap.backend}"


@pytest.fixture
def statdir(tmp_path: Path) -> str:
    """A private (0700) statmap directory for one test."""
    d = tmp_path / "statmap"
    d.mkdir(mode=0o700)
    return str(d)


def run_python(code: str, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter with the same backend; return the finished process."""
    env = dict(os.environ)
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, text=True, capture_output=True, timeout=timeout, check=check
    )


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A directory every user can traverse (tmp_path is root's 0700), for tests that run as nobody."""
    d = Path(tempfile.mkdtemp(prefix="statmap-shared-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def stop_server(proc: subprocess.Popen[bytes] | subprocess.Popen[str], timeout: float = 30) -> None:
    """SIGTERM a server process and wait for it; SIGKILL if it does not stop in time."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_as_nobody(code: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``code`` as the unprivileged user nobody (via setpriv; needs root), with this
    interpreter, this checkout's statmap and this backend. ``env`` adds to the environment."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (util-linux) to run as the user nobody")
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.pop("XDG_RUNTIME_DIR", None)
    full_env.pop("STATMAP_DIR", None)
    full_env.update(env or {})
    as_nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable]
    # An interpreter under a private home (e.g. pyenv in a 0700 /root) cannot start as nobody at all:
    # that is this machine's set-up, not statmap's behaviour.
    probe = subprocess.run(
        [*as_nobody, "-c", "pass"], env=full_env, text=True, capture_output=True, timeout=60, cwd="/"
    )
    if probe.returncode != 0:  # pragma: no cover
        pytest.skip(f"the user nobody cannot start this interpreter: {probe.stderr.strip()[-300:]}")
    return subprocess.run(
        [*as_nobody, "-c", code, *args], env=full_env, text=True, capture_output=True, timeout=120, cwd="/"
    )


# Words that mark a skip as "a dependency is missing" rather than a deliberate,
# backend- or platform-specific skip.
_MISSING = ("could not import", "no module named", "not installed", "needs", "is needed", "not found")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With STATMAP_REQUIRE_DEPS=1 (set by .ci/run), a skip for a missing dependency fails the run."""
    if os.environ.get("STATMAP_REQUIRE_DEPS") != "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    missing = []
    for report in reporter.stats.get("skipped", []):
        reason = str(report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr)
        if any(word in reason.lower() for word in _MISSING):
            missing.append(f"{report.nodeid}: {reason}")
    if missing:
        reporter.write_line("STATMAP_REQUIRE_DEPS: tests skipped for a missing dependency:", red=True)
        for line in missing:
            reporter.write_line(f"  {line}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
