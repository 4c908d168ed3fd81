"""The ASGI host of ``StatmapApp``: ``ASGIApp`` (HTTP and lifespan), to mount in Starlette or FastAPI."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

from .app import StatmapApp


class ASGIApp:
    """An ASGI application (HTTP and lifespan) serving ``StatmapApp``'s routes.

    Mount it in Starlette or FastAPI with ``app.mount("/statmap", ASGIApp())``:
    it routes on the path below ``root_path``. Collections run in a worker
    thread (``asyncio.to_thread``) so they never block the event loop.
    """

    def __init__(
        self, directory: str | os.PathLike[str] | None = None, *, app: StatmapApp | None = None, **options: Any
    ) -> None:
        self.app = app if app is not None else StatmapApp(directory, **options)

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        kind = scope.get("type")
        if kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if kind != "http":
            if kind == "websocket":
                await send({"type": "websocket.close", "code": 1000})
            return
        path = scope.get("path", "") or ""
        root = scope.get("root_path", "") or ""
        if root and (path == root or path.startswith(root + "/")):
            path = path[len(root) :]
        if path == "":
            await send(
                {
                    "type": "http.response.start",
                    "status": 301,
                    "headers": [(b"location", (root + "/").encode("latin-1")), (b"content-length", b"0")],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        headers: dict[str, str] = {}
        for k, v in scope.get("headers", []):
            name = k.decode("latin-1").lower()
            value = v.decode("latin-1")
            headers[name] = headers[name] + ", " + value if name in headers else value
        method = scope.get("method", "GET")
        query = scope.get("query_string", b"").decode("latin-1")
        resp = await asyncio.to_thread(self.app.handle, method, path, query, headers)
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in resp.headers]
        raw.append((b"content-length", str(len(resp.body)).encode()))
        await send({"type": "http.response.start", "status": resp.status, "headers": raw})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else resp.body})
