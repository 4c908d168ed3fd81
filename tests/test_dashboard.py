"""The dashboard in a real headless Chromium (Debian's chromium and chromium-driver, driven by Selenium).

The page must load without console errors, list the test's worker
processes, and a chart's latest value must change after the workers update
a metric. Filtering and pinning work. A screenshot is written to the test's temporary directory (or
``$STATMAP_ARTEFACTS``). The history test (issue 16) runs at 1920x1080 and
390x844; with ``STATMAP_SCREENSHOT_DIR=docs`` it writes docs/dashboard.png and
docs/dashboard-phone.png, the README's screenshots.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from .test_server_support import Server, Worker, wait_for

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

pytestmark = [
    pytest.mark.external,
    pytest.mark.once,  # the page in a browser: the values come from the collector, tested under both cells
    pytest.mark.skipif(
        not (shutil.which("chromium") and shutil.which("chromedriver")),
        reason="needs Debian's chromium and chromium-driver",
    ),
]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1280,1100",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver: Any) -> list[dict[str, Any]]:
    return [e for e in driver.get_log("browser") if e.get("level") in ("SEVERE", "ERROR")]


def card_value(driver: Any, series_id: str) -> str | None:
    """The latest value a card shows (its data-value), read in one script call (no stale elements)."""
    return driver.execute_script(  # type: ignore[no-any-return]
        "const v = document.querySelector('.card[data-id=\"' + CSS.escape(arguments[0]) + '\"] .value');"
        "return v ? v.dataset.value : null;",
        series_id,
    )


def attrs(driver: Any, selector: str, name: str) -> list[str]:
    """An attribute of every element matching a selector, read in one script call."""
    return driver.execute_script(  # type: ignore[no-any-return]
        "return Array.from(document.querySelectorAll(arguments[0])).map(e => e.getAttribute(arguments[1]));",
        selector,
        name,
    )


def click(driver: Any, selector: str) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    def attempt() -> bool:
        try:
            driver.find_element(By.CSS_SELECTOR, selector).click()
            return True
        except StaleElementReferenceException:
            return False

    wait_for(attempt, what=f"a click on {selector}")


def test_dashboard_in_chromium(statdir: str, browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    workers = [Worker(statdir, "dash"), Worker(statdir, "dash")]
    # Two processes of the demo's own worker, for a screenshot with every kind of metric.
    demo = [
        subprocess.Popen([sys.executable, "-m", "statmap.demo", statdir, str(i)], env=dict(os.environ))
        for i in range(2)
    ]
    server = Server(statdir)
    try:
        for w in workers:
            w("set 5")
            w("inc 10")
            w("observe 0.05")
        browser.get(server.url)

        # The processes table shows the workers.
        def rows() -> set[str]:
            return set(attrs(browser, "#processes tbody tr", "data-pid"))

        wait_for(lambda: {str(w.pid) for w in workers} <= rows(), what="the workers in the processes table")
        state = browser.execute_script(
            "return document.querySelector('#processes tr[data-pid=\"' + arguments[0] + '\"] .state').textContent;",
            str(workers[0].pid),
        )
        assert state == "alive"

        # The gauge (aggregate sum of two workers at 5) reads 10; it changes when the workers set it.
        wait_for(lambda: card_value(browser, "dash:level") == "10", what="the level card at 10")
        for w in workers:
            w("set 7.5")
        wait_for(lambda: card_value(browser, "dash:level") == "15", what="the level card at 15 after the update")
        # The counter's chart shows a rate once the workers count.
        for _ in range(4):
            for w in workers:
                w("inc 25")
                w("observe 0.5")
            time.sleep(0.5)
        wait_for(
            lambda: (card_value(browser, 'dash:jobs{queue="high"}') or "0") not in ("", "0"),
            what="a non-zero rate for jobs",
        )
        assert attrs(browser, '[data-id="dash:level"] path.line', "d")[0].startswith("M")
        hist_legend = browser.find_element(By.CSS_SELECTOR, '[data-id="dash:latency"] .legend').text
        assert "p50" in hist_legend and "p99" in hist_legend

        # Filter, then pin a series: the pinned one stays whatever the filter.
        box = browser.find_element(By.ID, "filter")
        box.send_keys("level")
        wait_for(
            lambda: attrs(browser, "#cards .card", "data-id") == ["dash:level"],
            what="only the level card after filtering",
        )
        click(browser, '[data-id="dash:level"] .pin')
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(Keys.BACKSPACE)
        box.send_keys("latency")
        wait_for(
            lambda: attrs(browser, "#pinned .card", "data-id") == ["dash:level"],
            what="the pinned card",
        )
        wait_for(
            lambda: "dash:latency" in attrs(browser, "#cards .card", "data-id"),
            what="the latency card under the new filter",
        )
        for w in workers:
            w("set 1")
        wait_for(lambda: card_value(browser, "dash:level") == "2", what="the pinned card updating")
        # The pin survives a reload (localStorage).
        browser.refresh()
        wait_for(
            lambda: attrs(browser, "#pinned .card", "data-id") == ["dash:level"],
            what="the pin after a reload",
        )
        assert browser.find_element(By.ID, "status").text == "live"

        # A clean view for the screenshot: no filter, one pin, a few seconds of history.
        click(browser, '#pinned [data-id="dash:level"] .pin')
        box = browser.find_element(By.ID, "filter")
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(Keys.BACKSPACE)
        wait_for(lambda: len(attrs(browser, "#cards .card", "data-id")) > 10, what="every card")
        click(browser, '[data-id="demo-web:latency"] .pin')
        for _ in range(6):
            for w in workers:
                w("inc 40")
            time.sleep(1)
        shot = tmp_path / "dashboard.png"
        browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        if os.environ.get("STATMAP_SCREENSHOT"):
            shutil.copyfile(shot, os.environ["STATMAP_SCREENSHOT"])

        errors = console_errors(browser)
        assert errors == [], errors
    finally:
        for p in demo:
            p.terminate()
        for w in workers:
            w.stop()
        for p in demo:
            p.wait(timeout=10)
        code, _, err = server.stop()
        assert code == 0, err


def test_dashboard_with_a_token(statdir: str, browser: Any) -> None:
    """Behind a token the page does not load without it, and loads with Basic credentials in the URL."""
    from selenium.webdriver.common.by import By

    worker = Worker(statdir, "dash")
    server = Server(statdir, "--token", "dash-token")
    try:
        browser.get(server.url)
        time.sleep(1)
        assert browser.find_elements(By.ID, "processes") == []  # the browser asks for credentials instead
        browser.get(f"http://statmap:dash-token@{server.host}:{server.port}/")
        wait_for(
            lambda: str(worker.pid) in attrs(browser, "#processes tbody tr", "data-pid"),
            what="the worker behind the token",
        )
        assert browser.find_element(By.ID, "status").text == "live"
    finally:
        worker.stop()
        server.stop()


HOSTILE = "\x1b]0;owned\x07\x1b[2J\x1b[31mred\x9b1m\u202etxt.exe\x7f\r\n"
PUBLISH_HOSTILE = """
import sys, statmap
bad = sys.argv[2]
pub = statmap.Publisher("evil", sys.argv[1])
pub.counter("hits", "help " + bad, labels=("path",)).labels(bad).inc(3)
pub.text("motd", "message of the day").set("hello " + bad)
pub.info("build", "build", values={"version": bad})
print("ready", flush=True)
sys.stdin.read()
"""
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def test_dashboard_escapes_control_characters(statdir: str, browser: Any) -> None:
    """Labels, text and info values with escape sequences and bidi overrides are shown escaped, never raw."""
    proc = subprocess.Popen(
        [sys.executable, "-c", PUBLISH_HOSTILE, statdir, HOSTILE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    server = Server(statdir, "--include-text")
    try:
        browser.get(server.url)
        shown = (
            "return Array.from(document.querySelectorAll('.card')).map(c => "
            "[c.querySelector('.labels').textContent, c.querySelector('.metric').title, "
            "(c.querySelector('.text-value') || c.querySelector('.value')).textContent]);"
        )

        def cards() -> list[list[str]]:
            return browser.execute_script(shown)  # type: ignore[no-any-return]

        wait_for(lambda: len(cards()) >= 3 and all(c[2] not in ("", "\u2013") for c in cards()), what="three cards")
        texts = [t for card in cards() for t in card]
        raw = [t for t in texts if UNSAFE.search(t)]
        assert raw == [], raw
        joined = " ".join(texts)
        assert "\\x1b[31mred\\x9b1m\\u202etxt.exe\\x7f\\r\\n" in joined, texts  # labels
        assert "hello \\x1b]0;owned\\x07" in joined, texts  # text value
        assert "version=\\x1b]0;owned" in joined, texts  # info value
        assert console_errors(browser) == []
    finally:
        server.stop()
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=60)


# -- the history, hover read-outs, per-process breakdown and heatmap (issue 16) -----------------

SIZES = {"desktop": (1920, 1080), "phone": (390, 844)}


def artefact_dir(tmp_path: Path) -> Path:
    """Where screenshots go: ``$STATMAP_ARTEFACTS`` when set (CI keeps it), else the test's tmp dir."""
    out = Path(os.environ.get("STATMAP_ARTEFACTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    return out


def viewport(driver: Any, width: int, height: int) -> None:
    """Make the page's viewport (not the window) this size."""
    driver.set_window_size(width, height)
    inner = driver.execute_script("return [window.innerWidth, window.innerHeight];")
    driver.set_window_size(width + (width - inner[0]), height + (height - inner[1]))


def card(series_id: str) -> str:
    """The CSS selector of a series' card (the id quoted as a CSS string)."""
    return ".card[data-id=" + json.dumps(series_id) + "]"


def readout(driver: Any, series_id: str) -> str:
    return driver.execute_script(  # type: ignore[no-any-return]
        "const r = document.querySelector('.card[data-id=\"' + CSS.escape(arguments[0]) + '\"] .readout.on');"
        "return r ? r.innerText : '';",
        series_id,
    )


@pytest.mark.parametrize("size", sorted(SIZES))
def test_dashboard_history_hover_breakdown_heatmap(statdir: str, browser: Any, tmp_path: Path, size: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    width, height = SIZES[size]
    workers = [Worker(statdir, "dash"), Worker(statdir, "dash")]
    demo = [
        subprocess.Popen([sys.executable, "-m", "statmap.demo", statdir, str(i)], env=dict(os.environ))
        for i in range(2)
    ]
    server = Server(statdir)
    jobs = 'dash:jobs{queue="high"}'
    try:
        # Per-process history starts when someone asks for it: asked here, before the page exists.
        server.json("/api/history?breakdown=" + quote(jobs))
        # The server keeps history from its start: some seconds pass before the page is opened
        # (a minute when the screenshots are for the docs, so the charts have a past to show).
        for i in range(60 if os.environ.get("STATMAP_SCREENSHOT_DIR") else 5):
            workers[0]("inc 30")
            workers[1]("inc 3")
            for w in workers:
                w(f"observe {0.005 * (i % 7 + 1)}")
                w("observe 0.5")
            time.sleep(1)
        viewport(browser, width, height)
        browser.execute_script("window.localStorage.clear();") if browser.current_url.startswith("http") else None
        browser.get(server.url)
        first = wait_for(
            lambda: browser.execute_script("return document.body.dataset.firstHistory;"), what="the first history"
        )
        assert int(first) >= 4, first  # the recent past at once, not one point
        wait_for(lambda: card_value(browser, jobs) not in (None, ""), what="the jobs card")

        # Layout: the header is one line, nothing overflows the page sideways, the process table scrolls.
        layout = browser.execute_script(
            "const h = document.querySelector('header');"
            "const w = document.querySelector('.table-wrap');"
            "return {header: h.getBoundingClientRect().height, page: document.documentElement.scrollWidth,"
            " inner: window.innerWidth, wrapOverflow: getComputedStyle(w).overflowX,"
            " wrapWidth: w.clientWidth, mainWidth: document.querySelector('main').clientWidth};"
        )
        assert layout["header"] < 56, layout
        assert layout["page"] <= layout["inner"], layout
        assert layout["wrapOverflow"] == "auto" and layout["wrapWidth"] <= layout["mainWidth"], layout

        # Axis labels stay in the gutter, left of every line they label.
        overlap = browser.execute_script(
            "const out = [];"
            "for (const svg of document.querySelectorAll('.chart svg')) {"
            "  const xs = Array.from(svg.querySelectorAll('.grid-line')).map(l => +l.getAttribute('x1'));"
            "  const left = Math.min(...xs);"
            "  for (const t of svg.querySelectorAll('text.tick.y')) {"
            "    const b = t.getBBox(); if (b.x + b.width > left + 0.5) out.push(t.textContent); } }"
            "return out;"
        )
        assert overlap == [], overlap

        # Hover over the counter's chart: a read-out with the time and the rate.
        chart = browser.find_element(By.CSS_SELECTOR, f"{card(jobs)} .chart")
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", chart)
        ActionChains(browser).move_to_element_with_offset(chart, chart.size["width"] // 2 - 20, 0).perform()
        text = wait_for(lambda: readout(browser, jobs), what="the hover read-out")
        assert re.search(r"\d\d:\d\d:\d\d", text) and "rate" in text, text
        # The keyboard moves the cursor too.
        chart.send_keys(Keys.END)
        end = wait_for(lambda: readout(browser, jobs), what="the read-out at the end")
        chart.send_keys(Keys.ARROW_LEFT, Keys.ARROW_LEFT)
        wait_for(lambda: readout(browser, jobs) not in ("", end), what="the read-out two samples back")

        # Per process: the sum broken down, one line per worker, their values in the read-out.
        browser.execute_script(
            "arguments[0].scrollIntoView({block: 'center'});",
            browser.find_element(By.CSS_SELECTOR, f"{card(jobs)} .by-process"),
        )
        click(browser, f"{card(jobs)} .by-process")
        for _ in range(3):
            workers[0]("inc 50")
            workers[1]("inc 5")
            time.sleep(1)
        per = f"{card(jobs)} .chart.per-process"
        wait_for(lambda: attrs(browser, per, "data-processes") == ["2"], what="two process lines")
        chart = browser.find_element(By.CSS_SELECTOR, per)
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", chart)
        chart.send_keys(Keys.END)
        text = wait_for(
            lambda: (t := readout(browser, jobs)) and all(f"pid {w.pid}" in t for w in workers) and t,
            what="per-process values in the read-out",
        )
        lines = {ln.split("\t")[0].strip(): ln for ln in text.splitlines()}
        assert any(str(workers[0].pid) in k for k in lines), text

        # The histogram's heatmap has cells, with p50/p90/p99 drawn over them.
        lat = '.card[data-id="dash:latency"]'
        wait_for(lambda: int(attrs(browser, f"{lat} .chart.heatmap svg", "data-cells")[0] or 0) > 0, what="cells")
        assert all(d.startswith("M") for d in attrs(browser, f"{lat} .chart.heatmap path.line", "d")), "p lines"
        assert len(attrs(browser, f"{lat} .chart.heatmap path.line", "d")) == 3
        # The 15-minute window shows all of it: every sample since the server started is on the chart.
        button = browser.find_element(By.CSS_SELECTOR, '#window [data-value="900"]')
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", button)
        button.click()
        assert attrs(browser, "#window [aria-pressed=true]", "data-value") == ["900"]

        # A worker killed is marked on the time axis of its publisher's charts.
        workers[1].proc.kill()
        workers[1].proc.wait()
        wait_for(
            lambda: browser.find_elements(By.CSS_SELECTOR, f"{card(jobs)} .chart .event-died"),
            what="the death marked on the time axis",
        )

        # Screenshot: the view with the breakdown and the heatmap in sight.
        if size == "desktop":  # (on the phone, the top of the page: header, processes, the first cards)
            chart = browser.find_element(By.CSS_SELECTOR, f"{card(jobs)} .chart")
            ActionChains(browser).move_to_element_with_offset(chart, chart.size["width"] // 3, 0).perform()
        browser.execute_script("window.scrollTo(0, 0);")
        time.sleep(0.5)
        shot = artefact_dir(tmp_path) / ("dashboard.png" if size == "desktop" else f"dashboard-{size}.png")
        browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        if os.environ.get("STATMAP_SCREENSHOT_DIR"):
            shutil.copyfile(shot, Path(os.environ["STATMAP_SCREENSHOT_DIR"]) / shot.name)
        errors = console_errors(browser)
        assert errors == [], errors
    finally:
        for p in demo:
            p.terminate()
        for w in workers:
            w.stop()
        for p in demo:
            p.wait(timeout=10)
        server.stop()


def test_dashboard_history_readouts_escape_control_characters(statdir: str, browser: Any) -> None:
    """The history views (issue 16) with hostile text: a chart's read-out, the per-process breakdown and its
    read-out, and the charts' accessible names show control and bidi characters as escapes, never raw."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    proc = subprocess.Popen(
        [sys.executable, "-c", PUBLISH_HOSTILE, statdir, HOSTILE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    server = Server(statdir)
    hits = '.card[data-id^="evil:hits"]'
    try:
        browser.get(server.url)
        wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, f"{hits} .chart svg"), what="the hits chart")
        click(browser, f"{hits} .by-process")
        per = f"{hits} .chart.per-process"
        wait_for(lambda: attrs(browser, per, "data-processes") == ["1"], what="the per-process line")
        for selector in (f"{hits} .chart", per):
            chart = browser.find_element(By.CSS_SELECTOR, selector)
            browser.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].focus();", chart)
            chart.send_keys(Keys.END)
            text = wait_for(
                lambda: browser.execute_script(
                    "const r = document.querySelector(arguments[0] + ' .readout.on'); return r ? r.innerText : '';",
                    hits,
                ),
                what="the read-out",
            )
            assert f"pid {proc.pid}" in text, text
        shown = browser.execute_script(
            "const c = document.querySelector(arguments[0]);"
            "const out = Array.from(c.querySelectorAll('*')).map(e => e.textContent);"
            "for (const e of c.querySelectorAll('[aria-label], [title]'))"
            "  out.push(e.getAttribute('aria-label') || '', e.getAttribute('title') || '');"
            "return out;",
            hits,
        )
        raw = [t for t in shown if UNSAFE.search(t)]
        assert raw == [], raw
        labels = " ".join(attrs(browser, f"{hits} .chart", "aria-label"))
        assert "\\x1b[31mred\\x9b1m\\u202etxt.exe\\x7f\\r\\n" in labels, labels  # the series id, escaped
        assert console_errors(browser) == []
    finally:
        server.stop()
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=60)
