"""fork and signals: fork while other threads update metrics, and signal handlers
that update the same metrics as the code they interrupt.

Each scenario runs in its own interpreter with a timeout, so a deadlock fails
the test instead of hanging the suite (prometheus_client deadlocks when a
signal handler updates a metric whose lock the interrupted code holds).
"""

from __future__ import annotations

import json
import os
import textwrap

import pytest

import statmap

from .conftest import SCALE, run_python


def _values(path: str) -> dict[tuple[str, tuple[str, ...]], object]:
    with statmap.open(path) as reader:
        return {(s.name, tuple(s.labels.values())): s.value for s in reader.snapshot().series}


FORK_UNDER_THREADS = textwrap.dedent(
    """
    import json, os, sys, threading, time, statmap
    d, forks, per_thread = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    sys.setswitchinterval(1e-5)  # switch threads as often as possible
    pub = statmap.Publisher("forky", d)
    c = pub.counter("c", "C")
    h = pub.histogram("h", "H", buckets=(1.0,))
    t = pub.text("t", "T", size=64)
    fam = pub.counter("per", "P", labels=("thread", "i"))
    go = threading.Barrier(5)
    stop = threading.Event()
    done = [0] * 4

    def work(k):
        go.wait()
        i = 0
        while i < per_thread or not stop.is_set():  # at least per_thread, and until the forks end
            c.inc()
            h.observe(0.5)
            t.set(f"thread {k} round {i} " + "x" * (i % 30))
            fam.labels(str(k), str(i % 40)).inc()  # new series while the main thread forks
            i += 1
        done[k] = i

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    go.wait()
    children, hung = [], 0
    for j in range(forks):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            c.inc(7)
            h.observe(2.0)
            t.set("child")
            fam.labels("child", "x").inc()
            os.write(w, pub.path.encode())
            os._exit(0)
        os.close(w)
        deadline = time.monotonic() + 20
        while True:
            reaped, _ = os.waitpid(pid, os.WNOHANG)
            if reaped:
                break
            if time.monotonic() > deadline:  # deadlocked child
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                hung += 1
                break
            time.sleep(0.001)
        children.append(os.read(r, 4096).decode())
        os.close(r)
    running = sum(th.is_alive() for th in threads)
    stop.set()
    for th in threads:
        th.join()
    print(json.dumps({"parent": pub.path, "children": children, "hung": hung, "total": sum(done),
                      "running": running}))
    pub.close()
    """
)


def test_fork_while_threads_update(statdir: str, capsys: pytest.CaptureFixture[str]) -> None:
    forks, per_thread = int(30 * SCALE), 1000
    out = run_python(FORK_UNDER_THREADS, statdir, str(forks), str(per_thread), timeout=300 * max(1.0, SCALE))
    got = json.loads(out.stdout)
    assert got["hung"] == 0, f"{got['hung']} children deadlocked after fork"
    assert got["running"] == 4, "the threads had stopped before the last fork"
    with capsys.disabled():
        print(
            f"\n[statmap {statmap.backend}] fork: {forks} forks under 4 updating threads "
            f"({got['total']} thread rounds), deadlocked children: {got['hung']}"
        )
    total = got["total"]
    # parent: unaffected by its children
    parent = _values(got["parent"])
    hist = parent[("h", ())]
    assert hist.count == total and hist.sum == 0.5 * total  # type: ignore[attr-defined]
    per = sum(v for (name, labels), v in parent.items() if name == "per")  # type: ignore[misc]
    if statmap.backend == "c":
        assert parent[("c", ())] == total and per == total
    else:  # pure cells may lose concurrent increments of one series (README), never invent any
        assert 0 < parent[("c", ())] <= total and 0 < per <= total  # type: ignore[operator]
    assert ("per", ("child", "x")) not in parent
    assert str(parent[("t", ())]).startswith("thread ")
    # children: each its own file, holding only its own updates
    assert len(set(got["children"])) == forks and got["parent"] not in got["children"]
    for path in got["children"]:
        child = _values(path)
        assert child[("c", ())] == 7, child
        assert child[("h", ())].count == 1 and child[("h", ())].sum == 2.0  # type: ignore[attr-defined]
        assert child[("t", ())] == "child"
        assert child[("per", ("child", "x"))] == 1
        assert all(v == 0 for (name, labels), v in child.items() if name == "per" and labels != ("child", "x"))


