"""A Starlette application behind statmap's ASGI middleware.

::

    cd examples
    STATMAP_DIR=/tmp/web-stats uvicorn asgi_app:app --port 8001             # one process
    STATMAP_DIR=/tmp/web-stats uvicorn asgi_app:app --port 8001 --workers 4 # one file per worker
    curl localhost:8001/items/7
    statmap show --aggregate --dir /tmp/web-stats

The route label is Starlette's route template (``/items/{item_id:int}``,
``/api/users/{name}`` under a Mount), never the raw path. FastAPI works the
same way: ``app.add_middleware(ASGIMiddleware, metrics=metrics)``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route

from statmap.middleware import ASGIMiddleware, HTTPMetrics


async def index(request: Request) -> Response:
    return PlainTextResponse("hello\n")


async def get_item(request: Request) -> Response:
    item_id = request.path_params["item_id"]
    if item_id >= 1000:
        return PlainTextResponse("no such item\n", status_code=404)
    return JSONResponse({"id": item_id})


async def create_item(request: Request) -> Response:
    body = await request.body()
    return JSONResponse({"size": len(body)}, status_code=201)


async def delete_item(request: Request) -> Response:
    return Response(status_code=204)


async def old(request: Request) -> Response:
    return RedirectResponse("/", status_code=302)


async def fail(request: Request) -> Response:
    raise RuntimeError("this route always fails")  # the server answers 500; counted as 5xx


async def stream(request: Request) -> Response:
    chunks = int(request.query_params.get("chunks", "3"))
    delay = float(request.query_params.get("delay", "0"))

    async def generate() -> AsyncIterator[str]:
        for i in range(chunks):
            if delay:
                await asyncio.sleep(delay)
            yield f"chunk {i}\n"

    # in-flight and latency last until the last chunk is sent
    return StreamingResponse(generate(), media_type="text/plain")


async def user(request: Request) -> Response:
    return PlainTextResponse(f"user {request.path_params['name']}\n")


# The metrics are created at import, so each worker process has its file from
# the start; the middleware itself is built by Starlette on the first request.
metrics = HTTPMetrics(os.environ.get("STATMAP_PUBLISHER", "web_asgi"))

app = Starlette(
    routes=[
        Route("/", index),
        Route("/items/{item_id:int}", get_item, methods=["GET"]),
        Route("/items/{item_id:int}", delete_item, methods=["DELETE"]),
        Route("/items", create_item, methods=["POST"]),
        Route("/old", old),
        Route("/fail", fail),
        Route("/stream", stream),
        Mount("/api", routes=[Route("/users/{name}", user)]),
    ],
    middleware=[Middleware(ASGIMiddleware, metrics=metrics)],
)
