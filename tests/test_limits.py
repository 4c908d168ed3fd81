"""Resource limits: full disks, file-size limits, unusable directories, label-set
and descriptor limits. Each gives a clear statmap error at creation or growth,
never a SIGBUS later, and loses nothing already written.

The full disk is a real 64 KiB tmpfs mounted by the test (root only; skipped
with the reason otherwise); the file-size limit is RLIMIT_FSIZE in a child;
other users are real users through ``setpriv``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import statmap

from .conftest import run_as_nobody, run_python


def _values(path: str) -> dict[tuple[str, tuple[str, ...]], object]:
    with statmap.open(path) as reader:
        snap = reader.snapshot()
    return {(s.name, tuple(s.labels.values())): s.value for s in snap.series}


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[str]:
    """A 64 KiB tmpfs, mounted for this test; yields a private statmap directory on it."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    if shutil.which("mount") is None or shutil.which("umount") is None:
        pytest.skip("needs mount and umount for a small tmpfs (Debian package mount)")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(mnt)],
                          capture_output=True, text=True)  # fmt: skip
    if proc.returncode != 0:
        pytest.skip(f"mount refused: {proc.stderr.strip()}")
    try:
        d = mnt / "statmap"
        d.mkdir(mode=0o700)
        yield str(d)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def _no_sigbus(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode != -signal.SIGBUS, "SIGBUS: a store hit a page the disk could not back"
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-2000:]}"


FILL = textwrap.dedent(
    """
    import os, sys, statmap
    d = sys.argv[1]
    pub = statmap.Publisher("full", d)           # 16 KiB reserved at creation
    c = pub.counter("c", "C")
    c.inc(42)
    texts = pub.text("t", "T", labels=("i",), size=1500)
    grown = 0
    try:
        for i in range(1000):
            texts.labels(str(i)).set(f"text {i}")
            grown = i + 1
    except statmap.PublishError as exc:
        print("GROW", exc)
    print("SERIES", grown)
    c.inc()                                    # the file is still usable
    texts.labels("0").set("after")
    for i in range(grown):                     # and every page it has is backed: no SIGBUS
        texts.labels(str(i)).set(f"again {i}")
    try:
        statmap.Publisher("second", d)
    except statmap.PublishError as exc:
        print("CREATE", exc)
    else:
        print("CREATE ok")
    print("PATH", pub.path)
    """
)


@pytest.mark.external
def test_full_disk_at_growth_and_creation(full_disk: str) -> None:
    out = run_python(FILL, full_disk, check=False)
    _no_sigbus(out)
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    assert "cannot grow" in lines["GROW"] and "No space left on device" in lines["GROW"], lines
    assert full_disk in lines["GROW"]  # the message names the file
    assert "No space left on device" in lines["CREATE"] or "cannot reserve" in lines["CREATE"], lines
    grown = int(lines["SERIES"])
    assert grown >= 5
    values = _values(lines["PATH"])
    assert values[("c", ())] == 43
    assert values[("t", ("0",))] == "again 0"
    for i in range(1, grown):
        assert values[("t", (str(i),))] == f"again {i}"
    # The failed creation left no temporary file behind; only our file is there.
    assert sorted(os.listdir(full_disk)) == [os.path.basename(lines["PATH"])]


@pytest.mark.external
def test_fork_on_a_full_disk_keeps_the_parent_file(full_disk: str) -> None:
    """A child that cannot create its own file must not write into its parent's."""
    code = textwrap.dedent(
        """
        import os, sys, statmap
        d = sys.argv[1]
        pub = statmap.Publisher("parent", d, capacity=4096)
        c = pub.counter("c", "C")
        c.inc(10)
        # fill the rest of the disk with a file of our own
        fd = os.open(os.path.join(d, "..", "ballast"), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while True:
                os.write(fd, b"x" * 4096)
        except OSError:
            os.close(fd)
        pid = os.fork()
        if pid == 0:
            c.inc(1000)                 # must not reach the parent's file
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        print(status, pub.path)
        """
    )
    out = run_python(code, full_disk, check=False)
    _no_sigbus(out)
    status, path = out.stdout.split()
    assert int(status) == 0
    assert "cannot create its file" in out.stderr and "not publishing" in out.stderr, out.stderr
    assert _values(path)[("c", ())] == 10
    assert [n for n in os.listdir(full_disk) if not n.startswith(".")] == [os.path.basename(path)]