SIGNALS_SAME_METRIC = textwrap.dedent(
    """
    import json, signal, sys, statmap
    d, rounds = sys.argv[1], int(sys.argv[2])
    pub = statmap.Publisher("sig", d)
    c = pub.counter("c", "C")
    g = pub.gauge("g", "G")
    h = pub.histogram("h", "H", buckets=(1.0, 2.0))
    s = pub.summary("s", "S")
    t = pub.text("t", "T", size=32)
    fam = pub.counter("fam", "F", labels=("who",))
    main_fam, handler_fam = fam.labels("main"), fam.labels("handler")
    fired = 0

    def handler(signum, frame):
        global fired
        fired += 1
        c.inc()
        g.inc()
        h.observe(2.0)
        s.observe(2.0)
        t.set("from the handler " + "h" * (fired % 10))
        handler_fam.inc()

    signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, 0.0001, 0.0001)
    for i in range(rounds):
        c.inc()
        g.inc()
        h.observe(0.5)
        s.observe(0.5)
        t.set("from the main code " + "m" * (i % 10))
        main_fam.inc()
    signal.setitimer(signal.ITIMER_REAL, 0, 0)
    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    print(json.dumps({"path": pub.path, "fired": fired, "rounds": rounds}))
    pub.close()
    """
)


def test_signal_handler_updates_the_same_metrics(statdir: str, capsys: pytest.CaptureFixture[str]) -> None:
    rounds = int((200_000 if statmap.backend == "c" else 60_000) * SCALE)
    out = run_python(SIGNALS_SAME_METRIC, statdir, str(rounds), timeout=300 * max(1.0, SCALE))
    got = json.loads(out.stdout)
    fired, rounds = got["fired"], got["rounds"]
    assert fired > 100, "the handler hardly ran: the test proves nothing"
    v = _values(got["path"])
    hist, summ = v[("h", ())], v[("s", ())]
    # multi-word values: nothing lost, with both backends (README)
    assert hist.count == rounds + fired  # type: ignore[attr-defined]
    assert hist.buckets[0][1] == rounds and hist.buckets[1][1] == rounds + fired  # type: ignore[attr-defined]
    assert hist.sum == 0.5 * rounds + 2.0 * fired  # type: ignore[attr-defined]
    assert summ.count == rounds + fired and summ.sum == 0.5 * rounds + 2.0 * fired  # type: ignore[attr-defined]
    assert str(v[("t", ())]).startswith(("from the main code", "from the handler"))
    assert (v[("fam", ("main",))], v[("fam", ("handler",))]) == (rounds, fired)
    if statmap.backend == "c":  # single words: atomic, nothing lost
        assert v[("c", ())] == rounds + fired and v[("g", ())] == rounds + fired
    else:  # pure cells: a read-modify-write interrupted by the handler can lose its update
        assert rounds <= v[("c", ())] <= rounds + fired  # type: ignore[operator]
    with capsys.disabled():
        lost = rounds + fired - v[("c", ())]  # type: ignore[operator]
        print(
            f"\n[statmap {statmap.backend}] signals: {rounds} rounds, handler ran {fired} times, "
            f"counter increments lost: {lost}, histogram/summary/text/labelled updates lost: 0"
        )


SIGNALS_NEW_SERIES = textwrap.dedent(
    """
    import itertools, json, signal, sys, statmap
    d, rounds = sys.argv[1], int(sys.argv[2])
    pub = statmap.Publisher("sig", d, capacity=4096)
    main_fam = pub.counter("main", "M", labels=("i",), max_series=100_000)
    sig_fam = pub.counter("sig", "S", labels=("i",), max_series=100_000)
    numbers = itertools.count(1)  # next() is atomic: handlers can nest inside handlers
    seen = []

    def handler(signum, frame):
        n = next(numbers)
        if n <= 2000:
            sig_fam.labels(str(n)).inc(n)  # a new series, from a signal handler
            seen.append(n)

    signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, 0.0002, 0.0002)
    for i in range(1, rounds + 1):
        main_fam.labels(str(i)).inc(i)  # new series in the main code
    signal.setitimer(signal.ITIMER_REAL, 0, 0)
    print(json.dumps({"path": pub.path, "fired": len(seen), "rounds": rounds}))
    """
)


def test_signal_handler_creating_series_while_main_code_does(statdir: str) -> None:
    out = run_python(SIGNALS_NEW_SERIES, statdir, "5000", timeout=300)
    got = json.loads(out.stdout)
    fired = got["fired"]
    assert fired > 100
    v = _values(got["path"])
    wrong = {k: x for k, x in v.items() if x != int(k[1][0])}
    expected = {("main", (str(i),)) for i in range(1, got["rounds"] + 1)} | {
        ("sig", (str(i),)) for i in range(1, fired + 1)
    }
    assert set(v) == expected and not wrong, f"{len(expected - set(v))} series missing, {len(wrong)} with a wrong value"


