"""The dashboard's percentile lines of an exponential histogram, computed by its own chart.js in Chromium
from ``/api/history``: within the documented relative error of the scale (docs/format.md section 14)."""

from __future__ import annotations

import json
from typing import Any

import statmap

from . import test_dashboard as dash
from .test_exphist_views import FIRST, QS, SECOND, close, exact
from .test_server_support import Server, wait_for

pytestmark = dash.pytestmark
browser = dash.browser  # the same Chromium fixture

LINES = """
const done = arguments[arguments.length - 1];
fetch("/api/history?id=" + encodeURIComponent(arguments[0])).then((r) => r.json()).then((doc) => {
  const h = doc.series[arguments[0]];
  done({count: h.count, lines: StatmapChart.lines(h, doc.times, 1).map((l) => [l.name, l.values])});
}).catch((e) => done({error: String(e)}));
"""


def test_dashboard_percentile_lines_of_an_exponential_histogram(statdir: str, browser: Any) -> None:
    pub = statmap.Publisher("app", statdir)
    h = pub.histogram("delay", "Delay", buckets=statmap.Exponential(160))
    for v in FIRST:
        h.observe(v)
    server = Server(statdir)
    try:

        def counts() -> list[Any]:
            status, _headers, body = server.request("/api/history?id=app:delay")
            assert status == 200, body
            entry = json.loads(body)["series"].get("app:delay")
            return list(entry["count"]) if entry else []

        wait_for(lambda: len(counts()) >= 2, what="two history samples of the histogram")
        for v in SECOND:  # between two samples: one interval holds them alone
            h.observe(v)
        wait_for(lambda: counts()[-1:] == [len(FIRST) + len(SECOND)], what="the second batch in the history")
        with statmap.open(pub.path) as reader:
            scale = reader.snapshot().series[0].value.scale
        browser.set_script_timeout(30)
        browser.get(server.url)
        wait_for(lambda: browser.execute_script("return !!window.StatmapChart"), what="the dashboard's scripts")
        got = browser.execute_async_script(LINES, "app:delay")
        assert "error" not in got, got
        lines = dict(got["lines"])
        assert set(lines) == {"p50", "p90", "p99"}
        # the interval that holds the second batch: its percentiles are the batch's
        k = next(i for i, c in enumerate(got["count"]) if c == len(FIRST) + len(SECOND))
        for q in QS:
            value = lines[f"p{round(q * 100)}"][k]
            assert value is not None and close(value, exact(SECOND, q), scale), (q, value, exact(SECOND, q))
        assert dash.console_errors(browser) == []
    finally:
        server.stop()
        pub.close()
