"""The dashboard's Knobs panel in a real headless Chromium, at desktop and phone sizes.

Real knob-declaring processes (tests/test_knobs.py's worker) and a real
``statmap serve``: the panel lists their knobs; with ``--allow-set`` and the
token, a change made through the page's controls (keyboard and pointer) is
applied by the processes (read back with ``statmap.read_knobs`` and from what
the worker's main thread reads), a value one process refuses shows its
reason, and without ``--allow-set`` there are no edit controls.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import statmap

from . import test_dashboard as dash
from .test_knobs import Workers, cli
from .test_server_support import Server, wait_for

pytestmark = dash.pytestmark
browser = dash.browser  # the same Chromium fixture
TOKEN = "knob-token"


def knob_text(driver: Any, publisher: str, knob: str, part: str) -> str:
    """The text of one part (``.knob-value``, ``.knob-result``, ...) of a knob's box; '' when absent."""
    return driver.execute_script(  # type: ignore[no-any-return]
        "const b = Array.from(document.querySelectorAll('.knob')).find("
        "  k => k.dataset.publisher === arguments[0] && k.dataset.knob === arguments[1]);"
        "const p = b && b.querySelector(arguments[2]); return p ? p.innerText : '';",
        publisher,
        knob,
        part,
    )


def knob_box(publisher: str, knob: str) -> str:
    return f'.knob[data-publisher="{publisher}"][data-knob="{knob}"]'


def applied(statdir: str, pids: list[int], knob: str) -> dict[int, tuple[Any, str]]:
    """Each process's published (value, origin) of a knob, read from its file."""
    processes, _ = statmap.read_knobs(statdir, "web")
    return {
        p.pid: (p.knobs[knob].typed_value(), p.knobs[knob].state.origin)  # type: ignore[union-attr]
        for p in processes
        if p.pid in pids
    }


PROVOKED = (
    ("/api/knobs?", "status of 409"),  # a value one process refuses
    ("/api/knobs?", "status of 400"),  # a value no declaration accepts
    ("/healthz", "status of 401"),  # the wrong token, typed on purpose
)


def expected_console_errors(driver: Any) -> list[dict[str, Any]]:
    """Console errors other than Chromium's own reports of the answers the test provokes."""
    return [
        e
        for e in dash.console_errors(driver)
        if not (e.get("source") == "network" and any(a in e["message"] and b in e["message"] for a, b in PROVOKED))
    ]


