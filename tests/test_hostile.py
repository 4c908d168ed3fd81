"""Hostile neighbours: what another user (or a careless one) can plant, and what a
file can contain, must never make statmap follow, overwrite, evaluate or hang.

Complements tests/test_publisher.py (symlinked, 0777 and foreign-owned
directories; a symlink at the temporary name). Real files, real users (via
``setpriv``), real processes.
"""

from __future__ import annotations

import json
import os
import pwd
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import statmap
import statmap.collect
import statmap.expose
from statmap import _layout as L
from statmap.publisher import file_name

from .conftest import run_as_nobody, run_python

ROOT_ONLY = pytest.mark.skipif(os.getuid() != 0, reason="needs root: plants files owned by another user")


def _fixed_identity(pid: int = 4242) -> L.Identity:
    return L.Identity(pid, 1, bytes(16), bytes(range(16)), 0, "p", "prog")


def _nobody() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("nobody")
    except KeyError:  # pragma: no cover
        pytest.skip("no 'nobody' user to run as")


# -- the directory ----------------------------------------------------------


@pytest.mark.parametrize("mode", [0o770, 0o720, 0o702, 0o1777, 0o1733])
def test_group_or_world_writable_directory_is_refused(tmp_path: Path, mode: int) -> None:
    d = tmp_path / "shared"
    d.mkdir()
    d.chmod(mode)
    with pytest.raises(statmap.DirectoryError, match="writable by group or others"):
        statmap.Publisher("x", str(d))
    assert list(d.iterdir()) == []  # nothing was created in it


@ROOT_ONLY
@pytest.mark.external
def test_default_directory_planted_by_another_user_is_refused(shared_tmp: Path) -> None:
    """Like /dev/shm/statmap-UID: someone else created the victim's default directory first
    (owned by them, or a symlink to a directory of theirs). The victim refuses to use it."""
    runtime = shared_tmp / "runtime"
    runtime.mkdir(mode=0o1777)
    runtime.chmod(0o1777)
    code = textwrap.dedent(
        """
        import statmap, sys
        try:
            statmap.Publisher("victim")
        except statmap.DirectoryError as exc:
            print("REFUSED", exc)
        else:
            print("ACCEPTED")
        """
    )
    env = {"XDG_RUNTIME_DIR": str(runtime)}
    planted = runtime / "statmap"
    planted.mkdir(mode=0o700)  # owned by root, the "attacker" here
    out = run_as_nobody(code, env=env)
    assert out.stdout.startswith("REFUSED") and "owned by uid 0" in out.stdout, out
    planted.rmdir()
    trap = shared_tmp / "trap"
    trap.mkdir(mode=0o700)
    os.chown(trap, _nobody().pw_uid, _nobody().pw_gid)  # even a directory the victim owns...
    planted.symlink_to(trap)  # ...is refused through a planted symlink
    out = run_as_nobody(code, env=env)
    assert out.stdout.startswith("REFUSED") and "symbolic link" in out.stdout, out
    assert list(trap.iterdir()) == []


@ROOT_ONLY
@pytest.mark.external
def test_unprivileged_user_gets_a_private_directory_and_0600_files(shared_tmp: Path) -> None:
    runtime = shared_tmp / "runtime"
    runtime.mkdir()
    os.chown(runtime, _nobody().pw_uid, _nobody().pw_gid)
    code = textwrap.dedent(
        """
        import os, statmap
        os.umask(0)  # the most permissive umask must not leak into statmap's modes
        pub = statmap.Publisher("mine")
        pub.counter("c").inc(3)
        print(pub.path)
        """
    )
    out = run_as_nobody(code, env={"XDG_RUNTIME_DIR": str(runtime)})
    assert out.returncode == 0, out.stderr
    path = Path(out.stdout.strip())
    assert path.parent == runtime / "statmap"
    st = path.parent.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o700, _nobody().pw_uid)
    st = path.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o600, _nobody().pw_uid)
    with statmap.open(path) as reader:
        assert [s.value for s in reader.snapshot().series] == [3]


def test_files_are_0600_whatever_the_umask(statdir: str) -> None:
    out = run_python(
        "import os, sys, statmap; os.umask(0); p = statmap.Publisher('u', sys.argv[1]); print(p.path)", statdir
    )
    assert stat.S_IMODE(os.stat(out.stdout.strip()).st_mode) == 0o600


# -- planted files ------------------------------------------------------------


@ROOT_ONLY
@pytest.mark.parametrize("kind", ["foreign file", "fifo", "hard link"])
@pytest.mark.external
def test_thing_planted_at_the_temporary_name_is_left_alone(statdir: str, tmp_path: Path, kind: str) -> None:
    ident = _fixed_identity()
    temp = Path(statdir) / ("." + file_name("p", ident.pid, ident.instance_id) + ".tmp")
    victim = tmp_path / "victim"
    victim.write_text("precious")
    if kind == "foreign file":
        temp.write_text("theirs")
        os.chown(temp, 12345, 12345)
    elif kind == "fifo":
        os.mkfifo(temp)
    else:
        os.link(victim, temp)
    with pytest.raises(statmap.PublishError, match="cannot create"):
        statmap.Publisher("p", statdir, _identity=ident)
    assert victim.read_text() == "precious"
    if kind == "foreign file":
        assert temp.read_text() == "theirs" and temp.stat().st_uid == 12345


def test_symlink_planted_at_the_final_name_is_not_followed(statdir: str, tmp_path: Path) -> None:
    ident = _fixed_identity()
    final = Path(statdir) / file_name("p", ident.pid, ident.instance_id)
    victim = tmp_path / "victim"
    victim.write_text("precious")
    final.symlink_to(victim)
    with statmap.Publisher("p", statdir, _identity=ident) as pub:
        pub.counter("c").inc()
        assert victim.read_text() == "precious"
        assert not os.path.islink(pub.path)


