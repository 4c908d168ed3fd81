"""The C reader (clients/c) over another user's files: truncation must not kill it (issue 10.12).

Files written by this library as root are given to the user nobody; a process
running as nobody truncates, restores and replaces them while ``statmap-cat``
reads them again and again. The C reader reads files it does not own through
copies (never mapped), so it must never die of a signal (SIGBUS), and must
report what it cannot read as errors.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path

import pytest

from tests.conftest import run_as_nobody
from tests.test_interop import CAT, built_c, json_docs  # noqa: F401 - built_c is a fixture
from tests.test_reader_hardening import ATTACK, _nobody_directory

pytestmark = [pytest.mark.external, pytest.mark.once]  # needs root and cc; the C reader ignores the cell backend


def _cat(paths: list[str], repeat: int) -> tuple[int, list[dict[str, object]], str]:
    out = subprocess.run(
        [str(CAT), "--json", "--repeat", str(repeat), *paths], capture_output=True, text=True, timeout=300
    )
    assert out.returncode >= 0, f"statmap-cat died of signal {-out.returncode} (7 is SIGBUS): {out.stderr[-2000:]}"
    assert out.returncode in (0, 1), (out.returncode, out.stdout[-2000:], out.stderr[-2000:])
    return out.returncode, list(json_docs(out.stdout)), out.stderr


@pytest.mark.usefixtures("built_c")
def test_c_reader_survives_another_user_truncating_files(shared_tmp: Path) -> None:
    """10.12: root statmap-cat over nobody's live files survives nobody truncating and replacing them."""
    run_as_nobody("pass")  # here, not in the thread: a skip (nobody cannot start this interpreter) skips the test
    d, writer = _nobody_directory(shared_tmp, files=8, seconds=25)
    paths = sorted(os.path.join(d, n) for n in os.listdir(d))
    result: dict[str, subprocess.CompletedProcess[str]] = {}
    attacker = threading.Thread(target=lambda: result.setdefault("a", run_as_nobody(ATTACK, d, "8")))
    try:
        # Before the attack: read through copies while the writer keeps observing, and exactly.
        rc, docs, err = _cat(paths, 200)
        assert rc == 0 and all("errors" not in doc for doc in docs), (docs[-1:], err)
        last = docs[-1]["processes"]
        assert isinstance(last, list) and len(last) == 8
        requests = sorted(m["value"] for p in last for m in p["metrics"] if m["name"] == "requests")
        assert requests == list(range(1, 9)), requests
        attacker.start()
        runs = reported = 0
        while attacker.is_alive():
            rc, docs, err = _cat(paths, 20)
            runs += 1
            errors = [e for doc in docs for e in doc.get("errors", [])]  # type: ignore[attr-defined]
            assert (rc == 1) == bool(errors), (rc, json.dumps(docs[-1:])[:2000])
            assert all(e["path"] in paths and e["problem"] for e in errors), errors[:3]
            reported += bool(errors)
        attacker.join()
        assert result["a"].returncode == 0, result["a"].stderr
        assert runs > 10 and int(result["a"].stdout) > 10, (runs, result["a"].stdout)
        assert reported > 0, "no damaged file was reported while nobody truncated them"
    finally:
        writer.kill()
        writer.wait()
