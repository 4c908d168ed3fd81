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
