"""The writing API: model classes, the procedural API, every metric type and its errors."""

from __future__ import annotations

import math
import time

import pytest

import statmap


class WebStats(statmap.Stats):
    requests = statmap.Counter("Requests served")
    errors = statmap.Counter("Failed requests", labels=("code",))
    in_flight = statmap.Gauge("Requests being served")
    latency = statmap.Histogram("Request latency", unit="seconds")
    last_path = statmap.Text("Last path served", size=128)


def values(path: str) -> dict[str, object]:
    with statmap.open(path) as reader:
        snap = reader.snapshot()
    out: dict[str, object] = {}
    for s in snap.series:
        key = s.name + "".join(f"|{k}={v}" for k, v in s.labels.items())
        out[key] = s.value
    return out


def test_issue_example(statdir: str) -> None:
    stats = WebStats("web", directory=statdir)
    stats.requests.inc()
    stats.requests += 1
    stats.errors.labels(code="500").inc()
    stats.in_flight.set(3)
    with stats.latency.time():
        time.sleep(0.001)
    stats.last_path.set("/index")
    got = values(stats.path)
    assert got["requests"] == 2
    assert got["errors|code=500"] == 1
    assert got["in_flight"] == 3.0
    latency = got["latency"]
    assert latency.count == 1 and 0.001 <= latency.sum < 1  # type: ignore[attr-defined]
    assert got["last_path"] == "/index"
    stats.close()
    with statmap.open(stats.path) as reader:
        assert reader.snapshot().status == "closed"
    stats.remove()


def test_backend_is_reported() -> None:
    assert statmap.backend in ("c", "python")


def test_plus_equals_keeps_the_series(statdir: str) -> None:
    with WebStats("web", directory=statdir) as stats:
        series = stats.requests
        for _ in range(10):
            stats.requests += 1
        assert stats.requests is series
        assert series.get() == 10
        stats.in_flight.set(5)
        stats.in_flight += 2
        stats.in_flight -= 0.5
        assert stats.in_flight.get() == 6.5


def test_metric_name_is_attribute_unless_given(statdir: str) -> None:
    class Named(statmap.Stats):
        hits = statmap.Counter("Hits", name="cache_hits_total_count")
        misses = statmap.Counter("Misses")

    with Named("cache", directory=statdir) as stats:
        stats.hits.inc()
        assert set(values(stats.path)) == {"cache_hits_total_count", "misses"}


def test_model_classes_inherit_declarations(statdir: str) -> None:
    class Base(statmap.Stats):
        a = statmap.Counter("A")

    class Derived(Base):
        b = statmap.Gauge("B")

    with Derived("derived", directory=statdir) as stats:
        stats.a.inc()
        stats.b.set(1)
        assert set(values(stats.path)) == {"a", "b"}


def test_reserved_attribute_names_are_refused() -> None:
    with pytest.raises(TypeError, match="reserved"):

        class Bad(statmap.Stats):
            close = statmap.Counter("oops")  # type: ignore[assignment]  # refused at run time too


def test_procedural_api(statdir: str) -> None:
    pub = statmap.Publisher("proc", statdir)
    c = pub.counter("jobs", "Jobs done", labels=("queue",))
    g = pub.gauge("depth", "Queue depth", aggregate="max")
    h = pub.histogram("duration", "Job duration", buckets=(1, 2, 3))
    s = pub.summary("size", "Job size")
    t = pub.text("current", "Current job", size=32)
    i = pub.info("build", "Build", values={"version": "1"})
    e = pub.enum("phase", "Phase", states=("idle", "busy"))
    tm = pub.timer("step", "Step time")
    c.labels("high").inc(3)
    c.labels(queue="low").inc()
    g.set(7)
    h.observe(1.5)
    h.observe(10)
    s.observe(4)
    t.set("job-1")
    e.state("busy")
    with tm.time():
        pass
    got = values(pub.path)
    assert got["jobs|queue=high"] == 3 and got["jobs|queue=low"] == 1
    assert got["depth"] == 7.0
    hist = got["duration"]
    assert [c for _, c in hist.buckets] == [0, 1, 1, 2]  # type: ignore[attr-defined]
    assert got["size"].count == 1 and got["size"].sum == 4.0  # type: ignore[attr-defined]
    assert got["current"] == "job-1"
    assert got["build"] == {"version": "1"}
    assert got["phase"] == "busy"
    assert got["step"].count == 1  # type: ignore[attr-defined]
    assert i.get() == {"version": "1"}
    with statmap.open(pub.path) as reader:
        units = {s.name: s.unit for s in reader.snapshot().series}
    assert units["step"] == "seconds"
    pub.remove()


def test_duplicate_metric_names_are_refused(statdir: str) -> None:
    with statmap.Publisher("dup", statdir) as pub:
        pub.counter("x", "X")
        with pytest.raises(ValueError, match="already has a metric named 'x'"):
            pub.gauge("x", "X again")


