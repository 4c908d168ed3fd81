"""The WSGI host of ``StatmapApp``: ``WSGIApp``, and ``mount_wsgi`` to put it beside another WSGI application."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from .app import StatmapApp
from .httputil import REASONS


class WSGIApp:
    """A WSGI application serving ``StatmapApp``'s routes below wherever it is mounted.

    ``WSGIApp(directory=None, token=None, **options)`` or ``WSGIApp(app=StatmapApp(...))``.
    It routes on ``PATH_INFO``, so it works under any ``SCRIPT_NAME`` (the
    dashboard uses relative links); see ``mount_wsgi`` to put it beside an
    application.
    """

    def __init__(
        self, directory: str | os.PathLike[str] | None = None, *, app: StatmapApp | None = None, **options: Any
    ) -> None:
        self.app = app if app is not None else StatmapApp(directory, **options)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        path = environ.get("PATH_INFO", "") or ""
        if path == "":  # mounted at /statmap and asked for /statmap: the dashboard's relative links need the slash
            location = (environ.get("SCRIPT_NAME", "") or "") + "/"
            start_response("301 Moved Permanently", [("Location", location), ("Content-Length", "0")])
            return [b""]
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        method = environ.get("REQUEST_METHOD", "GET")
        resp = self.app.handle(method, path, environ.get("QUERY_STRING", ""), headers)
        body = b"" if method == "HEAD" else resp.body
        start_response(
            f"{resp.status} {REASONS.get(resp.status, '')}", [*resp.headers, ("Content-Length", str(len(resp.body)))]
        )
        return [body]


def mount_wsgi(
    application: Callable[..., Any], prefix: str = "/statmap", statmap: Any = None, **options: Any
) -> Callable[..., Any]:
    """A WSGI application sending ``prefix`` and below to statmap, everything else to ``application``.

    ``statmap``: a ``WSGIApp`` (default: ``WSGIApp(**options)``). For Django,
    in ``wsgi.py``: ``application = mount_wsgi(get_wsgi_application())``;
    for Flask: ``app.wsgi_app = mount_wsgi(app.wsgi_app)``.
    """
    prefix = "/" + prefix.strip("/")
    inner = statmap if statmap is not None else WSGIApp(**options)

    def dispatch(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "") or ""
        if path == prefix or path.startswith(prefix + "/"):
            environ = dict(environ)
            environ["SCRIPT_NAME"] = (environ.get("SCRIPT_NAME", "") or "") + prefix
            environ["PATH_INFO"] = path[len(prefix) :]
            return inner(environ, start_response)
        return application(environ, start_response)

    return dispatch
