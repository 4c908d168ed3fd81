"""A Flask application behind statmap's WSGI middleware.

Run it under gunicorn with the example configuration (4 workers, each
publishing into its own file, dead workers folded into the archive, and
``statmap serve`` beside it when available)::

    cd examples
    STATMAP_DIR=/tmp/web-stats gunicorn -c gunicorn.conf.py flask_app:app
    curl localhost:8000/items/7
    statmap show --aggregate --dir /tmp/web-stats     # or: statmap export --dir /tmp/web-stats

or alone, with Flask's development server::

    STATMAP_DIR=/tmp/web-stats python examples/flask_app.py

The middleware records ``http_requests`` (method, route template, status
class), ``http_requests_in_flight`` and ``http_request_duration`` into the
publisher ``web`` (``$STATMAP_PUBLISHER`` to change it); the route label is
Flask's URL rule (``/items/<int:item_id>``), never the raw path.
"""

from __future__ import annotations

import os
import time

from flask import Flask, Response, abort, redirect, request

from statmap.middleware import WSGIMiddleware

app = Flask(__name__)


@app.get("/")
def index() -> str:
    return "hello\n"


@app.get("/items/<int:item_id>")
def get_item(item_id: int) -> dict[str, int]:
    if item_id >= 1000:
        abort(404)  # a 4xx on a known route: the route label stays the template
    return {"id": item_id}


@app.post("/items")
def create_item() -> tuple[dict[str, int], int]:
    payload = request.get_json(silent=True) or {}
    return {"id": int(payload.get("id", 1))}, 201


@app.delete("/items/<int:item_id>")
def delete_item(item_id: int) -> tuple[str, int]:
    return "", 204


@app.get("/old")
def old() -> Response:
    return redirect("/", code=302)  # type: ignore[return-value]


@app.get("/fail")
def fail() -> str:
    raise RuntimeError("this route always fails")  # Flask answers 500; counted as 5xx


@app.get("/stream")
def stream() -> Response:
    chunks = int(request.args.get("chunks", "3"))
    delay = float(request.args.get("delay", "0"))

    def generate():  # type: ignore[no-untyped-def]
        for i in range(chunks):
            if delay:
                time.sleep(delay)
            yield f"chunk {i}\n"

    # in-flight and latency last until the last chunk is sent
    return Response(generate(), mimetype="text/plain")


# Wrap the WSGI callable, not the Flask object: Flask's routing stays
# available to the middleware (it reads the matched rule), and app.run(),
# app.test_client() and `gunicorn flask_app:app` all go through it.
app.wsgi_app = WSGIMiddleware(app.wsgi_app, publisher=os.environ.get("STATMAP_PUBLISHER", "web"))  # type: ignore[method-assign]

if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
