"""Publisher life cycle: files, permissions, directories, growth, fork, threads, liveness."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import statmap
from statmap import _layout as L
from statmap.directory import default_directory

from .conftest import run_python


def snapshot(path: str) -> statmap.Snapshot:
    with statmap.open(path) as reader:
        return reader.snapshot()


def test_file_name_mode_and_identity(statdir: str) -> None:
    with statmap.Publisher("web", statdir) as pub:
        name = os.path.basename(pub.path)
        assert name.startswith(f"web.{os.getpid()}.") and name.endswith(".statmap")
        assert stat.S_IMODE(os.stat(pub.path).st_mode) == 0o600
        assert os.listdir(statdir) == [name]  # the temporary name is gone
        snap = snapshot(pub.path)
        ident = snap.identity
        assert ident is not None
        assert (ident.pid, ident.publisher) == (os.getpid(), "web")
        assert ident.start_time > 0 and ident.boot_id != bytes(16)
        assert abs(ident.created_ns / 1e9 - time.time()) < 60
        assert snap.status == "alive"
        assert snap.version == (L.MAJOR, L.MINOR)


def test_directory_is_created_private(tmp_path: Path) -> None:
    d = tmp_path / "new" / "statmap"
    with statmap.Publisher("x", str(d)):
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700


def test_directory_refusals(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(statmap.DirectoryError, match="symbolic link"):
        statmap.Publisher("x", str(link))
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    with pytest.raises(statmap.DirectoryError, match="writable by group or others"):
        statmap.Publisher("x", str(open_dir))
    afile = tmp_path / "file"
    afile.write_text("")
    with pytest.raises(statmap.DirectoryError, match="not a directory"):
        statmap.Publisher("x", str(afile))


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to create a directory owned by someone else")
@pytest.mark.external
def test_foreign_owned_directory_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "foreign"
    d.mkdir(mode=0o700)
    os.chown(d, 12345, 12345)
    with pytest.raises(statmap.DirectoryError, match="owned by uid 12345"):
        statmap.Publisher("x", str(d))


def test_unwritable_directory(tmp_path: Path) -> None:
    d = tmp_path / "ro"
    d.mkdir(mode=0o500)
    if os.getuid() == 0:
        pytest.skip("root can write anywhere")  # pragma: no cover
    with pytest.raises(statmap.DirectoryError, match="not writable"):
        statmap.Publisher("x", str(d))


def test_default_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STATMAP_DIR", str(tmp_path / "env"))
    assert default_directory() == str(tmp_path / "env")
    monkeypatch.delenv("STATMAP_DIR")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert default_directory() == str(tmp_path / "statmap")
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert default_directory().endswith(f"statmap-{os.getuid()}")


def test_growth_keeps_old_series_writing(statdir: str) -> None:
    with statmap.Publisher("grow", statdir, capacity=4096) as pub:
        first = pub.counter("first", "First")
        texts = pub.text("big", "Big", labels=("i",), size=2000)
        for i in range(20):
            texts.labels(str(i)).set(f"text {i}")
            first.inc()  # through the original mapping after every growth
        assert os.path.getsize(pub.path) >= 20 * 4000
        snap = snapshot(pub.path)
        got = {(s.name, tuple(s.labels.values())): s.value for s in snap.series}
        assert got[("first", ())] == 20
        assert got[("big", ("7",))] == "text 7"
        assert len(snap.series) == 21


def test_reader_follows_growth(statdir: str) -> None:
    with statmap.Publisher("grow", statdir, capacity=4096) as pub:
        c = pub.counter("c", "C", labels=("i",))
        with statmap.open(pub.path) as reader:
            assert len(reader.snapshot().series) == 0
            for i in range(200):
                c.labels(str(i)).inc(i)
                if i % 37 == 0:
                    assert len(reader.snapshot().series) == i + 1
            final = reader.snapshot()
        assert sum(s.value for s in final.series) == sum(range(200))


def test_liveness_alive_dead_closed(statdir: str) -> None:
    code = """
import statmap, sys, time
pub = statmap.Publisher("worker", sys.argv[1])
pub.counter("c", "C").inc(7)
if sys.argv[2] == "close":
    pub.close()
print(pub.path, flush=True)
if sys.argv[2] == "wait":
    time.sleep(60)
else:
    import os
    os._exit(0)  # no atexit: a crash as far as the file is concerned
"""
    closed = run_python(code, statdir, "close").stdout.strip()
    dead = run_python(code, statdir, "die").stdout.strip()
    proc = subprocess.Popen([sys.executable, "-c", code, statdir, "wait"], stdout=subprocess.PIPE, text=True)
    try:
        alive = proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert snapshot(closed).status == "closed"
        assert snapshot(dead).status == "dead"
        assert snapshot(alive).status == "alive"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert snapshot(alive).status == "dead"
        assert snapshot(alive).series[0].value == 7  # post-mortem read
    finally:
        proc.kill()


def test_normal_exit_closes_the_file(statdir: str) -> None:
    out = run_python(
        "import statmap, sys; p = statmap.Publisher('x', sys.argv[1]); p.counter('c').inc(); print(p.path)", statdir
    )
    assert snapshot(out.stdout.strip()).status == "closed"


def test_fork_child_gets_its_own_file(statdir: str) -> None:
    code = """
import os, sys, statmap
class S(statmap.Stats):
    c = statmap.Counter("C")
    h = statmap.Histogram("H", buckets=(1,))
    t = statmap.Text("T", size=16)
    l = statmap.Counter("L", labels=("k",))
s = S("forky", directory=sys.argv[1])
s.c.inc(10); s.h.observe(0.5); s.t.set("parent"); s.l.labels("a").inc()
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    s.c.inc(1); s.h.observe(5); s.t.set("child"); s.l.labels("a").inc(2); s.l.labels("b").inc(3)
    os.write(w, (s.path + "\\n").encode())
    os._exit(0)
