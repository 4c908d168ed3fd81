"""The prometheus_client bridge never gives a scrape with two families of one name.

An application with its own prometheus_client metrics and statmap's bridge in
one real ``CollectorRegistry``: a name clash is refused at registration with an
error naming it (and a ``prefix`` avoids it); a clash that appears later (a
statmap family created after registration) leaves statmap's family out of the
scrape with a warning, so the scrape stays valid.
"""

from __future__ import annotations

import shutil
import subprocess
import warnings
from typing import Any

import pytest

import statmap
from statmap.expose import register

parser = pytest.importorskip("prometheus_client.openmetrics.parser")
prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics  # noqa: E402

pytestmark = pytest.mark.external  # every scrape is checked by promtool (Debian package prometheus)


def scrape(registry: Any) -> dict[str, Any]:
    """Both formats of the registry, checked; the OpenMetrics families by name."""
    text = generate_openmetrics(registry).decode()  # type: ignore[no-untyped-call]
    names = [f.name for f in parser.text_string_to_metric_families(text)]  # raises on a duplicate family
    assert len(names) == len(set(names)), names
    plain = prometheus_client.generate_latest(registry).decode()
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("needs promtool (Debian package prometheus)")
    result = subprocess.run([promtool, "check", "metrics"], input=plain, capture_output=True, text=True, timeout=60)
    assert result.returncode in (0, 3) and "error" not in result.stdout + result.stderr, result.stdout + result.stderr
    return {f.name: f for f in parser.text_string_to_metric_families(text)}


def test_clash_is_refused_at_registration_and_a_prefix_avoids_it(statdir: str) -> None:
    registry = prometheus_client.CollectorRegistry()
    app = prometheus_client.Counter("http_requests", "The app's own", registry=registry)
    app.inc(7)
    pub = statmap.Publisher("web", statdir)
    try:
        pub.counter("http_requests", "statmap's").inc(2)
        pub.gauge("workers", "x").set(1)
        with pytest.raises(ValueError, match=r"http_requests_total.*prefix") as err:
            register(statdir, registry)
        assert statdir in str(err.value)
        families = scrape(registry)  # nothing of statmap's was registered
        assert set(families) == {"http_requests"}
        register(statdir, registry, prefix="statmap_")
        families = scrape(registry)
        assert families["http_requests"].samples[0].value == 7
        assert families["statmap_http_requests"].samples[0].value == 2
        assert "statmap_workers" in families
        # The other way round: an app metric registered after the bridge, under a name it announced.
        with pytest.raises(ValueError, match="statmap_workers"):
            prometheus_client.Gauge("statmap_workers", "x", registry=registry)
    finally:
        pub.close()


def test_clash_that_appears_after_registration_is_left_out_with_a_warning(statdir: str) -> None:
    registry = prometheus_client.CollectorRegistry()
    prometheus_client.Counter("jobs", "The app's own", registry=registry).inc(5)
    prometheus_client.Gauge("queue_total", "The app's, named like a counter's sample", registry=registry).set(1)
    pub = statmap.Publisher("web", statdir)
    try:
        pub.counter("served", "x").inc()
        register(statdir, registry)  # no clash yet
        late = statmap.Publisher("web", statdir)  # a worker that starts later declares clashing names
        late.counter("jobs", "statmap's").inc(2)
        late.counter("queue", "statmap's counter: queue_total").inc(3)
        with pytest.warns(RuntimeWarning, match=r"left out") as caught:
            families = scrape(registry)
        # (only the bridge's warnings: the collection a scrape ends with may finalise objects other tests left,
        # and an unclosed file's ResourceWarning then lands here too, as seen on Python 3.13)
        messages = sorted(str(w.message) for w in caught if issubclass(w.category, RuntimeWarning))
        assert len(messages) == 2 and "family jobs left out" in messages[0] and "queue_total" in messages[1]
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # warned once per family, not at every scrape
            scrape(registry)
        assert families["jobs"].samples[0].value == 5  # the application's own
        assert families["queue_total"].type == "gauge"
        assert families["served"].samples[0].value == 1
        late.close()
    finally:
        pub.close()