@pytest.mark.parametrize("size", sorted(dash.SIZES))
def test_knobs_panel_sets_knobs_in_the_real_processes(statdir: str, browser: Any, tmp_path: Path, size: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    workers = Workers(statdir)
    a, b = workers.start(), workers.start(max_rate=500)  # b refuses a rate_limit above 500
    pids = [a.pid, b.pid]
    server = Server(statdir, "--allow-set", "--token", TOKEN)
    try:
        dash.viewport(browser, *dash.SIZES[size])
        base = f"http://statmap:{TOKEN}@{server.host}:{server.port}/"
        if size == "desktop":
            # Opened with Basic credentials: Chromium keeps them in document.URL, the page edits with them.
            browser.get(base)
            wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, ".knob .knob-edit")) == 4, what="editors")
            # Opened again without them (the browser sends its cached ones): the page has no token, says why.
            browser.get(server.url)
            wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, ".knob"), what="the knobs")
            note = wait_for(lambda: browser.find_element(By.ID, "knobs-note").text, what="the note")
            assert "needs the server's token" in note, note
            assert browser.find_elements(By.CSS_SELECTOR, ".knob-edit") == []
            field = browser.find_element(By.CSS_SELECTOR, "#knobs-note .token-input")
            field.send_keys("not-the-token", Keys.ENTER)  # a wrong token is said at once
            wait_for(lambda: "refused this token" in browser.find_element(By.ID, "knobs-note").text, what="the refusal")
            assert browser.find_elements(By.CSS_SELECTOR, ".knob-edit") == []
            field.clear()
            field.send_keys(TOKEN, Keys.ENTER)
        else:
            browser.get(base + "#token=" + TOKEN)
            wait_for(lambda: "#token" not in browser.current_url, what="the token gone from the address bar")
        wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, ".knob .knob-edit")) == 4, what="4 editors")

        # Listed from the real processes: the value, default, allowed values (differing here), origin.
        rate = knob_box("web", "rate_limit")
        assert knob_text(browser, "web", "rate_limit", ".knob-value") == "100"
        facts = knob_text(browser, "web", "rate_limit", ".knob-facts")
        assert "default" in facts and "100" in facts and "origin" in facts and "default" in facts, facts
        assert f"pid {b.pid}: integer 1 … 500" in facts and f"pid {a.pid}: integer 1 … 10000" in facts, facts
        assert knob_text(browser, "web", "log_level", ".knob-facts").count("debug | info | warning | error") == 1

        # A switch, from the keyboard: focus it, space. Both processes apply it.
        switch = browser.find_element(By.CSS_SELECTOR, f"{knob_box('web', 'maintenance')} input[role=switch]")
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].focus();", switch)
        switch.send_keys(Keys.SPACE)
        result = wait_for(
            lambda: (t := knob_text(browser, "web", "maintenance", ".knob-result")).count("applied") == 2 and t,
            what="two applied answers",
        )
        assert f"pid {a.pid}: applied" in result and f"pid {b.pid}: applied" in result, result
        assert applied(statdir, pids, "maintenance") == {a.pid: (True, "operator"), b.pid: (True, "operator")}
        assert workers.wait_observed(a, maintenance=True)["maintenance"] is True  # the program's own read
        wait_for(lambda: knob_text(browser, "web", "maintenance", ".knob-value") == "true", what="true shown")
        facts = wait_for(
            lambda: (t := knob_text(browser, "web", "maintenance", ".knob-facts")) and "operator" in t and t,
            what="the operator as origin",
        )
        assert f"uid {os.getuid()}" in facts, facts

        # A number: 1000 is applied by one process and refused by the other, with the reason shown.
        box = browser.find_element(By.CSS_SELECTOR, f"{rate} input[type=number]")
        assert (box.get_attribute("min"), box.get_attribute("max")) == ("1", "10000")
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", box)
        box.clear()
        box.send_keys("1000", Keys.ENTER)
        result = wait_for(
            lambda: (t := knob_text(browser, "web", "rate_limit", ".knob-result")) and "refused" in t and t,
            what="the refusal",
        )
        assert f"pid {a.pid}: applied" in result, result
        assert f"pid {b.pid}: refused: 1000 is above the maximum 500" in result, result
        assert applied(statdir, pids, "rate_limit") == {a.pid: (1000, "operator"), b.pid: (100, "default")}
        status = wait_for(lambda: knob_text(browser, "web", "rate_limit", ".knob-status"), what="the refusal kept")
        assert f"pid {b.pid} refused 1000: 1000 is above the maximum 500" in status, status
        # The processes now differ: each one's value is listed.
        per = wait_for(lambda: knob_text(browser, "web", "rate_limit", ".knob-per-process"), what="per process")
        assert f"pid {a.pid}: 1000 (operator)" in per and f"pid {b.pid}: 100 (default)" in per, per

        # A value no declaration accepts is not sent: the server's reason is shown, nothing changes.
        box.clear()
        box.send_keys("0", Keys.ENTER)
        result = wait_for(
            lambda: (t := knob_text(browser, "web", "rate_limit", ".knob-result")) and "not sent" in t and t,
            what="the usage error",
        )
        assert "below the minimum" in result, result

        # A choice, from the keyboard, then the Set button.
        select = browser.find_element(By.CSS_SELECTOR, f"{knob_box('web', 'log_level')} select")
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].focus();", select)
        select.send_keys("debug")
        dash.click(browser, f"{knob_box('web', 'log_level')} .knob-set")
        wait_for(
            lambda: knob_text(browser, "web", "log_level", ".knob-result").count("applied") == 2,
            what="log_level applied",
        )
        assert applied(statdir, pids, "log_level") == {a.pid: ("debug", "operator"), b.pid: ("debug", "operator")}

        # Reset: back to the default, in both.
        dash.click(browser, f"{knob_box('web', 'maintenance')} .knob-reset")
        wait_for(
            lambda: applied(statdir, pids, "maintenance") == {a.pid: (False, "default"), b.pid: (False, "default")},
            what="maintenance reset in both",
        )
        wait_for(lambda: knob_text(browser, "web", "maintenance", ".knob-value") == "false", what="false shown")
        # The keyboard focus stays on the button pressed (the panel's updates never move it).
        focus = browser.execute_script("return document.activeElement.outerHTML.slice(0, 200);")
        assert 'class="knob-reset"' in focus, focus

        # Nothing overflows the page sideways at either size.
        width = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth];")
        assert width[0] <= width[1], width
        shot = dash.artefact_dir(tmp_path) / f"dashboard-knobs-{size}.png"
        browser.execute_script("document.getElementById('knobs-section').scrollIntoView();")
        time.sleep(0.3)
        browser.save_screenshot(str(shot))
        errors = expected_console_errors(browser)
        assert errors == [], errors
    finally:
        workers.stop()
        server.stop()


