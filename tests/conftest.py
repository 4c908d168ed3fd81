"""Shared fixtures, the test tiers and the one scale variable.

Tiers (markers registered in pyproject.toml; how to mark a new test: docs/development.md):

* ``slow``: long-running stress (kills, fuzzing, torn reads, churn, load, heavy parameterisations);
* ``external``: needs a program outside the ``test`` extra (chromium, prometheus/promtool, gunicorn,
  cargo, clang) or root (unshare, mount, setpriv);
* ``once``: the outcome cannot depend on the value cells, so ``./run-tests`` runs it with the C
  cells only (``--cells-only`` leaves it out of the pure-Python pass). Unmarked modules run under
  both cell implementations: a new file loses no evidence by default.

``STATMAP_SCALE`` (default 1, CI's amount) multiplies the work of every heavy test: kills, fuzz
inputs and seconds, torn-read rounds, hypothesis examples, load.
"""

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

# The variables STATMAP_SCALE replaced; a leftover one in someone's shell must not be silently ignored.
_REPLACED = (
    "STATMAP_LONG",
    "STATMAP_STRESS_SCALE",
    "STATMAP_HYPOTHESIS_EXAMPLES",
    "STATMAP_LOAD_FULL",
    "STATMAP_FUZZ_SECONDS",
)


def _scale() -> tuple[float, str]:
    """STATMAP_SCALE's value, and what is wrong with the environment ("" if nothing)."""
    old = [name for name in _REPLACED if name in os.environ]
    if old:
        return 1.0, f'{", ".join(old)}: replaced by STATMAP_SCALE (docs/development.md, "Tests"); unset it'
    text = os.environ.get("STATMAP_SCALE", "") or "1"
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        return 1.0, f"STATMAP_SCALE={text!r}: expected a positive number (1 is CI's amount)"
    return value, ""


SCALE, _SCALE_ERROR = _scale()
"""SCALE multiplies the work of the heavy tests (1: CI's amount; 10: a long run by hand)."""


def pytest_configure(config: pytest.Config) -> None:
    if _SCALE_ERROR:
        raise pytest.UsageError(_SCALE_ERROR)


def pytest_report_header(config: pytest.Config) -> str:
    return f"statmap value cells: {statmap.backend}; STATMAP_SCALE={SCALE:g}"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--cells-only",
        action="store_true",
        help="leave out the tests marked `once` (./run-tests' pass with the second cell implementation)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--cells-only"):
        return
    once = [item for item in items if item.get_closest_marker("once") is not None]
    if once:
        config.hook.pytest_deselected(items=once)
        items[:] = [item for item in items if item.get_closest_marker("once") is None]


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
