"""gunicorn configuration for an application that publishes with statmap.

::

    cd examples
    STATMAP_DIR=/tmp/web-stats gunicorn -c gunicorn.conf.py flask_app:app
    curl localhost:9464/metrics                 # statmap serve, started beside gunicorn
    statmap show --aggregate --dir /tmp/web-stats

What it arranges:

* **Every worker publishes from its own file.** Without ``preload_app``
  each worker imports the application after the fork and creates its own
  publisher; with ``preload_app = True`` the master's publishers are
  inherited, statmap's at-fork hook points them at the worker's private
  memory, and the worker's file appears on its first update; ``post_fork``
  creates it at once (``statmap.create_files()``), so every worker is listed
  from the start. ``STATMAP_DIR`` is fixed here
  (before the fork), so the master, every worker and ``statmap serve`` use
  the same directory.
* **Dead workers are folded into the archive.** ``child_exit`` runs in the
  master after a worker has exited (``max_requests``, a timeout, a crash) and
  folds every ended process file into ``PUBLISHER.archive.statmap``: totals
  never go backwards and the directory does not fill up. ``on_starting``
  folds what a previous run left, ``on_exit`` folds the last workers.
* **``statmap serve`` runs beside the server**, started by ``on_starting`` as
  a child process of the master (port ``$STATMAP_SERVE_PORT``, default 9464;
  ``0`` or empty: do not start it) and stopped by ``on_exit``; on Linux it
  also stops if the master is killed. To run it as a sidecar instead (a
  second systemd unit or container sharing the directory), set
  ``STATMAP_SERVE_PORT=0`` and run ``statmap serve --dir DIR`` there.

Settings read from the environment: ``STATMAP_DIR``, ``STATMAP_SERVE_PORT``,
``STATMAP_SERVE_HOST`` (127.0.0.1), ``STATMAP_SERVE_ARGS`` (more options for
``statmap serve``; a token is best passed as ``$STATMAP_TOKEN``, which it
inherits), ``GUNICORN_BIND`` (127.0.0.1:8000),
``WEB_CONCURRENCY`` (workers, 4), ``GUNICORN_MAX_REQUESTS`` (1000; 0: never
replace workers; ``--max-requests N`` on the command line works too). The
jitter on it is a tenth of max_requests, however max_requests was set: a
jitter above max_requests would make the replacement interval swing wildly
(``--max-requests 50`` with a jitter of 100 replaces after 50 to 150).
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import shlex
import signal
import subprocess
import sys
from typing import Any

import statmap
from statmap.archive import clean
from statmap.directory import ensure_directory

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "4"))
# Replacing workers now and then is safe for the totals: their files are archived.
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "1000"))
max_requests_jitter = max_requests // 10  # _bound_jitter corrects it if --max-requests overrides max_requests
graceful_timeout = 10

# One directory for everybody, fixed before any fork (created 0700 if missing).
STATMAP_DIR = os.environ["STATMAP_DIR"] = statmap.default_directory()
SERVE_PORT = os.environ.get("STATMAP_SERVE_PORT", "9464")
SERVE_HOST = os.environ.get("STATMAP_SERVE_HOST", "127.0.0.1")
SERVE_ARGS = shlex.split(os.environ.get("STATMAP_SERVE_ARGS", ""))  # e.g. "--max-age 0 --access-log"


def _fold(server: Any, when: str) -> None:
    """Fold ended worker files into the archive; never let a failure stop gunicorn."""
    try:
        report = clean(STATMAP_DIR)
    except Exception as exc:  # noqa: BLE001 - the archive is an optimisation of the directory, not a reason to crash
        server.log.warning("statmap: clean %s failed: %s", when, exc)
        return
    for path, problem in report.errors + report.kept:
        server.log.warning("statmap: clean %s: %s: %s", when, path, problem)


def _die_with_parent() -> None:
    # Linux: the sidecar gets SIGTERM if the master dies without running on_exit.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _bound_jitter(server: Any) -> None:
    """At most a tenth of the final max_requests (the command line is applied after this file)."""
    cfg = server.cfg
    bound = max(0, cfg.max_requests) // 10
    if cfg.max_requests_jitter > bound:
        cfg.set("max_requests_jitter", bound)


def on_reload(server: Any) -> None:
    _bound_jitter(server)


def on_starting(server: Any) -> None:
    _bound_jitter(server)  # before the first worker is forked
    try:
        # statmap serve refuses a directory that does not exist: the workers create it only later
        ensure_directory(STATMAP_DIR)
    except statmap.StatmapError as exc:
        server.log.warning("statmap: %s", exc)
    _fold(server, "at start")
    server.statmap_serve = None
    if SERVE_PORT in ("", "0"):
        return
    if importlib.util.find_spec("statmap.server") is None:
        server.log.warning("statmap: this statmap has no 'serve' command; use 'statmap export --dir %s'", STATMAP_DIR)
        return
    command = [
        sys.executable,
        "-m",
        "statmap",
        "serve",
        "--dir",
        STATMAP_DIR,
        "--host",
        SERVE_HOST,
        "--port",
        SERVE_PORT,
    ]
    command += SERVE_ARGS
    server.statmap_serve = subprocess.Popen(command, preexec_fn=_die_with_parent)  # no threads in the master yet
    server.log.info("statmap: serving %s on http://%s:%s/metrics", STATMAP_DIR, SERVE_HOST, SERVE_PORT)


def post_fork(server: Any, worker: Any) -> None:
    statmap.create_files()  # --preload: the inherited publishers get this worker's files now


def child_exit(server: Any, worker: Any) -> None:
    _fold(server, f"after worker {worker.pid}")


def on_exit(server: Any) -> None:
    _fold(server, "at exit")
    proc = getattr(server, "statmap_serve", None)
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