os.waitpid(pid, 0)
child_path = os.read(r, 4096).decode().strip()
s.c.inc(5)
print(s.path)
print(child_path)
"""
    parent_path, child_path = run_python(code, statdir).stdout.split()
    assert parent_path != child_path
    parent = {(s.name, tuple(s.labels.values())): s.value for s in snapshot(parent_path).series}
    child = {(s.name, tuple(s.labels.values())): s.value for s in snapshot(child_path).series}
    assert parent[("c", ())] == 15 and parent[("t", ())] == "parent" and parent[("h", ())].count == 1
    assert parent[("l", ("a",))] == 1 and ("l", ("b",)) not in parent
    # the child starts from zero: its file holds only its own updates
    assert child[("c", ())] == 1 and child[("t", ())] == "child"
    assert child[("h", ())].count == 1 and child[("h", ())].sum == 5
    assert child[("l", ("a",))] == 2 and child[("l", ("b",))] == 3
    child_ident = snapshot(child_path).identity
    assert child_ident is not None and child_ident.publisher == "forky"
    assert os.path.basename(child_path).startswith(f"forky.{child_ident.pid}.")


def test_threads_and_counter_increments(statdir: str) -> None:
    """C cells: exact. Pure cells: documented to possibly lose concurrent increments, never to invent any."""
    with statmap.Publisher("threads", statdir) as pub:
        c = pub.counter("c", "C")
        h = pub.histogram("h", "H", buckets=(1,))

        def work() -> None:
            for _ in range(50_000):
                c.inc()
                h.observe(0.5)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if statmap.backend == "c":
            assert c.get() == 400_000
        else:
            assert 0 < c.get() <= 400_000
        assert h.get()[0] == 400_000


def test_pure_cells_lose_no_histogram_observations_across_threads(statdir: str) -> None:
    with statmap.Publisher("threads", statdir) as pub:
        h = pub.histogram("h", "H", buckets=(1,))
        t = pub.text("t", "T", size=8)

        def work(i: int) -> None:
            for _ in range(5_000):
                h.observe(0.5)
                t.set(str(i) * 8)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        count, total, buckets = h.get()
        assert count == 40_000 and total == 20_000 and buckets == (40_000, 0)
        text = t.get()
        assert len(text) == 8 and len(set(text)) == 1


def test_full_disk_is_a_clear_error_and_keeps_values(statdir: str) -> None:
    """RLIMIT_FSIZE stands in for a full disk: growing fails cleanly, nothing is lost."""
    code = """
import resource, sys, statmap
pub = statmap.Publisher("full", sys.argv[1], capacity=4096)
c = pub.counter("c", "C")
c.inc(42)
resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))
texts = pub.text("t", "T", labels=("i",), size=3000)
try:
    for i in range(10):
        texts.labels(str(i)).set("x")
except statmap.PublishError as exc:
    print("ERROR", exc)
c.inc()
print(pub.path)
"""
    out = run_python(code, statdir).stdout.splitlines()
    assert out[0].startswith("ERROR") and "cannot grow" in out[0]
    snap = snapshot(out[-1])
    values = {(s.name, tuple(s.labels.values())): s.value for s in snap.series}
    assert values[("c", ())] == 43
    assert values[("t", ("0",))] == "x"


def test_planted_symlink_is_not_followed(statdir: str, tmp_path: Path) -> None:
    """A symlink planted at the temporary name makes creation fail, never writes through it."""
    victim = tmp_path / "victim"
    victim.write_text("precious")
    fixed = L.Identity(os.getpid(), 1, bytes(16), bytes(range(16)), 0, "p", "prog")
    from statmap.publisher import file_name

    temp = Path(statdir) / ("." + file_name("p", fixed.pid, fixed.instance_id) + ".tmp")
    temp.symlink_to(victim)
    with pytest.raises(statmap.PublishError, match="cannot create"):
        statmap.Publisher("p", statdir, _identity=fixed)
    assert victim.read_text() == "precious"


def test_fork_repoints_metrics_of_an_unreferenced_publisher(statdir: str) -> None:
    """Only the metric is kept, not its publisher: fork must still give the child its own file."""
    code = """
import gc, os, sys, statmap
c = statmap.Publisher("orphan", sys.argv[1]).counter("c", "C")
gc.collect()
c.inc(10)
pid = os.fork()
if pid == 0:
    c.inc(1)
    os._exit(0)
os.waitpid(pid, 0)
"""
    run_python(code, statdir)
    totals = sorted(snapshot(str(p)).series[0].value for p in Path(statdir).glob("*.statmap"))
    assert totals == [1, 10]


def test_reader_never_reports_corruption_while_the_writer_grows(statdir: str) -> None:
    code = """
import sys, statmap
pub = statmap.Publisher("growing", sys.argv[1], capacity=4096)
c = pub.counter("c", "C", labels=("i",), max_series=100000)
print(pub.path, flush=True)
for i in range(6000):
    c.labels(str(i)).inc(i)
sys.stdin.read()
"""
    proc = subprocess.Popen(
        [sys.executable, "-c", code, statdir], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        path = proc.stdout.readline().strip()  # type: ignore[union-attr]
        snapshots = 0
        with statmap.open(path) as reader:
            while True:
                snap = reader.snapshot()  # must never raise FormatError
                snapshots += 1
                n = len(snap.series)
                # a series is published before its first increment: 0 or its final value i
                assert all(s.value in (0, int(s.labels["i"])) for s in snap.series[-50:])
                if n == 6000:
                    break
        assert snapshots > 1
    finally:
        proc.kill()
        proc.wait()
