"""``statmap serve`` against hostile or careless clients: catastrophic patterns in ``match=``,
idle and slowly dribbling connections beyond the server's descriptors, the connection cap,
and keep-alive responses sent as one write (no Nagle / delayed-ACK stall).

Real server processes (or a real server in this process), real sockets on loopback only;
every loop is bounded in count and time.
"""

from __future__ import annotations

import http.client
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from statmap.server import Response, StatmapApp, StatmapHTTPServer

from .test_server_support import Server, Worker

pytestmark = pytest.mark.once  # the server's HTTP side: the values come from the collector, tested under both cells

# Patterns that make a backtracking engine take exponential time on a metric name.
EVIL = (
    r"(?:\w*\w*\w*\w*\w*)*!",
    r"(a|aa)*!",
    r"(\w+)+!",
    r"(.*)*x!",
    r"(?:[a-z_]*[a-z_]*)*[0-9]{2}!",
)


@pytest.fixture
def workers(statdir: str) -> Iterator[list[Worker]]:
    ws = [Worker(statdir, "a_rather_long_publisher_name_for_backtracking")]
    try:
        yield ws
    finally:
        for w in ws:
            w.stop()


def _get(host: str, port: int, path: str, timeout: float = 30) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_catastrophic_patterns_do_not_stall_the_server(statdir: str, workers: list[Worker]) -> None:
    """P29: matching costs time linear in the name; /healthz answers within 1 s meanwhile."""
    server = Server(statdir, "--max-age", "0")
    results: list[tuple[str, int, bytes]] = []

    def attack(path: str) -> None:
        try:
            status, body = _get(server.host, server.port, path, timeout=60)
            results.append((path, status, body))
        except OSError as exc:
            results.append((path, -1, str(exc).encode()))

    try:
        paths = [f"/metrics?match={p}" for p in EVIL] + [f"/api/series?match={p}" for p in EVIL]
        paths = [p.replace("+", "%2B") for p in paths]
        threads = [threading.Thread(target=attack, args=(p,), daemon=True) for p in paths]
        for t in threads:
            t.start()
        time.sleep(0.3)  # the attacks are in the server now
        for _ in range(5):
            started = time.monotonic()
            try:
                status, body = _get(server.host, server.port, "/healthz", timeout=5)
            except OSError as exc:
                raise AssertionError(f"/healthz did not answer while the patterns ran: {exc!r}") from None
            assert (status, body) == (200, b"ok\n")
            assert time.monotonic() - started < 1.0
        for t in threads:
            t.join(timeout=30)
        assert len(results) == len(paths), "a pattern request did not finish within 30 s"
        for path, status, body in results:
            # Accepted and matched nothing, or refused with a clear reason: never a stall.
            assert status in (200, 400), (path, status, body[:200])
            if status == 200 and path.startswith("/metrics"):
                assert b"jobs" not in body, path
        # The common patterns still work as before.
        status, body = _get(server.host, server.port, "/metrics?match=^jobs")
        assert status == 200 and b"jobs_total" in body and b"level" not in body
        status, body = _get(server.host, server.port, "/metrics?match=lat.*|^lev")
        assert status == 200 and b"latency" in body and b"level" in body and b"jobs" not in body
    finally:
        server.stop()


def test_unsupported_patterns_are_a_clear_400(statdir: str, workers: list[Worker]) -> None:
    server = Server(statdir)
    try:
        for pattern, words in (
            (r"(a)\1", b"backreference"),
            ("(?=jobs)", b"lookaround"),
            ("x" * 2000, b"too long"),
            ("(", b"missing )"),
        ):
            for route in ("/metrics", "/api/series"):
                status, body = _get(server.host, server.port, f"{route}?match={pattern}")
                assert status == 400 and b"match:" in body and words in body, (route, pattern, body)
    finally:
        server.stop()


# -- idle and slow connections ---------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _low_nofile() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))


