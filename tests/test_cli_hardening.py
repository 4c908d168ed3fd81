"""The statmap command against operator mistakes and hostile publishers.

- a missing or unreadable ``--dir`` is an error (exit 2, the directory named),
  never an idle-looking "no statmap files";
- control characters and bidi overrides published in names, labels, help and
  text values never reach the operator's terminal raw, while the exported
  formats (OpenMetrics, JSON) stay exact;
- ``--version``, ``export --output`` (atomic) and ``serve --clean``.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import statmap
from tests.conftest import run_as_nobody, stop_server

pytestmark = pytest.mark.once  # the command-line tools: their values come from the collector, tested under both cells


def statmap_cmd(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    # bytes, decoded here: text mode would turn a raw \r into \n and hide it
    raw = subprocess.run(
        [sys.executable, "-m", "statmap", *args], capture_output=True, timeout=timeout, env=dict(os.environ)
    )
    return subprocess.CompletedProcess(raw.args, raw.returncode, raw.stdout.decode(), raw.stderr.decode())


# every subcommand that takes --dir, with what makes it finish by itself
DIR_COMMANDS = [
    ("show",),
    ("show", "--json"),
    ("show", "--aggregate"),
    ("ls",),
    ("ls", "--json"),
    ("export",),
    ("export", "--format", "json"),
    ("export", "--clean"),
    ("clean",),
    ("clean", "--dry-run"),
    ("top", "--count", "1"),
    ("serve", "--port", "0"),
]


@pytest.mark.parametrize("command", DIR_COMMANDS, ids=" ".join)
def test_missing_directory_is_an_error(tmp_path: Path, command: tuple[str, ...]) -> None:
    missing = str(tmp_path / "no-such-dir")
    result = statmap_cmd(*command, "--dir", missing, timeout=60)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert missing in result.stderr and "does not exist" in result.stderr, result.stderr
    assert "no statmap files" not in result.stdout and "# EOF" not in result.stdout


def test_missing_default_directory_is_an_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "env-dir")
    env = dict(os.environ, STATMAP_DIR=missing)
    result = subprocess.run(
        [sys.executable, "-m", "statmap", "ls"], capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 2 and missing in result.stderr, result.stderr


@pytest.mark.parametrize("command", DIR_COMMANDS, ids=" ".join)
@pytest.mark.external
def test_unreadable_directory_is_an_error(shared_tmp: Path, command: tuple[str, ...]) -> None:
    """A directory the user cannot read (root's 0700 directory, read by nobody)."""
    private = shared_tmp / "private"
    private.mkdir(mode=0o700)
    code = "import sys; from statmap.cli import main; sys.exit(main(sys.argv[1:]))"
    result = run_as_nobody(code, *command, "--dir", str(private))
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert str(private) in result.stderr and "permission denied" in result.stderr.lower(), result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", [c for c in DIR_COMMANDS if c[0] != "serve"], ids=" ".join)
def test_empty_directory_is_not_an_error(statdir: str, command: tuple[str, ...]) -> None:
    result = statmap_cmd(*command, "--dir", statdir)
    assert result.returncode == 0, result.stderr
    if command in (("show",), ("ls",)):
        assert f"no statmap files in {statdir}" in result.stdout


def test_a_file_given_as_directory_is_an_error(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    result = statmap_cmd("ls", "--dir", str(f))
    assert result.returncode == 2 and str(f) in result.stderr and "not a directory" in result.stderr


# -- control characters ----------------------------------------------------------------

ESC = "\x1b"
HOSTILE = f"{ESC}]0;owned{chr(7)}{ESC}[2J{ESC}[31mred\x9b1m\u202etxt.exe\x7f\r\n"
PUBLISH_HOSTILE = """
import sys, time, statmap
bad = sys.argv[2]
pub = statmap.Publisher("evil", sys.argv[1])
pub.counter("hits", "help " + bad, labels=("path",)).labels(bad).inc(3)
pub.text("motd", "message of the day " + bad).set("hello " + bad)
pub.gauge("g", "a gauge", labels=("who",)).labels(bad).set(1)
print("ready", flush=True)
sys.stdin.read()
"""


def _raw_controls(text: str) -> list[str]:
    """The control and bidi characters left in terminal output (newlines between lines are fine)."""
    return re.findall(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]", text)


@pytest.fixture
def hostile(statdir: str):  # type: ignore[no-untyped-def]
    proc = subprocess.Popen(
        [sys.executable, "-c", PUBLISH_HOSTILE, statdir, HOSTILE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    yield statdir
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=60)


@pytest.mark.parametrize(
    "command",
    [("show",), ("show", "--aggregate"), ("top", "--plain", "--count", "2", "--interval", "0.1"), ("ls",)],
    ids=" ".join,
)
def test_terminal_output_escapes_control_characters(hostile: str, command: tuple[str, ...]) -> None:
    result = statmap_cmd(*command, "--dir", hostile)
    assert result.returncode == 0, result.stderr
    assert _raw_controls(result.stdout) == [], result.stdout
    assert _raw_controls(result.stderr) == [], result.stderr
    if command[0] != "ls":
        # what was published is still recognisable, in escaped form
        assert "\\x1b[31mred" in result.stdout and "\\u202etxt.exe" in result.stdout, result.stdout
        assert "\\x9b1m" in result.stdout


def test_exported_formats_stay_exact(hostile: str) -> None:
    from prometheus_client.openmetrics import parser

    om = statmap_cmd("export", "--dir", hostile, "--include-text").stdout
    fams = {f.name: f for f in parser.text_string_to_metric_families(om)}  # type: ignore[no-untyped-call]
    assert fams["hits"].documentation == "help " + HOSTILE
    assert fams["hits"].samples[0].labels == {"path": HOSTILE}
    doc = json.loads(statmap_cmd("export", "--dir", hostile, "--format", "json", "--include-text").stdout)
    by_name = {m["name"]: m for m in doc["metrics"]}
    assert by_name["hits"]["help"] == "help " + HOSTILE
    assert by_name["hits"]["series"][0]["labels"] == {"path": HOSTILE}
    assert by_name["motd"]["series"][0]["value"] == "hello " + HOSTILE
    shown = json.loads(statmap_cmd("show", "--json", "--dir", hostile).stdout)
    metrics = {m["name"]: m for m in shown["processes"][0]["metrics"]}
    assert metrics["hits"]["help"] == "help " + HOSTILE


def test_one_escaping_function() -> None:
    from statmap.render import printable

    assert printable("plain text, unicode é ✓") == "plain text, unicode é ✓"
    assert printable("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert printable("\x9b\x85\x7f\x00\t\n") == "\\x9b\\x85\\x7f\\x00\\t\\n"
    assert printable("\u202eabc\u2066") == "\\u202eabc\\u2066"
    assert printable(printable(HOSTILE)) == printable(HOSTILE)  # escaping twice changes nothing
    assert _raw_controls(printable(HOSTILE)) == []


# -- --version, export --output ------------------------------------------------------------


def test_version() -> None:
    result = statmap_cmd("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"statmap {statmap.__version__}"


@pytest.fixture
def published(statdir: str):  # type: ignore[no-untyped-def]
    pub = statmap.Publisher("web", statdir)
    pub.counter("requests", "Requests").inc(7)
    yield statdir
    pub.close()


def test_export_output_writes_the_file(published: str, tmp_path: Path) -> None:
    out = tmp_path / "textfile" / "web.prom"
    out.parent.mkdir()
    result = statmap_cmd("export", "--dir", published, "--format", "prometheus", "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert "requests_total 7" in out.read_text()
    assert [p.name for p in out.parent.iterdir()] == ["web.prom"]  # no temporary left behind
    umask = os.umask(0o022)
    os.umask(umask)
    assert (out.stat().st_mode & 0o777) == 0o666 & ~umask  # like a shell redirect: node_exporter reads it


def test_export_output_replaces_atomically(published: str, tmp_path: Path) -> None:
    """A reader polling the file while it is rewritten never sees it missing or partial."""
    out = tmp_path / "web.prom"
    out.write_text("# old\n")
    seen: set[str] = set()
    loop = "import sys; from statmap.cli import main\nfor _ in range(40): assert main(sys.argv[1:]) == 0"
    args = ["export", "--dir", published, "--format", "prometheus", "--output", str(out)]
    writer = subprocess.Popen([sys.executable, "-c", loop, *args])
    while writer.poll() is None:
        seen.add(out.read_text())
    assert writer.wait() == 0
    full = out.read_text()
    assert "requests_total 7" in full
    assert seen <= {"# old\n", full}, seen


def test_export_output_bad_directory_keeps_nothing_half_written(published: str, tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "web.prom"
    result = statmap_cmd("export", "--dir", published, "--output", str(missing))
    assert result.returncode == 2 and str(missing.parent) in result.stderr and "Traceback" not in result.stderr


@pytest.mark.external
def test_export_output_unwritable_directory_keeps_the_old_file(published: str, shared_tmp: Path) -> None:
    target = shared_tmp / "web.prom"
    target.write_text("# old\n")
    target.chmod(0o644)
    code = "import sys; from statmap.cli import main; sys.exit(main(sys.argv[1:]))"
    # nobody cannot read root's statmap dir either, so export an empty, readable one
    readable = shared_tmp / "dir"
    readable.mkdir(mode=0o755)
    result = run_as_nobody(code, "export", "--dir", str(readable), "--output", str(target))
    assert result.returncode == 2, result.stderr
    assert str(shared_tmp) in result.stderr and "permission denied" in result.stderr.lower(), result.stderr
    assert target.read_text() == "# old\n"
    assert sorted(p.name for p in shared_tmp.iterdir()) == ["dir", "web.prom"]


# -- serve --clean ---------------------------------------------------------------------------

WORKER = """
import sys, statmap

pub = statmap.Publisher("web", sys.argv[1])
pub.counter("requests", "Requests").inc(int(sys.argv[2]))
print("ready", flush=True)
sys.stdin.read()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return str(resp.read().decode())


def test_serve_clean_folds_dead_workers(statdir: str, tmp_path: Path) -> None:
    workers = []
    for n in (5, 7, 11):
        w = subprocess.Popen(
            [sys.executable, "-c", WORKER, statdir, str(n)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert w.stdout is not None and w.stdout.readline() == "ready\n"
        workers.append(w)
    port = _free_port()
    log = open(tmp_path / "serve.log", "w+")
    server = subprocess.Popen(
        [sys.executable, "-m", "statmap", "serve", "--dir", statdir, "--port", str(port),
         "--clean", "--clean-interval", "0.2", "--max-age", "0"],
        stdout=log, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + 60
        while True:
            try:
                assert "requests_total 23" in _get(url)
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, (tmp_path / "serve.log").read_text()
                time.sleep(0.1)
        for w in workers[:2]:  # two workers die (SIGKILL: no chance to close)
            w.kill()
            w.wait()
        deadline = time.monotonic() + 60
        while len([n for n in os.listdir(statdir) if not n.startswith(".")]) != 2:  # 1 alive + the archive
            assert time.monotonic() < deadline, os.listdir(statdir)
            assert server.poll() is None
            time.sleep(0.1)
        assert any(n.startswith("web.archive") for n in os.listdir(statdir))
        assert "requests_total 23" in _get(url)  # totals kept, now from the archive
        # an error in the cleaner (an unreadable corrupt file) is logged, never kills the server
        (Path(statdir) / "web.9.00000000.statmap").write_bytes(b"garbage!" * 64)
        time.sleep(1.0)
        assert server.poll() is None
        assert "requests_total 23" in _get(url)
        assert "statmap serve: clean" in (tmp_path / "serve.log").read_text()
    finally:
        stop_server(server)
        for w in workers:
            w.kill()
            w.wait()
        log.close()
    assert server.returncode == 0


def test_serve_clean_interval_must_be_positive(statdir: str) -> None:
    result = statmap_cmd("serve", "--dir", statdir, "--port", "0", "--clean", "--clean-interval", "0")
    assert result.returncode == 2 and "--clean-interval" in result.stderr
