"""The README's test command on a machine with only Python 3 and gcc.

Tests that need a Debian package of .ci/apt-packages (clang, make, cargo,
prometheus/promtool, chromium, chromium-driver, util-linux's unshare and
setpriv, mount) skip with a reason containing "needs" when it is absent, and
fail only when STATMAP_REQUIRE_DEPS=1 (as in CI). Proved here by running
pytest in a subprocess whose PATH holds every program of this machine except
those (and whose HOME hides a rustup cargo).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.once  # runs pytest itself, with a stripped PATH

# The programs of .ci/apt-packages the tests use (gcc, cc and the rest of the machine stay).
DEPENDENCIES = (
    "make", "clang", "cargo", "rustc", "rustup", "prometheus", "promtool", "chromium", "chromedriver",
    "unshare", "setpriv", "mount", "umount", "prometheus-pushgateway",
)  # fmt: skip


def bare_path(tmp: Path, drop: Iterable[str]) -> str:
    """A directory of links to every program on this PATH except ``drop`` (and any clang-N)."""
    drop = set(drop)
    bin_dir = tmp / "bin"
    bin_dir.mkdir(parents=True)
    for d in os.environ.get("PATH", "").split(os.pathsep):
        if not os.path.isdir(d):
            continue
        for name in sorted(os.listdir(d)):
            target = os.path.join(d, name)
            if name in drop or name.startswith("clang") or os.path.lexists(bin_dir / name):
                continue
            if os.path.isfile(target) and os.access(target, os.X_OK):
                (bin_dir / name).symlink_to(target)
    return str(bin_dir)


def pytest_without(tmp: Path, drop: Iterable[str], tests: list[str], require: bool) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PATH=bare_path(tmp, drop), HOME=str(tmp), STATMAP_PURE="0")
    env["STATMAP_REQUIRE_DEPS"] = "1" if require else "0"
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs", "-o", "addopts=", *tests]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def test_without_clang_the_fuzzer_skips(tmp_path: Path) -> None:
    # with make and cc present, only clang is missing: the skip must name clang
    if shutil.which("make") is None or shutil.which("cc") is None:
        pytest.skip("needs make and cc (Debian packages make, gcc) to get as far as the fuzzer")
    test = "tests/test_interop.py::test_fuzz_c_reader"
    out = pytest_without(tmp_path / "a", ["clang"], [test], require=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "1 skipped" in out.stdout and "failed" not in out.stdout, out.stdout[-3000:]
    assert "needs clang" in out.stdout, out.stdout[-3000:]
    # the same run in CI (STATMAP_REQUIRE_DEPS=1) fails, naming the test
    out = pytest_without(tmp_path / "b", ["clang"], [test], require=True)
    assert out.returncode == 1, out.stdout[-3000:]
    assert "STATMAP_REQUIRE_DEPS: tests skipped for a missing dependency" in out.stdout
    assert f"{test}: " in out.stdout and "needs clang" in out.stdout


def test_without_any_debian_package_every_such_test_skips(tmp_path: Path) -> None:
    tests = [
        "tests/test_interop.py::test_c_unit_tests",
        "tests/test_interop.py::test_rust_unit_tests",
        "tests/test_interop.py::test_golden_file_reads_identically",
        "tests/test_prometheus.py",
        "tests/test_export.py::test_prometheus_text_passes_promtool",
        "tests/test_dashboard.py",
        "tests/test_identity.py::test_same_pid_in_two_pid_namespaces",
        "tests/test_limits.py::test_full_disk_at_growth_and_creation",
        "tests/test_hostile.py::test_unprivileged_user_gets_a_private_directory_and_0600_files",
        "tests/test_push.py",
        "tests/test_attach.py::test_a_process_in_another_mount_namespace",
    ]
    out = pytest_without(tmp_path, DEPENDENCIES, tests, require=False)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-3000:]
    summary = out.stdout.strip().splitlines()[-1]
    assert "skipped" in summary and "failed" not in summary and "error" not in summary, out.stdout[-4000:]
    skips = [line for line in out.stdout.splitlines() if line.startswith("SKIPPED")]
    assert skips and all("needs" in line for line in skips), "\n".join(skips)
    packages = ("make", "cargo", "prometheus", "promtool", "chromium", "unshare", "mount", "setpriv", "pushgateway")
    for package in packages:
        assert any(package in line for line in skips), (package, skips)
