"""Helpers for the tests of ``statmap serve``: real server processes and real worker processes.

(No tests here; pytest collects the module and finds none.)
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

# A worker publishing a few metrics; it obeys one command per line on stdin
# and answers "ok" on stdout after each, so a test knows when it is done:
#   inc N | set V | observe V | close | exit
WORKER = r"""
import sys, statmap
directory, name = sys.argv[1], sys.argv[2]
pub = statmap.Publisher(name, directory)
jobs = pub.counter("jobs", "Jobs done", labels=("queue",))
level = pub.gauge("level", "A level the test sets", aggregate="sum")
latency = pub.histogram("latency", "Job latency", unit="seconds", buckets=(0.01, 0.1, 1.0))
jobs.labels("high")
print("ready", flush=True)
for line in sys.stdin:
    cmd, _, arg = line.strip().partition(" ")
    if cmd == "inc":
        jobs.labels("high").inc(int(arg))
    elif cmd == "set":
        level.set(float(arg))
    elif cmd == "observe":
        latency.observe(float(arg))
    elif cmd == "close":
        pub.close()
    elif cmd == "exit":
        print("ok", flush=True)
        break
    print("ok", flush=True)
"""


class Worker:
    """A real publishing process driven line by line."""

    def __init__(self, directory: str, name: str = "svc") -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, directory, name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def __call__(self, command: str) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "ok"

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self("exit")
            except (BrokenPipeError, AssertionError):
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``statmap serve`` in its own process, on a free loopback port."""

    def __init__(self, directory: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "statmap", "serve", "--dir", directory, "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env if env is not None else dict(os.environ),
        )
        assert self.proc.stdout is not None
        self.first_line = self.proc.stdout.readline()
        found = re.search(r"http://([0-9.]+):(\d+)/", self.first_line)
        if found is None:
            self.proc.kill()
            raise AssertionError(f"no URL in {self.first_line!r}; stderr: {self.proc.stderr.read()}")  # type: ignore[union-attr]
        self.host, self.port = found.group(1), int(found.group(2))
        self.url = f"http://{self.host}:{self.port}/"

    def request(
        self, path: str, headers: dict[str, str] | None = None, method: str = "GET"
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.request(method, path, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.headers, resp.read()
        finally:
            conn.close()

    def json(self, path: str, headers: dict[str, str] | None = None) -> Any:
        status, _, body = self.request(path, headers)
        assert status == 200, (status, body[:300])
        return json.loads(body)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> tuple[int, str, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise AssertionError(f"statmap serve did not stop within {timeout}s") from None
        return self.proc.returncode, self.first_line + out, err


def raw_request(port: int, request_line: str, extra: Sequence[str] = ()) -> tuple[int, bytes]:
    """Send an exact request line (no client-side normalisation); return status and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        head = "\r\n".join([request_line, f"Host: 127.0.0.1:{port}", "Connection: close", *extra, "", ""])
        s.sendall(head.encode("latin-1"))
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    status = int(status_line.split()[1])
    return status, rest.partition(b"\r\n\r\n")[2]


def wait_for(predicate: Any, timeout: float = 20, interval: float = 0.1, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")
