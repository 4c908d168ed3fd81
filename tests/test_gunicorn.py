"""End to end with a real pre-fork server: gunicorn, 4 workers, replaced during the run by --max-requests.

After N requests, ``statmap show --aggregate --json`` reports exactly N, at
every observation the total equals the requests answered so far (it never
goes backwards while workers are replaced and archived), and the directory
ends with the archive alone.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import stop_server

pytest.importorskip("gunicorn")

pytestmark = pytest.mark.external  # a real gunicorn

APP_DIR = Path(__file__).resolve().parent.parent / "examples" / "gunicorn"
REQUESTS = 240


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def statmap_json(*args: str) -> dict:  # type: ignore[type-arg]
    """The command's JSON; exit status 1 (the collection reported errors) still has it, for the assertions."""
    out = subprocess.run([sys.executable, "-m", "statmap", *args], capture_output=True, text=True, timeout=120)
    assert out.returncode in (0, 1), f"statmap {' '.join(args)} failed ({out.returncode}): {out.stderr}"
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def requests_total(statdir: str) -> int:
    doc = statmap_json("show", "--aggregate", "--json", "--dir", statdir, "--match", "^requests$")
    assert doc["errors"] == []
    series = doc["metrics"][0]["series"] if doc["metrics"] else []
    return sum(s["value"] for s in series)


def get(port: str | int, path: str) -> int:
    for _attempt in range(50):
        conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=30)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            return response.status
        except (ConnectionError, http.client.RemoteDisconnected):
            time.sleep(0.1)  # the listening socket is there from the start; retry a reset during a restart
        finally:
            conn.close()
    raise AssertionError(f"no answer for {path}")


def test_gunicorn_workers_replaced_totals_exact(statdir: str, tmp_path: Path) -> None:
    port = free_port()
    env = dict(os.environ, STATMAP_DIR=statdir)
    log = open(tmp_path / "gunicorn.log", "w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--chdir",
            str(APP_DIR),
            "-w",
            "4",
            "-b",
            f"127.0.0.1:{port}",
            "--max-requests",
            "20",
            "--max-requests-jitter",
            "5",
            "--no-control-socket",
            "--graceful-timeout",
            "5",
            "app:app",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None, (tmp_path / "gunicorn.log").read_text()
                assert time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.1)
        previous = 0
        for i in range(1, REQUESTS + 1):
            assert get(port, f"/item/{i}") == 200
            if i % 40 == 0:
                total = requests_total(statdir)
                assert total == i, (total, i)  # exact, and so never backwards
                assert total >= previous
                previous = total
            if i % 80 == 0:
                subprocess.run([sys.executable, "-m", "statmap", "clean", "--dir", statdir], check=True, timeout=60)
        assert requests_total(statdir) == REQUESTS
        files = statmap_json("ls", "--dir", statdir, "--json")
        archived = sum(f.get("absorbed_instances", 0) for f in files)
        ended = sum(1 for f in files if f["state"] in ("closed", "dead"))
        assert archived + ended >= 5  # workers really were replaced (each after at most 25 requests)
    finally:
        stop_server(server)
        log.close()
    # Every worker is gone now; fold them all: the total stays, one file remains.
    subprocess.run([sys.executable, "-m", "statmap", "clean", "--dir", statdir], check=True, timeout=60)
    assert requests_total(statdir) == REQUESTS
    assert sorted(os.listdir(statdir)) == [".web.archive.lock", "web.archive.statmap"]
    assert "Error" not in (tmp_path / "gunicorn.log").read_text()