def test_file_planted_at_the_final_name_is_not_replaced(statdir: str) -> None:
    ident = _fixed_identity()
    final = Path(statdir) / file_name("p", ident.pid, ident.instance_id)
    final.write_bytes(b"someone else's file")
    try:
        with statmap.Publisher("p", statdir, _identity=ident) as pub:
            pub.counter("c").inc()
    except statmap.PublishError:
        pass  # refusing is fine too
    assert final.read_bytes() == b"someone else's file"


def test_symlink_in_the_directory_is_refused_by_readers_and_skipped_by_collect(statdir: str, tmp_path: Path) -> None:
    secret = tmp_path / "secret.statmap"
    with statmap.Publisher("other", str(tmp_path)) as other:  # a valid file, elsewhere
        other.counter("stolen").inc(99)
        os.symlink(other.path, os.path.join(statdir, "planted.1.00000000.statmap"))
        with statmap.Publisher("real", statdir) as pub:
            pub.counter("c").inc(5)
            with pytest.raises(statmap.FormatError, match="symbolic link"):
                statmap.open(os.path.join(statdir, "planted.1.00000000.statmap"))
            coll = statmap.collect.collect(statdir)
            assert coll.value("c") == 5
            assert coll.value("stolen") is None
    assert not secret.exists()


@pytest.mark.parametrize("how", ["open", "collect"])
def test_fifo_in_the_directory_never_hangs_a_reader(statdir: str, how: str) -> None:
    os.mkfifo(os.path.join(statdir, "fifo.1.00000000.statmap"))
    code = textwrap.dedent(
        """
        import os, sys, statmap, statmap.collect
        d = sys.argv[1]
        if sys.argv[2] == "open":
            try:
                statmap.open(os.path.join(d, "fifo.1.00000000.statmap"))
            except statmap.FormatError as exc:
                print("REFUSED", exc.problem)
        else:
            print("COLLECTED", statmap.collect.collect(d).counts())
        """
    )
    try:
        out = run_python(code, statdir, how, timeout=5)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{how} hung on a FIFO")
    assert out.stdout.startswith(("REFUSED", "COLLECTED")), out


# -- a file's contents are data, never code ---------------------------------------

PAYLOADS = {
    "python": "__import__('os').system('touch PWNED')",
    "pickle": "cos\nsystem\n(S'touch PWNED'\ntR.",
    "format": "{0.__class__.__mro__[1].__subclasses__}",
    "exposition": 'x"} 1\nfake_total{a="b"} 999\n# EOF\n',
    "json": '"}], "pwned": true, "x": [{"',
}


def test_reader_never_evaluates_or_unpickles(statdir: str, tmp_path: Path) -> None:
    """Strings that are Python code, a pickle, format strings, exposition or JSON
    fragments come back as the same text, run nothing, and break no output format."""
    pwned = tmp_path / "cwd"
    pwned.mkdir()
    with statmap.Publisher("evil", statdir) as pub:
        texts = pub.text("payload", "help: " + PAYLOADS["python"], labels=("kind",), size=200)
        for kind, payload in PAYLOADS.items():
            texts.labels(kind).set(payload)
        pub.counter("c", PAYLOADS["exposition"], labels=("v",)).labels(PAYLOADS["exposition"]).inc(1)
        pub.info("i", "I", values={"k": PAYLOADS["pickle"]})
        pub.enum("e", "E", states=(PAYLOADS["python"], "b")).state(PAYLOADS["python"])
        path = pub.path
    # in-process reader
    with statmap.open(path) as reader:
        got = {(s.name, s.labels.get("kind", "")): s.value for s in reader.snapshot().series}
    for kind, payload in PAYLOADS.items():
        assert got[("payload", kind)] == payload
    # the command line, the JSON and the exposition formats, from another working directory
    env = dict(os.environ)
    show = subprocess.run(
        [sys.executable, "-m", "statmap", "show", "--json", path], cwd=pwned, env=env,
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    doc = json.loads(show.stdout)
    assert "pwned" not in doc
    metrics = {m["name"]: m for p in doc["processes"] for m in p["metrics"]}
    assert metrics["i"]["value"] == {"k": PAYLOADS["pickle"]}
    coll = statmap.collect.collect(statdir)
    text = statmap.expose.openmetrics(coll)
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    families = {f.name for f in text_string_to_metric_families(text)}
    assert "fake" not in families and not any(n.startswith("fake") for n in families), families
    assert text.splitlines().count("# EOF") == 1 and text.splitlines()[-1] == "# EOF"
    assert list(pwned.iterdir()) == [] and not Path("PWNED").exists()


# -- a hostile process of the same user writes into a live file -------------------


def test_writer_survives_a_corrupted_text_length(statdir: str) -> None:
    """Whatever the file says, a writer stays inside its value areas."""
    code = textwrap.dedent(
        """
        import os, struct, sys, statmap
        pub = statmap.Publisher("w", sys.argv[1])
        t = pub.text("t", "T", size=16)
        t.set("hello")
        rec = statmap.open(pub.path).snapshot().series[0].record
        copy = (rec.value_size - 8) // 2
        fd = os.open(pub.path, os.O_RDWR)  # someone else with the same uid
        for at in (rec.value_offset + 8, rec.value_offset + 8 + copy):
            os.pwrite(fd, struct.pack("<Q", 1 << 40), at)
        t.set("x")
        print(statmap.open(pub.path).snapshot().series[0].value)
        """
    )
    out = run_python(code, statdir, check=False)
    assert out.returncode == 0, f"writer died: {out.returncode} {out.stderr[-500:]}"
    assert out.stdout.strip() == "x"