def test_counter_errors(statdir: str) -> None:
    with statmap.Publisher("errs", statdir) as pub:
        c = pub.counter("c", "C")
        with pytest.raises(ValueError, match="only go up"):
            c.inc(-1)
        with pytest.raises(TypeError, match="must be int"):
            c.inc(1.5)
        with pytest.raises(TypeError):
            c.inc("1")
        c.inc(n=5)
        assert c.get() == 5
        f = pub.counter("f", "F", float=True)
        f.inc(0.5)
        f += 0.25
        with pytest.raises(ValueError, match="only go up"):
            f.inc(-0.1)
        with pytest.raises(ValueError):
            f.inc(math.nan)
        assert f.get() == 0.75


def test_gauge_helpers(statdir: str) -> None:
    with statmap.Publisher("g", statdir) as pub:
        g: statmap.metrics.GaugeSeries = pub.gauge("g", "G")
        before = time.time()
        g.set_to_current_time()
        assert before <= g.get() <= time.time()
        g.set(0)
        with g.track_inprogress():
            assert g.get() == 1

            @g.track_inprogress()
            def work() -> float:
                return float(g.get())

            assert work() == 2
        assert g.get() == 0
        with g.time():
            time.sleep(0.002)
        assert 0.002 <= g.get() < 1
        g.inc()
        g.dec(3)
        g.inc(n=0.5)
        assert g.get() == pytest.approx(g.get())
        with pytest.raises(TypeError):
            g.set("high")  # type: ignore[arg-type]


def test_histogram_timer_decorator_and_nan(statdir: str) -> None:
    with statmap.Publisher("h", statdir) as pub:
        h: statmap.metrics.HistogramSeries = pub.histogram("h", "H", buckets=(0.5, 1.0))

        @h.time()
        def quick() -> str:
            return "done"

        assert quick() == "done"
        assert quick.__name__ == "quick"
        h.observe(0.5)  # on the bound: counted in the 0.5 bucket (le)
        h.observe(float("inf"))
        with pytest.raises(ValueError, match="NaN"):
            h.observe(float("nan"))
        count, total, buckets = h.get()
        assert count == 3 and buckets == (2, 0, 1) and total == math.inf


def test_histogram_bucket_validation() -> None:
    with pytest.raises(ValueError):
        statmap.Histogram("x", buckets=(1, 1))
    with pytest.raises(ValueError):
        statmap.Histogram("x", buckets=(2, 1))
    with pytest.raises(ValueError):
        statmap.Histogram("x", buckets=(1, math.nan))
    assert statmap.Histogram("x", buckets=(1, 2, math.inf)).bounds == (1.0, 2.0)
    with pytest.raises(ValueError):
        statmap.LogBuckets(1, 1e300, 0.0001).bounds()


def test_log_buckets_relative_error(statdir: str) -> None:
    with statmap.Publisher("lb", statdir) as pub:
        h = pub.histogram("x", "X", buckets=statmap.LogBuckets(0.001, 100, 0.02))
        observed = [0.001 * 1.01**i for i in range(1150)]
        for v in observed:
            h.observe(v)
        with statmap.open(pub.path) as reader:
            (series,) = reader.snapshot().series
        for q in (0.0, 0.01, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0):
            rank = max(1, math.ceil(q * len(observed)))
            exact = observed[rank - 1]
            assert abs(series.value.percentile(q) - exact) / exact <= 0.02 + 1e-12


def test_summary_and_average(statdir: str) -> None:
    with statmap.Publisher("s", statdir) as pub:
        s = pub.summary("s", "S")
        for v in (1, 2, 3, 4):
            s.observe(v)
        with s.time():
            pass
        assert s.get()[0] == 5
        with statmap.open(pub.path) as reader:
            (series,) = reader.snapshot().series
        assert series.value.count == 5 and series.value.average == pytest.approx(2.0, abs=0.01)
        assert statmap.Average is statmap.Summary


def test_text_truncates_at_character_boundary(statdir: str) -> None:
    with statmap.Publisher("t", statdir) as pub:
        t = pub.text("t", "T", size=5)
        t.set("héllo wörld")  # h(1) é(2) l(1) l(1) = 5 bytes
        assert t.get() == "héll"
        t.set("€€")  # 6 bytes: only one euro fits
        assert t.get() == "€"
        t.set("")
        assert t.get() == ""
        with pytest.raises(TypeError, match="must be str"):
            t.set(b"bytes")  # type: ignore[arg-type]
        t.set("a long string that is cut")
        t.set("ab")
        assert values(pub.path)["t"] == "ab"


