"""Knobs over HTTP: ``GET /api/knobs`` read-only; ``POST /api/knobs`` only with ``--allow-set``, a token, Bearer."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from .test_knobs import Workers
from .test_server_support import Server

pytestmark = pytest.mark.once  # the HTTP side; the knob machinery is tested under both cells in test_knobs.py

TOKEN = "s3cret-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def workers(statdir: str) -> Iterator[Workers]:
    w = Workers(statdir)
    yield w
    w.stop()


def test_knobs_are_read_only_by_default(statdir: str, workers: Workers) -> None:
    proc = workers.start()
    server = Server(statdir)
    try:
        doc = server.json("/api/knobs")
        (process,) = doc["publishers"]["web"]["processes"]
        assert process["pid"] == proc.pid
        # files are named within the directory, as in /api/processes: the server's paths stay private
        assert process["file"].startswith("web.") and statdir not in json.dumps(doc)
        knob = {k["name"]: k for k in process["knobs"]}["rate_limit"]
        assert (knob["value"], knob["default"], knob["min"], knob["max"], knob["origin"]) == (
            100,
            100,
            1,
            10000,
            "default",
        )
        assert server.json("/api/knobs?name=other") == {"publishers": {}, "errors": [], "allow_set": False}
        status, _, body = server.request("/api/knobs?name=web&set=maintenance%3Dtrue", method="POST")
        assert status == 403 and b"--allow-set" in body
        assert workers.wait_observed(proc, maintenance=False)["maintenance"] is False
    finally:
        server.stop()


def test_allow_set_needs_a_token(statdir: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "statmap", "serve", "--allow-set", "--port", "0", "--dir", statdir],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "STATMAP_TOKEN"},
    )
    assert out.returncode == 2 and "needs a token" in out.stderr


def test_post_sets_knobs_with_the_token(statdir: str, workers: Workers) -> None:
    a, b = workers.start(max_rate=500), workers.start()
    server = Server(statdir, "--allow-set", "--token", TOKEN)
    try:
        assert server.json("/api/knobs", BEARER)["allow_set"] is True
        path = "/api/knobs?name=web&set=maintenance%3Dtrue&set=rate_limit%3D1000"
        assert server.request(path, method="POST")[0] == 401  # no token
        basic = {"Authorization": "Basic " + base64.b64encode(f"u:{TOKEN}".encode()).decode()}
        status, _, body = server.request(path, basic, method="POST")
        assert status == 403 and b"Bearer" in body  # cached Basic credentials ride along with a cross-site form
        status, _, body = server.request(path, BEARER, method="POST")
        assert status == 409, body  # one process refuses 1000 (its maximum is 500)
        doc = json.loads(body)
        outcomes = {(x["pid"], x["knob"]): x["outcome"] for x in doc["answers"]}
        assert outcomes[(a.pid, "maintenance")] == "applied" and outcomes[(b.pid, "maintenance")] == "applied"
        assert outcomes[(a.pid, "rate_limit")].startswith("refused: 1000 is above the maximum 500")
        assert outcomes[(b.pid, "rate_limit")] == "applied" and doc["ok"] is False
        assert (
            workers.wait_observed(a, maintenance=True)["maintenance"] is True
            and workers.wait_observed(b, rate_limit=1000)["rate_limit"] == 1000
        )
        status, _, body = server.request(
            "/api/knobs?name=web&reset=maintenance&reset=rate_limit", BEARER, method="POST"
        )
        assert status == 200 and json.loads(body)["ok"] is True
        assert (
            workers.wait_observed(a, maintenance=False)["maintenance"] is False
            and workers.wait_observed(b, rate_limit=100)["rate_limit"] == 100
        )
        for bad in (
            "name=web&set=nosuch%3D1",
            "name=web&set=rate_limit%3D0",
            "name=web",
            "set=a%3D1",
            "name=web&reset=x&timeout=99",
        ):
            assert server.request(f"/api/knobs?{bad}", BEARER, method="POST")[0] == 400, bad
        assert server.request("/api/knobs?name=nosuch&set=a%3D1", BEARER, method="POST")[0] == 400
        assert server.request("/metrics", BEARER, method="POST")[0] == 405  # POST is for /api/knobs only
    finally:
        server.stop()
