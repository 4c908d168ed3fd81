"""The repeat poll of many files in one call (steady.py): C and pure-Python twins agree, and agree with
the reader's full poll: a file reported unchanged is one whose full poll finds it alive with the same header.

Real files: the writers are real processes (a lock held by a live process, released by one killed).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from typing import Any

import pytest

import statmap
from statmap import steady
from statmap.collect import Collector
from statmap.expose import Exposer
from statmap.reader import ALIVE, Reader


def _c_poll() -> Any:
    try:
        from statmap import _cells  # the C module itself, whichever backend this run uses
    except ImportError:
        pytest.skip("needs the C cells built (python3 setup.py build_ext --inplace)")
    return _cells._poll_steady  # type: ignore[attr-defined]  # private: not in _cells.pyi


def _worker(statdir: str) -> subprocess.Popen[str]:
    """A live writer: adds a series, closes or stays, as told on its stdin, line by line."""
    code = textwrap.dedent(
        """
        import sys, statmap
        pub = statmap.Publisher("web", sys.argv[1])
        fam = pub.counter("n", "N", labels=("k",))
        for i in range(3):
            fam.labels(str(i)).inc(i)
        print("ready", flush=True)
        for line in sys.stdin:
            if line.startswith("add"):
                fam.labels(line.split()[1]).inc()
            elif line.startswith("inc"):
                fam.labels("0").inc()
            elif line.startswith("close"):
                pub.close()
            print("done", flush=True)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, statdir], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return proc


def _tell(proc: subprocess.Popen[str], line: str) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()
    assert proc.stdout.readline() == "done\n"


def _settled(path: str) -> Reader:
    reader = Reader(path)
    reader.poll()
    reader.poll()  # the repeat path: steady from here on
    return reader


def _both(items: list[Any]) -> bytes:
    c_out = _c_poll()(items, steady.LAYOUT)
    py_out = steady.poll_steady(items, steady.LAYOUT)
    assert c_out == py_out
    return bytes(c_out)


def _check_against_full_poll(reader: Reader, item: Any) -> None:
    """What the fast answer says must be what the full poll finds."""
    code = _both([item])[0]
    header = reader.header
    status, after, size = reader.poll()
    if code == 0:
        assert (status, size) == (ALIVE, item[2]) and after is header
    else:
        assert (status, after and after.end, after and after.capacity, size) != (ALIVE, item[3], item[4], item[2]) or (
            after is not None and after.state != header.state  # type: ignore[union-attr]
        )


def test_unchanged_alive_file_is_steady_and_changes_are_not(statdir: str) -> None:
    proc = _worker(statdir)
    (path,) = [os.path.join(statdir, n) for n in os.listdir(statdir)]
    reader = _settled(path)
    try:
        item = reader.steady()
        assert item is not None
        assert _both([item, None, item]) == b"\x00\x01\x00"
        _check_against_full_poll(reader, item)
        _tell(proc, "inc")  # a value moved: the header did not
        assert _both([item]) == b"\x00"
        _tell(proc, "add x")  # a new record: the end moved
        assert _both([item]) == b"\x01"
        _check_against_full_poll(reader, item)
        item = reader.steady()
        assert item is not None and _both([item]) == b"\x00"
        for i in range(400):  # enough records to grow the file: size and capacity move
            _tell(proc, f"add g{i}")
        assert _both([item]) == b"\x01"
        reader.poll()
        item = reader.steady()
        assert item is not None and _both([item]) == b"\x00"
        _tell(proc, "close")  # closed: the full poll says so
        assert _both([item]) == b"\x01"
        status, _header, _size = reader.poll()
        assert status == statmap.reader.CLOSED and reader.steady() is None
    finally:
        reader.close()
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)


def test_killed_writer_is_left_to_the_full_poll(statdir: str) -> None:
    proc = _worker(statdir)
    (path,) = [os.path.join(statdir, n) for n in os.listdir(statdir)]
    reader = _settled(path)
    try:
        item = reader.steady()
        assert item is not None and _both([item]) == b"\x00"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert _both([item]) == b"\x01"  # its lock went with it
        status, _h, _s = reader.poll()
        assert status == statmap.reader.DEAD and reader.steady() is None
    finally:
        reader.close()


def test_odd_items_take_the_full_poll(statdir: str) -> None:
    proc = _worker(statdir)
    (path,) = [os.path.join(statdir, n) for n in os.listdir(statdir)]
    reader = _settled(path)
    try:
        m, fd, size, end, capacity = item = reader.steady()  # type: ignore[misc]
        odd: list[Any] = [
            None,
            (),
            (m, fd),
            (m, fd, size + 8, end, capacity),  # not the size the file has
            (m, fd, size, end + 8, capacity),
            (m, fd, size, end, capacity - 8),
            (m, -1, size, end, capacity),  # no descriptor
            (m, 2**40, size, end, capacity),
            (m, fd, size, -1, capacity),  # not a u64
            (m, "x", size, end, capacity),
            (b"", fd, size, end, capacity),  # not the mapping
            (bytes(m[:size]).replace(b"STATMAP1", b"STATMAP2"), fd, size, end, capacity),
            (object(), fd, size, end, capacity),
        ]
        assert _both(odd) == b"\x01" * len(odd)
        assert _both([*odd, item]) == b"\x01" * len(odd) + b"\x00"
        with pytest.raises(TypeError):
            _c_poll()([item], ())
        r2 = Reader(path)  # polled once only: the first poll took the full checks, no repeat yet
        r2.poll()
        assert r2.steady() is None
        r2.close()
        assert reader.steady() is not None
        reader.close()
        assert reader.steady() is None
    finally:
        reader.close()
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)


def test_collections_with_the_steady_poll_equal_fresh_ones(statdir: str) -> None:
    """A long-lived collector (steady polls) writes what a fresh one writes, as files change, close and die."""
    procs = [_worker(statdir) for _ in range(3)]
    kept, exposer = Collector(statdir), Exposer()

    def same() -> None:
        with Collector(statdir) as fresh:
            a, b = kept.collect(), fresh.collect()
            assert Exposer().openmetrics(b) == exposer.openmetrics(a)
            assert [f.to_json() for f in a.files] == [f.to_json() for f in b.files]

    try:
        same()
        same()
        _tell(procs[0], "inc")
        same()
        _tell(procs[1], "add new")
        same()
        _tell(procs[2], "close")
        same()
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(timeout=30)
        same()
        same()
    finally:
        kept.close()
        for p in procs:
            if p.poll() is None:
                assert p.stdin is not None
                p.stdin.close()
                p.wait(timeout=30)


def test_a_narrowed_publisher_filter_applies_to_steady_files(statdir: str) -> None:
    """Files the last scrape took whole are still filtered by the collector's publishers."""
    proc = _worker(statdir)
    try:
        kept = Collector(statdir)
        kept.collect()
        assert [f.name for f in kept.collect().files] == ["web"]
        kept.publishers = frozenset({"other"})
        assert kept.collect().families == [] and kept.collect().files == []
        kept.close()
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)