def test_enum_and_info(statdir: str) -> None:
    with statmap.Publisher("e", statdir) as pub:
        e = pub.enum("e", "E", states=("a", "b"))
        assert e.get() == "a"
        e.state("b")
        assert e.get() == "b"
        with pytest.raises(ValueError, match="not one of the states"):
            e.state("c")
        with pytest.raises(ValueError):
            statmap.Enum("x", states=())
        i = pub.info("i", "I")
        assert "i" not in values(pub.path)  # published on first info()
        i.info({"k": "v"})
        i.info({"k": "v"})  # the same again is fine
        with pytest.raises(statmap.StatmapError, match="constant"):
            i.info({"k": "w"})
        assert values(pub.path)["i"] == {"k": "v"}


def test_labels(statdir: str) -> None:
    with statmap.Publisher("l", statdir) as pub:
        c = pub.counter("c", "C", labels=("method", "status"), max_series=3)
        a = c.labels("GET", "200")
        assert c.labels("GET", "200") is a
        assert c.labels(method="GET", status="200") is a
        assert c.labels("GET", 200) is a  # values are strings
        with pytest.raises(ValueError, match="expected 2 label values"):
            c.labels("GET")
        with pytest.raises(ValueError, match="expected labels"):
            c.labels(method="GET")
        with pytest.raises(TypeError, match="not both"):
            c.labels("GET", status="200")
        with pytest.raises(TypeError, match=r"call \.labels"):
            c.inc()
        c.labels("POST", "200")
        c.labels("PUT", "200")
        with pytest.raises(statmap.LabelLimitError, match="max_series"):
            c.labels("DELETE", "200")
        a.inc()
        assert values(pub.path)["c|method=GET|status=200"] == 1
        with pytest.raises(ValueError, match="reserved"):
            statmap.Counter("x", labels=("le",))
        with pytest.raises(ValueError):
            statmap.Counter("x", labels=("bad-name",))


@pytest.mark.parametrize("name", ["", "has space", "-dash", ".hidden", "x" * 65, "a/b", 3])
def test_bad_publisher_names(name: object, statdir: str) -> None:
    with pytest.raises(ValueError, match="publisher name"):
        statmap.Publisher(name, statdir)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["", "1abc", "a-b", "a b", "é", "x" * 201])
def test_bad_metric_names(name: str) -> None:
    with pytest.raises(ValueError, match="metric name"):
        statmap.Counter("x", name=name)


def test_bad_units_and_help() -> None:
    with pytest.raises(ValueError, match="unit"):
        statmap.Counter("x", unit="per cent")
    with pytest.raises(ValueError, match="help"):
        statmap.Counter("x" * 5000)


def test_writes_after_close_do_not_reach_the_file(statdir: str) -> None:
    stats = WebStats("web", directory=statdir)
    stats.requests.inc(5)
    stats.close()
    stats.requests.inc(100)  # lands in private memory
    stats.last_path.set("/after")
    assert values(stats.path)["requests"] == 5
    assert values(stats.path)["last_path"] == ""
    with pytest.raises(statmap.PublishError, match="closed"):
        stats.errors.labels("404")


def test_module_level_procedural_api(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    code = """
import statmap, sys
c = statmap.counter("module_level", "Counted at module level")
c.inc(3)
print(statmap.default_publisher().path)
"""
    from .conftest import run_python

    d = tmp_path / "d"
    monkeypatch.setenv("STATMAP_DIR", str(d))
    out = run_python(code).stdout.strip()
    assert out.startswith(str(d) + "/")
    assert values(out)["module_level"] == 3


def test_show_json_with_infinite_sums(statdir: str) -> None:
    """JSON has no infinities: sums and gauges print as "+Inf"/"-Inf"/"NaN" strings, never a traceback."""
    import json
    import subprocess
    import sys

    with statmap.Publisher("inf", statdir) as pub:
        pub.histogram("h", "H", buckets=(1,)).observe(math.inf)
        pub.summary("s", "S").observe(-math.inf)
        pub.gauge("g", "G").set(math.nan)
        out = subprocess.run(
            [sys.executable, "-m", "statmap", "show", "--json", pub.path], capture_output=True, text=True, check=True
        )
    got = {m["name"]: m["value"] for m in json.loads(out.stdout)["processes"][0]["metrics"]}
    assert got["h"] == {"count": 1, "sum": "+Inf", "buckets": [[1.0, 0], ["+Inf", 1]], "min": "+Inf", "max": "+Inf"}
    assert got["s"] == {"count": 1, "sum": "-Inf", "min": "-Inf", "max": "-Inf"}
    assert got["g"] == "NaN"


def test_short_junk_file_is_corrupt_not_unready(statdir: str) -> None:
    """Only a prefix of a real header (zeros or the magic) can be 'not ready'; text is not."""
    import os

    junk = os.path.join(statdir, "junk.1.00000000.statmap")
    with open(junk, "w") as f:
        f.write("hello, this is not a statmap file\n")
    with pytest.raises(statmap.FormatError, match="statmap magic"):
        statmap.open(junk).snapshot()
    empty = os.path.join(statdir, "empty.1.00000000.statmap")
    open(empty, "w").close()
    assert statmap.open(empty).snapshot().status == "not-ready"