PUBLISH_HOSTILE_KNOB = """
import sys, statmap
bad = sys.argv[2]
pub = statmap.Publisher("evil", sys.argv[1])
pub.knob("motd", "help " + bad, default="hello " + bad)
print("ready", flush=True)
sys.stdin.read()
"""


def test_knobs_panel_read_only_without_allow_set_and_hostile_text_escaped(statdir: str, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    workers = Workers(statdir)
    proc, stopped = workers.start(), workers.start()
    evil = subprocess.Popen(
        [sys.executable, "-c", PUBLISH_HOSTILE_KNOB, statdir, dash.HOSTILE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert evil.stdout is not None and evil.stdout.readline() == "ready\n"
    server = Server(statdir)
    try:
        browser.get(server.url)
        wait_for(lambda: browser.execute_script("return document.body.dataset.knobs;") == "5", what="5 knobs")
        assert knob_text(browser, "web", "rate_limit", ".knob-value") == "100"
        assert browser.find_elements(By.CSS_SELECTOR, ".knob-edit, .knob-input, .token-input") == []
        assert "Read-only" in browser.find_element(By.ID, "knobs-note").text
        texts = browser.execute_script(
            "return Array.from(document.querySelectorAll('.knob[data-publisher=\"evil\"] *')).map(e => e.textContent);"
        )
        raw = [t for t in texts if dash.UNSAFE.search(t)]
        assert raw == [], raw
        joined = " ".join(texts)
        assert "help \\x1b]0;owned\\x07\\x1b[2J\\x1b[31mred\\x9b1m\\u202etxt.exe\\x7f\\r\\n" in joined, texts
        assert "hello \\x1b]0;owned\\x07" in joined, texts
        # A request a process has not answered yet (stopped) is shown pending, and the values differ.
        os.kill(stopped.pid, signal.SIGSTOP)
        try:
            out = cli(statdir, "set", "web", "maintenance=true", "--timeout", "0.5")
            assert out.returncode == 1 and "no answer" in out.stdout, out
            status = wait_for(
                lambda: knob_text(browser, "web", "maintenance", ".knob-status"), what="the pending request"
            )
            assert f"request pending in 1 process(es): pid {stopped.pid}" in status, status
            per = knob_text(browser, "web", "maintenance", ".knob-per-process")
            assert f"pid {proc.pid}: true (operator)" in per and f"pid {stopped.pid}: false (default)" in per, per
        finally:
            os.kill(stopped.pid, signal.SIGCONT)
        wait_for(lambda: knob_text(browser, "web", "maintenance", ".knob-value") == "true", what="both true")
        assert knob_text(browser, "web", "maintenance", ".knob-status") == ""
        assert proc.poll() is None
        # The panel folds (Enter on its heading) and stays folded after a reload.
        summary = browser.find_element(By.CSS_SELECTOR, "#knobs-details > summary")
        browser.execute_script("arguments[0].focus();", summary)
        summary.send_keys(Keys.ENTER)
        wait_for(lambda: not browser.find_element(By.ID, "knobs").is_displayed(), what="the panel folded")
        browser.refresh()
        wait_for(lambda: browser.execute_script("return document.body.dataset.knobs;") == "5", what="5 knobs again")
        assert not browser.find_element(By.ID, "knobs").is_displayed()
        assert dash.console_errors(browser) == []
    finally:
        server.stop()
        workers.stop()
        assert evil.stdin is not None
        evil.stdin.close()
        evil.wait(timeout=60)
