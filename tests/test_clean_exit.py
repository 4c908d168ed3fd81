"""Processes that end cleanly without atexit (multiprocessing children, uvicorn
--workers) close their files: after a clean shutdown every file reads "closed",
not "dead". A SIGKILL still reads dead."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

import statmap

ROOT = Path(__file__).resolve().parent.parent


def _statuses(d: str) -> dict[str, str]:
    out = {}
    for name in os.listdir(d):
        if not name.startswith("."):
            with statmap.open(os.path.join(d, name)) as reader:
                out[name] = reader.snapshot().status
    return out


def _settled(d: str, timeout: float = 30) -> dict[str, str]:
    """Statuses once no file reads alive (a forkserver may take a moment to exit)."""
    deadline = time.monotonic() + timeout
    while True:
        got = _statuses(d)
        if "alive" not in got.values() or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def _env(d: str) -> dict[str, str]:
    env = dict(os.environ, APP_STATDIR=d)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


POOL = textwrap.dedent(
    """
    import multiprocessing, os, sys, statmap
    pub = statmap.Publisher("pool", os.environ["APP_STATDIR"])
    done = pub.counter("done", "Tasks done")

    def work(i):
        done.inc(i)
        return os.getpid()

    if __name__ == "__main__":
        ctx = multiprocessing.get_context(sys.argv[1])
        pool = ctx.Pool(2)
        pids = set(pool.map(work, range(1, 41), chunksize=1))
        pool.close()
        pool.join()
        print(len(pids))
    """
)


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_multiprocessing_pool_workers_close_their_files(statdir: str, tmp_path: Path, method: str) -> None:
    script = tmp_path / "pool_app.py"
    script.write_text(POOL)
    out = subprocess.run(
        [sys.executable, str(script), method], env=_env(statdir), text=True, capture_output=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    statuses = _settled(statdir)
    assert statuses and set(statuses.values()) == {"closed"}, statuses
    total = 0
    for name in statuses:
        with statmap.open(os.path.join(statdir, name)) as reader:
            total += sum(int(s.value) for s in reader.snapshot().series if s.name == "done")  # type: ignore[call-overload]
    assert total == sum(range(1, 41))


KILLED = textwrap.dedent(
    """
    import multiprocessing, os, sys, time, statmap
    pub = statmap.Publisher("killed", os.environ["APP_STATDIR"])
    c = pub.counter("c", "C")

    def work(r):
        c.inc()
        os.write(r, b"x")
        time.sleep(60)

    if __name__ == "__main__":
        r, w = os.pipe()
        p = multiprocessing.get_context("fork").Process(target=work, args=(w,))
        p.start()
        os.read(r, 1)
        os.kill(p.pid, 9)
        p.join()
        pub.close()
    """
)


def test_multiprocessing_child_killed_still_reads_dead(statdir: str, tmp_path: Path) -> None:
    script = tmp_path / "killed_app.py"
    script.write_text(KILLED)
    out = subprocess.run([sys.executable, str(script)], env=_env(statdir), text=True, capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert sorted(_statuses(statdir).values()) == ["closed", "dead"]


APP = textwrap.dedent(
    """
    import os, statmap, statmap.middleware
    pub = statmap.Publisher("uv", os.environ["APP_STATDIR"])
    hits = pub.counter("hits", "Requests")

    async def raw_app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        hits.inc()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": str(os.getpid()).encode()})

    if os.environ.get("APP_MIDDLEWARE") == "1":  # statmap's middleware closes the files at lifespan shutdown
        app = statmap.middleware.ASGIMiddleware(raw_app, publisher=pub)
    else:  # a bare ASGI app closes them itself
        async def app(scope, receive, send):
            if scope["type"] != "lifespan":
                return await raw_app(scope, receive, send)

            async def closing_send(message):
                await send(message)
                if message["type"] == "lifespan.shutdown.complete":
                    statmap.close_all()

            await raw_app(scope, receive, closing_send)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("middleware", [True, False], ids=["middleware", "close_all"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_uvicorn_workers_close_their_files(statdir: str, tmp_path: Path, sig: signal.Signals, middleware: bool) -> None:
    pytest.importorskip("uvicorn", reason="needs uvicorn")
    (tmp_path / "uv_app.py").write_text(APP)
    port = _free_port()
    args = ["uv_app:app", "--workers", "2", "--host", "127.0.0.1", "--port", str(port), "--app-dir", str(tmp_path)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", *args, "--log-level", "warning"],
        env={**_env(statdir), "APP_MIDDLEWARE": "1" if middleware else "0"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        served = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (served < 20 or len(_statuses(statdir)) < 2):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    assert response.status == 200
                    served += 1
            except OSError:
                time.sleep(0.1)
        assert served >= 20 and len(_statuses(statdir)) == 2, (served, _statuses(statdir))
    finally:
        proc.send_signal(sig)
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
    statuses = _settled(statdir)
    assert set(statuses.values()) == {"closed"}, (statuses, err[-2000:])
    total = 0
    for name in statuses:
        with statmap.open(os.path.join(statdir, name)) as reader:
            total += sum(int(s.value) for s in reader.snapshot().series if s.name == "hits")  # type: ignore[call-overload]
    assert total == served