def test_file_size_limit_at_creation(statdir: str) -> None:
    code = textwrap.dedent(
        """
        import resource, sys, statmap
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))  # below the 16 KiB reserved
        try:
            statmap.Publisher("big", sys.argv[1])
        except statmap.PublishError as exc:
            print("ERROR", exc)
        """
    )
    out = run_python(code, statdir, check=False)
    assert out.returncode == 0, out  # no SIGXFSZ death
    assert out.stdout.startswith("ERROR") and "cannot reserve 16384 bytes" in out.stdout
    assert os.listdir(statdir) == []  # no temporary file left


def test_file_size_limit_at_growth_never_sigbus(statdir: str) -> None:
    """Growth refused by RLIMIT_FSIZE, then every existing series is written again."""
    code = FILL.replace('pub = statmap.Publisher("full", d)', 'import resource\n'
                        'pub = statmap.Publisher("full", d)\n'
                        'resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))')  # fmt: skip
    out = run_python(code, statdir, check=False)
    _no_sigbus(out)
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    assert "cannot grow" in lines["GROW"] and "File too large" in lines["GROW"], lines
    assert _values(lines["PATH"])[("c", ())] == 43


# -- directories ---------------------------------------------------------------


def test_missing_directory_is_created_and_unreachable_one_is_an_error(tmp_path: Path) -> None:
    with statmap.Publisher("x", str(tmp_path / "a" / "b" / "statmap")) as pub:
        assert os.path.exists(pub.path)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(statmap.DirectoryError, match="statmap: Not a directory"):
        statmap.Publisher("x", str(blocker / "statmap"))


def test_directory_removed_under_a_live_publisher(tmp_path: Path) -> None:
    d = tmp_path / "gone"
    pub = statmap.Publisher("x", str(d))
    c = pub.counter("c", "C")
    c.inc(3)
    shutil.rmtree(d)
    c.inc()  # the open file still takes writes...
    pub.counter("later", "L").inc()  # ...and new series
    assert c.get() == 4
    pub.close()


TRY_CREATE = textwrap.dedent(
    """
    import sys, statmap
    try:
        statmap.Publisher("x", sys.argv[1])
    except statmap.DirectoryError as exc:
        print("REFUSED", exc)
    else:
        print("ACCEPTED")
    """
)


@pytest.mark.external
def test_unwritable_directory_as_an_unprivileged_user(shared_tmp: Path) -> None:
    import pwd

    nobody = pwd.getpwnam("nobody")
    d = shared_tmp / "ro"
    d.mkdir(mode=0o500)
    os.chown(d, nobody.pw_uid, nobody.pw_gid)
    out = run_as_nobody(TRY_CREATE, str(d))
    assert out.stdout.startswith("REFUSED") and "not writable" in out.stdout, out
    # a missing directory under a parent the user cannot write to
    out = run_as_nobody(TRY_CREATE, str(shared_tmp / "sub" / "statmap"))
    assert out.stdout.startswith("REFUSED") and "permission denied" in out.stdout, out


@pytest.mark.external
def test_foreign_owned_directory_as_an_unprivileged_user(shared_tmp: Path) -> None:
    d = shared_tmp / "roots"
    d.mkdir(mode=0o755)  # owned by root, readable by all
    out = run_as_nobody(TRY_CREATE, str(d))
    assert out.stdout.startswith("REFUSED") and "owned by uid 0" in out.stdout, out


# -- counts ----------------------------------------------------------------------


