"""The standard-library host of ``StatmapApp``: ``StatmapHTTPServer``, ``make_server``, ``start_server``, ``serve``.

No dependency beyond Python: what ``statmap serve`` runs. Its limits
(timeouts, connection cap, threads) are in docs/serve.md, "Limits".
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import queue
import resource
import selectors
import signal
import socket
import sys
import threading
import time
from collections import deque
from typing import Any

from . import history
from .app import TOKEN_ENV, StatmapApp

# the defaults live apart so that the CLI's parser can read them without importing the server
from .hostdefaults import DEFAULT_HEADER_TIMEOUT as DEFAULT_HEADER_TIMEOUT
from .hostdefaults import DEFAULT_HOST as DEFAULT_HOST
from .hostdefaults import DEFAULT_IDLE_TIMEOUT as DEFAULT_IDLE_TIMEOUT
from .hostdefaults import DEFAULT_MAX_CONNECTIONS as DEFAULT_MAX_CONNECTIONS
from .hostdefaults import DEFAULT_PORT as DEFAULT_PORT
from .hostdefaults import DEFAULT_THREADS as DEFAULT_THREADS
from .hostdefaults import DEFAULT_WRITE_TIMEOUT as DEFAULT_WRITE_TIMEOUT
from .httputil import (
    _HEAD_END,
    MAX_HEAD,
    REASONS,
    Response,
    _http_date,
    _loopback_hosts,
    _parse_head,
    _plain_response,
    _text,
    bind_warning,
    is_loopback,
)
from .render import printable

# The standalone server: one I/O thread and a fixed pool of worker threads.
#
# Why not ThreadingHTTPServer: it gives every connection a thread that blocks
# in recv() with no timeout, so idle or slowly dribbling clients pin threads
# and descriptors until none is left (then accept() fails with EMFILE in a
# busy loop), and it writes headers and body in two send() calls, which with
# Nagle's algorithm and the client's delayed ACK costs every keep-alive
# response ~40 ms. Here one thread owns every socket through a selector: it
# accepts, reads request heads (with deadlines), writes what a worker could
# not send at once, times out idle keep-alive connections and caps their
# number. Workers only run ``StatmapApp.handle`` and send the response in one
# write (TCP_NODELAY is set on every accepted socket). Threads are bounded:
# 1 + ``threads``, whatever the clients do.

_READING, _BUSY, _WRITING = 0, 1, 2
_OUT_OF_FDS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_REFUSE_BUSY = _plain_response(503, "too many connections, try again")
_TIMEOUT = _plain_response(408, "request head not received in time")


class _Conn:
    """One client connection; owned by the I/O thread, or by one worker while ``_BUSY``."""

    __slots__ = ("buf", "deadline", "keep", "out", "peer", "since", "sock", "state")

    def __init__(self, sock: socket.socket, peer: Any, deadline: float) -> None:
        self.sock = sock
        self.peer = peer
        self.buf = b""
        self.out = b""
        self.state = _READING
        self.deadline = deadline
        self.since = time.monotonic()  # when it last became idle (the oldest idle one is evicted first)
        self.keep = True


class _Request:
    __slots__ = ("conn", "headers", "keep", "method", "path", "query", "target", "version")

    def __init__(
        self, conn: _Conn, method: str, target: str, version: str, headers: dict[str, str], keep: bool
    ) -> None:
        self.conn = conn
        self.method = method
        self.target = target
        self.path, _, self.query = target.partition("?")
        self.version = version
        self.headers = headers
        self.keep = keep


class StatmapHTTPServer:
    """An HTTP/1.1 server for ``StatmapApp``: bounded threads, timeouts and a connection cap.

    ``header_timeout``: seconds for a client to send a whole request head
    (from its connection, or from the first byte of a later request);
    ``idle_timeout``: seconds a keep-alive connection may wait for its next
    request; ``write_timeout``: seconds for the client to take a whole
    response; ``max_connections``: open connections at most (lowered to half
    the process' descriptor limit so the collector keeps the rest); a new
    connection beyond it closes the longest idle one, or, when every
    connection has a request in progress, gets a 503 with ``Connection:
    close``; ``threads``: worker threads running requests.
    """

    def __init__(
        self,
        address: tuple[str, int],
        app: StatmapApp,
        *,
        access_log: bool = False,
        header_timeout: float = DEFAULT_HEADER_TIMEOUT,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        write_timeout: float = DEFAULT_WRITE_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        threads: int = DEFAULT_THREADS,
    ) -> None:
        for name, value in (
            ("header_timeout", header_timeout),
            ("idle_timeout", idle_timeout),
            ("write_timeout", write_timeout),
        ):
            if not value > 0 or not math.isfinite(value):
                raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
        for name, count in (("max_connections", max_connections), ("threads", threads)):
            if not isinstance(count, int) or count < 1:
                raise ValueError(f"{name} must be at least 1, not {count!r}")
        self.app = app
        self.access_log = access_log
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.write_timeout = write_timeout
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.max_connections = (
            max_connections if soft == resource.RLIM_INFINITY else min(max_connections, max(1, soft // 2))
        )
        host = address[0]
        family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind((host.strip("[]"), address[1]))
            self.socket.listen(128)
            self.socket.setblocking(False)
        except OSError:
            self.socket.close()
            raise
        self.server_address = self.socket.getsockname()
        self._conns: dict[int, _Conn] = {}
        self._sel: selectors.BaseSelector | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._done: deque[tuple[_Conn, bytes, bool]] = deque()
        self._work: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._stopped.set()
        self._paused_until = 0.0  # accepting paused (out of descriptors) until then
        self._reserve: int | None = os.open(os.devnull, os.O_RDONLY)  # freed to refuse a client at EMFILE
        self._fast = type(app).handle is StatmapApp.handle  # an app with its own handle() sees every request
        self._workers = [
            threading.Thread(target=self._worker, name=f"statmap-serve-{i}", daemon=True) for i in range(threads)
        ]
        for t in self._workers:
            t.start()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else str(host)
        if str(host) in ("0.0.0.0", "::"):
            shown = "127.0.0.1" if str(host) == "0.0.0.0" else "[::1]"
        return f"http://{shown}:{port}/"

    # -- the I/O thread ---------------------------------------------------------

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serve until ``shutdown()``; ``poll_interval`` bounds how late a timeout or a shutdown is noticed."""
        self._stopped.clear()
        sel = self._sel = selectors.DefaultSelector()
        try:
            sel.register(self.socket, selectors.EVENT_READ, None)
            sel.register(self._wake_r, selectors.EVENT_READ, "wake")
            listening = True
            next_sweep = 0.0
            while not self._stop.is_set():
                for key, mask in sel.select(min(poll_interval, 0.25)):
                    if key.data is None:
                        self._accept()
                    elif key.data == "wake":
                        self._drain_wake()
                    else:
                        conn: _Conn = key.data
                        if mask & selectors.EVENT_READ and conn.state == _READING:
                            self._readable(conn)
                        elif mask & selectors.EVENT_WRITE and conn.state == _WRITING:
                            self._writable(conn)
                self._finish_done()
                now = time.monotonic()
                paused = now < self._paused_until
                if paused and listening:
                    sel.unregister(self.socket)
                    listening = False
                elif not paused and not listening:
                    sel.register(self.socket, selectors.EVENT_READ, None)
                    listening = True
                if now >= next_sweep:
                    next_sweep = now + 0.1
                    for conn in [c for c in self._conns.values() if c.state != _BUSY and c.deadline <= now]:
                        if conn.state == _READING and conn.buf:
                            self._close(conn, _TIMEOUT)
                        else:
                            self._close(conn)
            # Stopping: no more accepting; idle connections go now, requests in progress may finish.
            if listening:
                sel.unregister(self.socket)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                for conn in [c for c in self._conns.values() if c.state == _READING]:
                    self._close(conn)
                if not self._conns:
                    break
                for key, mask in sel.select(0.05):
                    if key.data == "wake":
                        self._drain_wake()
                    elif key.data is not None and mask & selectors.EVENT_WRITE:
                        self._writable(key.data)
                self._finish_done()
            for conn in [c for c in self._conns.values() if c.state != _BUSY]:
                self._close(conn)
        finally:
            self._sel = None
            sel.close()
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop ``serve_forever`` (from another thread) and wait until it has returned."""
        self._stop.set()
        self._wake()
        self._stopped.wait()

    def server_close(self) -> None:
        self._stop.set()
        self.socket.close()
        for _ in self._workers:
            self._work.put(None)
        for t in self._workers:
            t.join(timeout=5)
        for conn in list(self._conns.values()):
            with contextlib.suppress(OSError):
                conn.sock.close()
        self._conns.clear()
        self._wake_r.close()
        self._wake_w.close()
        if self._reserve is not None:
            os.close(self._reserve)
            self._reserve = None

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full (a wake-up is pending anyway) or closed
            self._wake_w.send(b"\0")

    def _drain_wake(self) -> None:
        with contextlib.suppress(OSError):
            while self._wake_r.recv(4096):
                pass

    def _accept(self) -> None:
        for _ in range(64):  # then let the other sockets have their turn
            try:
                sock, peer = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno not in _OUT_OF_FDS:
                    continue  # ECONNABORTED and the like: that client is gone
                if self._evict():
                    continue  # a descriptor is free again
                self._refuse_without_descriptor()
                return
            sock.setblocking(False)
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # one write per response, sent now
            if len(self._conns) >= self.max_connections and not self._evict():
                self._send_and_close(sock, _REFUSE_BUSY)
                continue
            conn = _Conn(sock, peer, time.monotonic() + self.header_timeout)
            self._conns[sock.fileno()] = conn
            assert self._sel is not None
            self._sel.register(sock, selectors.EVENT_READ, conn)
            self._readable(conn)  # its request is often here already: then it is busy, not evictable

    def _evict(self) -> bool:
        """Close the connection idle (or reading a head) the longest, to make room; False if none is."""
        idle = [c for c in self._conns.values() if c.state == _READING]
        if not idle:
            return False
        self._close(min(idle, key=lambda c: c.since))
        return True

    def _refuse_without_descriptor(self) -> None:
        """Out of descriptors and nothing to evict: refuse one client with the reserve, then pause."""
        if self._reserve is not None:
            os.close(self._reserve)
            self._reserve = None
            try:
                sock, _ = self.socket.accept()
                self._send_and_close(sock, _REFUSE_BUSY)
            except OSError:
                pass
            with contextlib.suppress(OSError):
                self._reserve = os.open(os.devnull, os.O_RDONLY)
        self._paused_until = time.monotonic() + 0.25  # no busy loop on EMFILE

    @staticmethod
    def _send_and_close(sock: socket.socket, data: bytes) -> None:
        with contextlib.suppress(OSError):
            sock.setblocking(False)
            sock.send(data)  # one try, never blocks: a client that does not read just loses it
            sock.shutdown(socket.SHUT_WR)
        sock.close()

    def _close(self, conn: _Conn, farewell: bytes = b"") -> None:
        self._conns.pop(conn.sock.fileno(), None)
        if self._sel is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(conn.sock)
        if farewell:
            self._send_and_close(conn.sock, farewell)
        else:
            conn.sock.close()

    def _readable(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        if not data:
            self._close(conn)
            return
        if not conn.buf:
            conn.deadline = time.monotonic() + self.header_timeout  # a request has begun
        conn.buf += data
        self._next_request(conn)

    def _next_request(self, conn: _Conn, fast: bool = True) -> None:
        """Start the request whose head is complete in ``conn.buf``, if any. ``fast``: a ``/metrics`` the
        shared rendered body answers is answered here, not by a worker (two thread switches saved)."""
        found = _HEAD_END.search(conn.buf, 0, MAX_HEAD + 4)
        if found is None:
            if len(conn.buf) > MAX_HEAD:
                self._close(conn, _plain_response(431, "request head too large"))
            return
        head, conn.buf = conn.buf[: found.start()], conn.buf[found.end() :]
        parsed = _parse_head(head)
        if len(parsed) == 2:
            status, problem = parsed
            self._close(conn, _plain_response(status, problem))
            return
        method, target, version, headers = parsed
        tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
        keep = "keep-alive" in tokens if version == "HTTP/1.0" else "close" not in tokens
        if headers.get("content-length", "0").strip() != "0" or "transfer-encoding" in headers:
            # No route takes a body: answer, then close rather than read (and never mis-frame) it.
            keep = False
            conn.buf = b""
        req = _Request(conn, method, target, version, headers, keep)
        if fast and self._fast and req.path == "/metrics" and method in ("GET", "HEAD"):
            try:
                answered = self._respond(req, cached=True)  # None: a collection or a rendering is due
            except Exception:  # noqa: BLE001 - as in _worker: drop this connection only
                self._close(conn)
                return
            if answered is not None:
                data, conn.keep = answered
                self._send_now(conn, data)
                return
        conn.state = _BUSY
        assert self._sel is not None
        self._sel.unregister(conn.sock)
        self._work.put(req)

    def _send_now(self, conn: _Conn, data: bytes) -> None:
        """Send a response made in the I/O thread; what the socket does not take now is sent when writable."""
        try:
            sent = conn.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._close(conn)
            return
        if sent < len(data):
            conn.out = data[sent:]
            conn.state = _WRITING
            conn.deadline = time.monotonic() + self.write_timeout
            assert self._sel is not None
            self._sel.modify(conn.sock, selectors.EVENT_WRITE, conn)
        else:
            self._response_sent(conn, fast=False)  # a pipelined request next goes to a worker: no recursion

    def _writable(self, conn: _Conn) -> None:
        try:
            sent = conn.sock.send(conn.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        conn.out = conn.out[sent:]
        if not conn.out:
            self._response_sent(conn)

    def _finish_done(self) -> None:
        """Take back the connections whose request a worker has finished."""
        while self._done:
            conn, rest, failed = self._done.popleft()
            if failed:
                self._close(conn)
            elif rest:
                conn.out = rest
                conn.state = _WRITING
                conn.deadline = time.monotonic() + self.write_timeout
                assert self._sel is not None
                self._sel.register(conn.sock, selectors.EVENT_WRITE, conn)
            else:
                assert self._sel is not None
                self._sel.register(conn.sock, selectors.EVENT_READ, conn)
                self._response_sent(conn)

    def _response_sent(self, conn: _Conn, fast: bool = True) -> None:
        if not conn.keep or self._stop.is_set():
            self._close(conn)
            return
        now = time.monotonic()
        conn.state = _READING
        conn.since = now
        conn.deadline = now + (self.header_timeout if conn.buf else self.idle_timeout)
        assert self._sel is not None
        if conn.out == b"" and self._sel.get_key(conn.sock).events != selectors.EVENT_READ:
            self._sel.modify(conn.sock, selectors.EVENT_READ, conn)
        if conn.buf:
            self._next_request(conn, fast)  # pipelined

    # -- the workers ------------------------------------------------------------------

    def _worker(self) -> None:
        while (req := self._work.get()) is not None:
            conn = req.conn
            rest, failed = b"", False
            try:
                answered = self._respond(req)
                assert answered is not None  # (None only for cached=True)
                data, conn.keep = answered
                try:
                    sent = conn.sock.send(data)  # headers and body: one write
                except (BlockingIOError, InterruptedError):
                    sent = 0
                rest = data[sent:]
            except Exception:  # noqa: BLE001 - a client that went away, or a bug: drop this connection only
                failed = True
            self._done.append((conn, rest, failed))
            self._wake()

    def _respond(self, req: _Request, cached: bool = False) -> tuple[bytes, bool] | None:
        """(bytes, keep-alive); ``cached``: None unless ``StatmapApp.cached`` answers."""
        keep = req.keep and not self._stop.is_set()
        if not req.path.startswith("/"):  # absolute-form ("http://...") or "*": not for this server
            resp: Response | None = _text(400, "bad request target")
        elif cached:
            resp = self.app.cached(req.method, req.path, req.query, req.headers)
            if resp is None:
                return None
        else:
            resp = self.app.handle(req.method, req.path, req.query, req.headers)
        assert resp is not None
        lines = [f"HTTP/1.1 {resp.status} {REASONS.get(resp.status, '')}", "Server: statmap", f"Date: {_http_date()}"]
        lines += [f"{k}: {v}" for k, v in resp.headers]
        lines.append(f"Content-Length: {len(resp.body)}")
        if not keep:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if self.access_log:
            sys.stderr.write(
                # the request line is the client's: escaped, so it cannot drive the operator's terminal
                printable(f'statmap serve: {req.conn.peer[0]} "{req.method} {req.target} {req.version}" ')
                + f"{resp.status} {len(resp.body)}\n"
            )
        return (head if req.method == "HEAD" else head + resp.body), keep


def make_server(
    directory: str | os.PathLike[str] | None = None,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    token: str | None = None,
    access_log: bool = False,
    check_host: bool = True,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    write_timeout: float = DEFAULT_WRITE_TIMEOUT,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    threads: int = DEFAULT_THREADS,
    **options: Any,
) -> StatmapHTTPServer:
    """A ``StatmapHTTPServer`` for the exporter and dashboard, bound but not serving yet.

    On loopback, requests whose ``Host`` is not a loopback name are refused
    (``check_host``), which stops a web page from reaching it through DNS rebinding.
    The timeouts, ``max_connections`` and ``threads``: see ``StatmapHTTPServer``;
    the other options go to ``StatmapApp``.
    """
    app = StatmapApp(directory, token=token, **options)
    try:
        server = StatmapHTTPServer(
            (host, port),
            app,
            access_log=access_log,
            header_timeout=header_timeout,
            idle_timeout=idle_timeout,
            write_timeout=write_timeout,
            max_connections=max_connections,
            threads=threads,
        )
    except BaseException:
        app.close()
        raise
    if check_host and is_loopback(host) and app.allowed_hosts is None:
        app.allowed_hosts = frozenset(_loopback_hosts(server.server_address[1]))
    history.attach(app)  # the dashboard's recent past is sampled from the start
    return server


def start_server(*args: Any, **kwargs: Any) -> StatmapHTTPServer:
    """``make_server(...)`` serving from a daemon thread; stop it with ``server.shutdown(); server.server_close()``."""
    server = make_server(*args, **kwargs)
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="statmap-serve", daemon=True
    ).start()
    return server


def serve(
    directory: str | os.PathLike[str] | None = None,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    token: str | None = None,
    access_log: bool = False,
    out: Any = None,
    **options: Any,
) -> int:
    """Serve until SIGINT or SIGTERM; returns 0 after a clean stop."""
    out = out or sys.stdout
    if token is None:
        token = os.environ.get(TOKEN_ENV, "")
    warning = bind_warning(host, bool(token))
    server = make_server(directory, host, port, token=token, access_log=access_log, **options)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    stop = threading.Event()
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="statmap-serve")
    thread.start()
    protected = ", token required" if token else ""
    print(
        f"statmap serve: {server.app.directory} on {server.url} (dashboard {server.url}, "
        f"metrics {server.url}metrics{protected})",
        file=out,
        flush=True,
    )
    try:
        while not stop.wait(0.5):
            if not thread.is_alive():
                break
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()
        server.app.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("statmap serve: stopped", file=out, flush=True)
    return 0