def test_idle_and_dribbling_connections_do_not_take_the_server_down(statdir: str, workers: list[Worker]) -> None:
    """P30: more idle and slow-loris sockets than the server has descriptors; a scraper is still answered."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "statmap", "serve", "--dir", statdir, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_low_nofile,
    )
    sockets: list[socket.socket] = []
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
        assert _get("127.0.0.1", port, "/healthz")[0] == 200
        # 150 sockets against a limit of 64 descriptors: half idle, half dribbling a header.
        for i in range(150):
            s = socket.socket()
            s.settimeout(0.5)
            try:
                s.connect(("127.0.0.1", port))
                if i % 2:
                    s.sendall(b"GET /metrics HTTP/1.1\r\n")
            except OSError:
                pass  # the backlog is full: that socket is just not connected
            sockets.append(s)
        cpu0, t0 = _cpu_seconds(proc.pid), time.monotonic()
        answered = 0
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            for s in sockets[1::2]:  # the slow loris: one more header byte now and then
                try:
                    s.send(b"X")
                except OSError:
                    pass
            try:
                status, body = _get("127.0.0.1", port, "/metrics", timeout=5)
            except OSError as exc:
                raise AssertionError(f"a scraper got no answer among the idle sockets: {exc!r}") from None
            assert status == 200 and b"jobs_total" in body
            answered += 1
            time.sleep(0.2)
        cpu = (_cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0)
        assert answered >= 5
        assert cpu < 0.35, f"the server used {cpu:.0%} of a core while holding idle connections"
    finally:
        for s in sockets:
            s.close()
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _raw(port: int, data: bytes, timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def test_header_and_idle_timeouts_close_connections(statdir: str, workers: list[Worker]) -> None:
    server = Server(statdir, "--header-timeout", "1", "--idle-timeout", "1")
    try:
        # A request head that never ends: 408 and the connection is closed.
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            started = time.monotonic()
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            assert data.startswith(b"HTTP/1.1 408 "), data
            assert time.monotonic() - started < 8
        # A kept-alive connection left idle is closed after the idle timeout.
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode())
            first = s.recv(65536)
            assert first.startswith(b"HTTP/1.1 200 ") and first.endswith(b"ok\n")
            started = time.monotonic()
            assert s.recv(65536) == b""  # closed by the server
            assert 0.5 < time.monotonic() - started < 8
        # Bad limits are refused with the option's name.
        out = subprocess.run(
            [sys.executable, "-m", "statmap", "serve", "--port", "0", "--max-connections", "0"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 2 and "--max-connections" in out.stderr
    finally:
        server.stop()


class _BlockingApp(StatmapApp):
    """A real app whose ``/block`` route waits for the test (to hold connections busy)."""

    def __init__(self, directory: str) -> None:
        super().__init__(directory, token="")
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)

    def handle(self, method: str, path: str, query: str, headers: dict[str, str]) -> Response:
        if path == "/block":
            self.entered.release()
            self.release.wait(30)
            return Response(200, b"released\n")
        return super().handle(method, path, query, headers)


def _threaded(server: StatmapHTTPServer) -> threading.Thread:
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    t.start()
    return t


def test_connection_cap_refuses_cleanly_and_evicts_idle(statdir: str) -> None:
    app = _BlockingApp(statdir)
    server = StatmapHTTPServer(("127.0.0.1", 0), app, max_connections=2, threads=2)
    thread = _threaded(server)
    port = server.server_address[1]
    got: list[tuple[int, bytes]] = []
    try:

        def blocked() -> None:
            got.append(_get("127.0.0.1", port, "/block"))

        busy = [threading.Thread(target=blocked, daemon=True) for _ in range(2)]
        for t in busy:
            t.start()
        for _ in range(2):
            assert app.entered.acquire(timeout=10)
        # Both connections are busy: the next one is refused at once with a 503, then closed.
        started = time.monotonic()
        data = _raw(port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert data.startswith(b"HTTP/1.1 503 ") and b"Connection: close" in data, data
        assert time.monotonic() - started < 5
        app.release.set()
        for t in busy:
            t.join(timeout=10)
        assert got == [(200, b"released\n")] * 2
        # Idle keep-alive connections give way to a new client.
        idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(2)]
        time.sleep(0.3)
        assert _get("127.0.0.1", port, "/healthz") == (200, b"ok\n")
        assert idle[0].recv(100) == b""  # the oldest idle connection was closed for it
        for s in idle:
            s.close()
    finally:
        app.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        app.close()


# -- one write per response --------------------------------------------------------------------


def _server_side(client: socket.socket) -> socket.socket | None:
    """A duplicate of the server's end of ``client`` (the server runs in this process)."""
    for name in os.listdir("/proc/self/fd"):
        try:
            dup = socket.fromfd(int(name), socket.AF_INET, socket.SOCK_STREAM)
        except OSError:
            continue
        try:
            if dup.getpeername() == client.getsockname() and dup.getsockname() == client.getpeername():
                return dup
        except OSError:
            pass
        dup.close()
    return None


def test_keepalive_responses_arrive_whole(statdir: str, workers: list[Worker]) -> None:
    """P31: headers and body in one write with TCP_NODELAY: the first recv holds the whole response."""
    app = StatmapApp(statdir, token="")
    server = StatmapHTTPServer(("127.0.0.1", 0), app)
    thread = _threaded(server)
    port = server.server_address[1]
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            for path in ["/healthz", "/api/processes", "/healthz", "/metrics"] * 3:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
                data = s.recv(1 << 20)
                head, _, body = data.partition(b"\r\n\r\n")
                length = int(next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:"))[15:])
                assert len(body) == length, (path, head, len(body), length)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            s.recv(65536)
            accepted = _server_side(s)
            assert accepted is not None, "the server's end of the connection was not found"
            with accepted:
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), "TCP_NODELAY is not set"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        app.close()


def test_access_log_escapes_the_request_line(statdir: str) -> None:
    """The request line is the client's: --access-log writes it escaped, never raw control characters."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "statmap", "serve", "--dir", statdir, "--port", "0", "--access-log"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline().decode()  # "statmap serve: DIR on http://127.0.0.1:PORT/ (...)"
        port = int(line.split("http://127.0.0.1:", 1)[1].split("/", 1)[0])
        _raw(port, b"GET /\x1b]0;owned\x07\x1b[2J HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    logged = err.decode(errors="replace")
    assert "\x1b" not in logged and "\x07" not in logged, logged
    assert "\\x1b]0;owned\\x07\\x1b[2J" in logged, logged