def test_label_set_limit(statdir: str) -> None:
    with statmap.Publisher("labels", statdir) as pub:
        fam = pub.counter("req", "R", labels=("path",), max_series=3)
        for i in range(3):
            fam.labels(f"/p{i}").inc(i + 1)
        size_before = os.path.getsize(pub.path)
        with statmap.open(pub.path) as reader:
            records_before = len(reader.snapshot().series)
        with pytest.raises(statmap.LabelLimitError, match=r"req: already 3 label sets \(max_series\)") as info:
            fam.labels("/p3")
        assert "/p3" in str(info.value)
        assert isinstance(info.value, ValueError)  # catchable as the ValueError it is
        fam.labels("/p0").inc()  # existing series still work
        pub.counter("other", "O").inc(9)  # other metrics still grow
        values = _values(pub.path)
        assert values[("req", ("/p0",))] == 2 and values[("req", ("/p2",))] == 3
        assert ("req", ("/p3",)) not in values and values[("other", ())] == 9
        with statmap.open(pub.path) as reader:
            assert len(reader.snapshot().series) == records_before + 1
        assert os.path.getsize(pub.path) == size_before


def test_out_of_file_descriptors_is_a_clear_error(statdir: str) -> None:
    code = textwrap.dedent(
        """
        import resource, sys, statmap
        pubs = []
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        try:
            for i in range(100):
                pubs.append(statmap.Publisher(f"p{i}", sys.argv[1]))
        except statmap.StatmapError as exc:
            print("ERROR", type(exc).__name__, exc)
        pubs[0].counter("c").inc(5)
        print("PATH", pubs[0].path, len(pubs))
        """
    )
    out = run_python(code, statdir, check=False)
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    assert "Too many open files" in lines["ERROR"], lines
    path, made = lines["PATH"].split()
    assert 1 <= int(made) < 64
    assert _values(path)[("c", ())] == 5
    hidden = [n for n in os.listdir(statdir) if n.startswith(".")]
    assert hidden == [], f"temporary files left behind: {hidden}"


# -- the reader's limits per file (docs/format.md section 11) -------------------


def _refused_beyond_reader_limit(pub: statmap.Publisher, make: Callable[[int], Any], match: str) -> None:
    """``make(i)`` adds series i (returned) until the writer refuses one; then nothing written is lost."""
    first = make(0)
    first.inc()
    i = 1
    with pytest.raises(statmap.PublishError, match=match) as info:
        while True:
            make(i).inc()
            i += 1
    assert pub.path in str(info.value)
    end = os.path.getsize(pub.path)
    with statmap.open(pub.path) as reader:  # the reader takes everything the writer published
        series = reader.snapshot().series
    assert len(series) == i and series[0].value == 1 and series[-1].value == 1
    with pytest.raises(statmap.PublishError, match=match):
        make(i)  # the same series again: refused for the same reason (a refused metric's name is not kept)
    with pytest.raises(statmap.PublishError, match=match):
        make(i + 1)  # refused again, and still nothing appended
    first.inc()  # existing series still work
    assert os.path.getsize(pub.path) == end
    assert _values(pub.path)[(series[0].name, tuple(series[0].labels.values()))] == 2


def test_writer_refuses_records_beyond_the_reader_limit(statdir: str) -> None:
    """A writer never publishes what a reader rejects: at most MAX_RECORDS records per file."""
    from statmap import _layout as L

    digits = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_"

    def name(i: int) -> str:  # 4 characters: a 56-byte record, so the record limit comes first
        return "a" + digits[i // 63**2] + digits[i // 63 % 63] + digits[i % 63]

    with statmap.Publisher("many", statdir) as pub:
        _refused_beyond_reader_limit(
            pub, lambda i: pub.counter(name(i)), rf"the file holds {L.MAX_RECORDS} records.*MAX_RECORDS"
        )
        with statmap.open(pub.path) as reader:
            assert len(reader.snapshot().series) == L.MAX_RECORDS


def test_writer_refuses_metadata_beyond_the_reader_limit(statdir: str) -> None:
    """... and at most MAX_METADATA bytes of record metadata per file (4 KiB help strings here)."""
    from statmap import _layout as L

    with statmap.Publisher("wordy", statdir) as pub:
        fam = pub.counter("c", "h" * 4096, labels=("k",), max_series=L.MAX_RECORDS)
        _refused_beyond_reader_limit(
            pub, lambda i: fam.labels(str(i)), rf"reader limit of {L.MAX_METADATA} bytes.*MAX_METADATA"
        )
