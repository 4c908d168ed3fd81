"""Shared fixtures. The suite runs once per value-cell backend (see ./run-tests)."""

from __future__ import annotations

import os
import subprocess
import sys
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
