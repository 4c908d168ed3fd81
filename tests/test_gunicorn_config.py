"""examples/gunicorn.conf.py and every gunicorn command line the docs show agree:
the jitter on ``max_requests`` stays well below ``max_requests`` (at most a
tenth), however ``max_requests`` was set (``$GUNICORN_MAX_REQUESTS`` or
``--max-requests``).

Each command line is parsed by gunicorn itself (its WSGIApplication reads
the arguments and the configuration file, its Arbiter is built and the
file's ``on_starting`` hook runs, as before the first worker is forked).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.external, pytest.mark.once]  # gunicorn parses the example configuration

pytest.importorskip("gunicorn", reason="needs gunicorn (pip install gunicorn)")

DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "examples").rglob("*.py"))]
# optional VAR=value assignments, then gunicorn and its arguments (up to a comment or a closing backtick)
COMMAND = re.compile(r"((?:\b[A-Z_]+=\S+\s+)*)\bgunicorn\s+(-[^`#]*)")

PARSE = """
import json, sys
from gunicorn.app.wsgiapp import WSGIApplication
from gunicorn.arbiter import Arbiter

sys.argv = ["gunicorn", *sys.argv[1:]]
app = WSGIApplication("%(prog)s [OPTIONS] [APP_MODULE]")
arbiter = Arbiter(app)
arbiter.cfg.on_starting(arbiter)  # the hooks the file defines run before the first fork
print(json.dumps([arbiter.cfg.max_requests, arbiter.cfg.max_requests_jitter]))
"""


def documented_commands() -> list[tuple[str, dict[str, str], list[str]]]:
    found = []
    for doc in DOCUMENTS:
        for line in doc.read_text().splitlines():
            m = COMMAND.search(line)
            if m is None:
                continue
            env = dict(a.split("=", 1) for a in m.group(1).split())
            found.append((f"{doc.relative_to(ROOT)}: {m.group(0).strip()}", env, shlex.split(m.group(2))))
    return found


COMMANDS = documented_commands()


def effective(env: dict[str, str], args: list[str], statdir: str) -> tuple[int, int]:
    """(max_requests, max_requests_jitter) as gunicorn would use them for this command line."""
    # Relative paths in the docs: -c gunicorn.conf.py is run from examples/, --chdir from the checkout.
    cwd = ROOT / "examples" if "-c" in args else ROOT
    full_env = dict(os.environ, STATMAP_SERVE_PORT="0", **env)
    full_env["STATMAP_DIR"] = statdir  # never the docs' /tmp/web-stats
    full_env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.pop("GUNICORN_CMD_ARGS", None)
    out = subprocess.run(
        [sys.executable, "-c", PARSE, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    limit, jitter = json.loads(out.stdout.strip().splitlines()[-1])
    return int(limit), int(jitter)


def test_the_docs_show_gunicorn_command_lines() -> None:
    assert len(COMMANDS) >= 4, COMMANDS
    # at least one sets max_requests on the command line together with the configuration file
    assert any("-c" in args and "--max-requests" in args for _, _, args in COMMANDS), COMMANDS


@pytest.mark.parametrize(("where", "env", "args"), COMMANDS, ids=[c[0] for c in COMMANDS])
def test_jitter_is_well_below_max_requests(where: str, env: dict[str, str], args: list[str], statdir: str) -> None:
    limit, jitter = effective(env, args, statdir)
    if limit > 0:
        assert 0 <= jitter <= limit // 10, f"{where}: max_requests {limit}, max_requests_jitter {jitter}"
    else:
        assert jitter >= 0


@pytest.mark.parametrize("limit", ["50", "7", "0", "5000"])
def test_config_file_follows_max_requests_however_set(limit: str, statdir: str) -> None:
    base = ["-c", "gunicorn.conf.py", "flask_app:app"]
    for env, args in (({"GUNICORN_MAX_REQUESTS": limit}, base), ({}, ["--max-requests", limit, *base])):
        got_limit, jitter = effective(env, args, statdir)
        assert got_limit == int(limit)
        assert jitter <= int(limit) // 10, (env, args, jitter)


def test_example_file_loads_and_creates_the_directory(statdir: str) -> None:
    """Its on_starting makes STATMAP_DIR before starting statmap serve, which refuses a missing one."""
    new = os.path.join(statdir, "new")
    limit, jitter = effective({}, ["-c", "gunicorn.conf.py", "flask_app:app"], new)
    assert (limit, jitter) == (1000, 100)
    assert Path(new).is_dir() and (Path(new).stat().st_mode & 0o777) == 0o700