FORK_WITHOUT_UPDATES = textwrap.dedent(
    """
    import json, os, subprocess, sys, threading, statmap
    d, n = sys.argv[1], int(sys.argv[2])
    pub = statmap.Publisher("lazy", d)
    c = pub.counter("c", "C")
    h = pub.histogram("h", "H", buckets=(1.0,))
    t = pub.text("t", "T", size=16)
    fam = pub.counter("fam", "F", labels=("who",))
    c.inc(5); h.observe(0.5); t.set("parent"); fam.labels("parent").inc()
    out = {"parent": pub.path}

    def files():
        return sorted(f for f in os.listdir(d) if not f.startswith("."))

    # fork + exec (subprocess with preexec_fn forks and runs the at-fork hooks)
    for _ in range(n):
        subprocess.run([sys.executable, "-c", "pass"], preexec_fn=lambda: None, check=True)
    out["after_exec"] = files()
    # fork, no update, os._exit
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            c.get(); h.get(); t.get()  # reading is not updating
            os._exit(0)
        os.waitpid(pid, 0)
    out["after_idle_forks"] = files()
    # fork + exec from several threads at once
    def spawn():
        for _ in range(n // 4 + 1):
            subprocess.run([sys.executable, "-c", "pass"], preexec_fn=lambda: None, check=True)
    threads = [threading.Thread(target=spawn) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    out["after_threads"] = files()
    # children that update: each gets a file with exactly its own values
    kids = []
    for how in ("inc", "observe", "set", "label", "new_label"):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            if how == "inc":
                c.inc(3)
            elif how == "observe":
                h.observe(2.0)
            elif how == "set":
                t.set("child")
            elif how == "label":
                fam.labels("parent").inc(2)
            else:
                fam.labels("child").inc(4)
            os.write(w, json.dumps([how, pub.path]).encode())
            os._exit(0)
        os.close(w)
        os.waitpid(pid, 0)
        kids.append(json.loads(os.read(r, 4096)))
        os.close(r)
    out["kids"] = kids
    # a forked child that updates from a thread while its main thread also does
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        def bump():
            for _ in range(1000):
                c.inc()
        ths = [threading.Thread(target=bump) for _ in range(4)]
        for th in ths:
            th.start()
        for th in ths:
            th.join()
        os.write(w, pub.path.encode())
        os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    out["threaded_kid"] = os.read(r, 4096).decode()
    c.inc()
    out["final"] = files()
    print(json.dumps(out))
    pub.close()
    """
)


def test_fork_without_updates_creates_no_file(statdir: str) -> None:
    out = run_python(FORK_WITHOUT_UPDATES, statdir, "20", timeout=300)
    got = json.loads(out.stdout)
    parent = os.path.basename(got["parent"])
    assert got["after_exec"] == [parent], "fork + exec left files behind"
    assert got["after_idle_forks"] == [parent], "children that never updated left files"
    assert got["after_threads"] == [parent]
    kids = {how: path for how, path in got["kids"]}
    assert len(set(kids.values()) | {got["parent"], got["threaded_kid"]}) == 7
    assert sorted(got["final"]) == sorted(
        os.path.basename(p) for p in [got["parent"], got["threaded_kid"], *kids.values()]
    )
    zero_h = (0, 0.0)
    for how, path in kids.items():
        v = _values(path)
        assert v[("c", ())] == (3 if how == "inc" else 0), (how, v)
        h = v[("h", ())]
        assert (h.count, h.sum) == ((1, 2.0) if how == "observe" else zero_h), (how, v)  # type: ignore[attr-defined]
        assert v[("t", ())] == ("child" if how == "set" else ""), (how, v)
        assert v[("fam", ("parent",))] == (2 if how == "label" else 0), (how, v)
        assert v.get(("fam", ("child",))) == (4 if how == "new_label" else None), (how, v)
    threaded = _values(got["threaded_kid"])
    if statmap.backend == "c":
        assert threaded[("c", ())] == 4000
    else:  # pure cells may lose concurrent increments of one series, never invent any
        assert 0 < threaded[("c", ())] <= 4000  # type: ignore[operator]
    parent_values = _values(got["parent"])
    assert parent_values[("c", ())] == 6 and parent_values[("t", ())] == "parent"
    assert ("fam", ("child",)) not in parent_values
