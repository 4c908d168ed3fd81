"""Knobs over HTTP: ``GET /api/knobs`` (read-only), ``POST /api/knobs`` (only with ``--allow-set`` and a token).

``GET /api/knobs[?name=NAME]``: ``statmap knobs --json``'s document for the
live processes (``knob_state.knobs_json``).

``POST /api/knobs?name=NAME&set=KNOB=VALUE&reset=KNOB[&pid=PID][&timeout=S]``
(``set`` and ``reset`` repeat; no body): ``statmap set`` over HTTP. Answers
200 when every targeted live process applied, 409 when any refused or did
not answer in time, 400 for a usage error (unknown name or knob, a value no
declaration accepts), 403 when the server was not started with
``--allow-set``, or when the token does not come as ``Authorization:
Bearer`` (cached Basic credentials ride along with a cross-site form; a
Bearer header cannot). The JSON body lists every answer. The server's own
user is the one that sets: run it as the files' owner, behind its token.
"""

from __future__ import annotations

import os

from .directory import check_private
from .httputil import Response, _json, _text
from .knob_set import set_knobs
from .knob_state import knobs_json

MAX_TIMEOUT = 30.0


def get_knobs(directory: str, params: dict[str, list[str]], allowed: bool = False) -> Response:
    name = (params.get("name") or [""])[-1] or None
    doc = knobs_json(directory, name)
    # Over HTTP, files are named within the directory, as /api/processes names them: the
    # server's own paths are not the client's business.
    prefix = directory.rstrip("/") + "/"
    for pub in doc["publishers"].values():
        for proc in pub["processes"]:
            proc["file"] = os.path.basename(proc.pop("path"))
    doc["errors"] = [
        {"file": os.path.basename(e["path"]), "problem": e["problem"].replace(prefix, "")}
        for e in doc.get("errors", [])
    ]
    doc["allow_set"] = allowed  # whether POST is enabled here (a dashboard shows edit controls only then)
    return _json(doc)


def post_knobs(directory: str, params: dict[str, list[str]], headers: dict[str, str], allowed: bool) -> Response:
    if not allowed:
        return _text(403, "setting knobs is off: start statmap serve with --allow-set and a --token")
    if not headers.get("authorization", "").strip().lower().startswith("bearer "):
        # A browser sends cached Basic credentials with a cross-site form; it cannot add a Bearer header.
        return _text(403, "setting knobs needs Authorization: Bearer TOKEN")
    name = (params.get("name") or [""])[-1]
    requests: dict[str, str | None] = {}
    for item in params.get("set", []):
        knob, sep, value = item.partition("=")
        if not sep or not knob:
            return _text(400, f"set={item!r}: expected set=KNOB=VALUE")
        requests[knob] = value
    for knob in params.get("reset", []):
        requests[knob] = None
    if not name or not requests:
        return _text(400, "expected name=NAME and at least one set=KNOB=VALUE or reset=KNOB")
    try:
        pid = int(params["pid"][-1]) if "pid" in params else None
        timeout = float(params["timeout"][-1]) if "timeout" in params else 5.0
    except ValueError:
        return _text(400, "pid must be an integer and timeout a number of seconds")
    if not 0 < timeout <= MAX_TIMEOUT:
        return _text(400, f"timeout must be above 0 and at most {MAX_TIMEOUT:g} seconds")
    check_private(directory, os.lstat(directory))  # only the owner sets: the same check as statmap set
    result = set_knobs(directory, name, requests, pid, timeout)
    if result.error:
        return _text(400, result.error)
    answers = [
        {"publisher": pub, "pid": p, "knob": k, "value": v, "reset": v is None, "outcome": outcome}
        for pub, p, k, v, outcome in result.answers
    ]
    doc = {"ok": result.code == 0, "seq": result.seq, "note": result.note, "answers": answers}
    return _json(doc, 200 if result.code == 0 else 409)
