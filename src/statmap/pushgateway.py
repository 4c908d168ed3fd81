"""Push the aggregate of a directory, or one file, to a Prometheus Pushgateway.

For batch and cron jobs that end before a scrape would see them: at the end
of the job, ``statmap.push("http://gateway:9091", job="nightly")`` (or
``statmap push --gateway URL --job NAME``) sends what the job's processes
published. ``file=`` pushes one file alone: a finished process's, post-mortem.

The body is the Prometheus text format (the Pushgateway's), the URL
``/metrics/job/JOB{/LABEL/VALUE}`` with values that need it in the
``@base64`` form. ``PUT`` (the default) replaces every metric of the group,
as prometheus_client's ``push_to_gateway``; ``add=True`` sends ``POST``,
which replaces only metrics of the same names (``pushadd_to_gateway``).

Connection failures, timeouts and 5xx answers are retried with exponential
backoff; a 4xx answer is the gateway refusing what was sent (a bad name, a
label clash, an inconsistent push) and is not retried. Either way, when the
push does not succeed, ``PushError`` says what the gateway answered.
"""

from __future__ import annotations

import base64
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .collect import Collection, Collector
from .errors import StatmapError

_LABEL_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
USER_AGENT = "statmap-push"


class PushError(StatmapError):
    """A push did not succeed: refused (4xx) or not delivered after the retries."""


@dataclass(frozen=True)
class PushResult:
    url: str
    status: int
    attempts: int
    series: int  # sample lines sent


class FileCollector(Collector):
    """A Collector of one file (``push --file``): a finished process's file, read post-mortem."""

    def __init__(self, path: str, **options: Any) -> None:
        path = os.path.abspath(path)
        super().__init__(os.path.dirname(path), **options)
        self.file = path

    def _scan(self) -> list[tuple[str, int]]:
        try:
            inode = os.stat(self.file, follow_symlinks=False).st_ino
        except OSError as exc:
            raise StatmapError(f"{self.file}: cannot read: {exc.strerror}") from None
        return [(os.path.basename(self.file), inode)]


def _segment(value: str) -> str:
    """One path segment of the grouping key: as is when safe, else ``@base64`` (URL-safe, as the gateway wants)."""
    if value and "/" not in value and urllib.parse.quote(value, safe="") == value:
        return value
    if not value:
        return "="  # the gateway's form for an empty value
    return base64.urlsafe_b64encode(value.encode()).decode()


def gateway_url(gateway: str, job: str, grouping: Mapping[str, str] | None = None) -> str:
    """The group's URL on ``gateway`` (``host:port`` or ``http(s)://host:port[/prefix]``)."""
    if not job:
        raise ValueError("a job name is required")
    base = gateway if "://" in gateway else f"http://{gateway}"
    parsed = urllib.parse.urlsplit(base)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"gateway {gateway!r}: expected http(s)://HOST:PORT")
    parts = [base.rstrip("/"), "metrics"]
    for key, value in (("job", job), *(grouping or {}).items()):
        if not _LABEL_RE.match(key):
            raise ValueError(f"grouping label {key!r} is not a valid label name")
        seg = _segment(value)
        parts += [f"{key}@base64" if seg != value else key, seg]
    return "/".join(parts)


def render(collection: Collection, **exposer_options: Any) -> str:
    from .expose import Exposer

    return Exposer(**exposer_options).prometheus(collection)


def send(
    url: str,
    body: bytes,
    *,
    method: str = "PUT",
    headers: Mapping[str, str] | None = None,
    content_type: str = "text/plain; version=0.0.4; charset=utf-8",
    retries: int = 3,
    backoff: float = 0.5,
    timeout: float = 10.0,
    what: str = "gateway",
) -> tuple[int, int]:
    """Send ``body`` to ``url``, retrying what may pass later; (HTTP status, attempts), or PushError."""
    last = ""
    attempts = 0
    for attempt in range(retries + 1):
        attempts += 1
        req = urllib.request.Request(url, data=body, method=method)
        req.add_header("Content-Type", content_type)
        req.add_header("User-Agent", USER_AGENT)
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                resp.read()
                return int(resp.status), attempts
        except urllib.error.HTTPError as exc:
            detail = _detail(exc)
            last = f"{what} {_safe(url)} answered {exc.code} {exc.reason}" + (f": {detail}" if detail else "")
            if exc.code < 500 and exc.code != 429:
                raise PushError(f"{last} (refused; not retried)") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            last = f"{what} {_safe(url)}: {getattr(reason, 'strerror', None) or reason}"
        if attempt < retries:
            time.sleep(backoff * (2**attempt))
    raise PushError(f"{last} (gave up after {attempts} attempts)")


def _detail(exc: urllib.error.HTTPError) -> str:
    try:
        text = exc.read(2000).decode("utf-8", "replace").strip()
    except OSError:
        return ""
    return " ".join(text.split())[:500]


def _safe(url: str) -> str:
    """``url`` without credentials, for messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.username or parts.password:
        parts = parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else ""))  # type: ignore[operator]
    return urllib.parse.urlunsplit(parts)


def push(
    gateway: str,
    job: str,
    *,
    grouping: Mapping[str, str] | None = None,
    directory: str | None = None,
    file: str | None = None,
    publishers: Iterable[str] | None = None,
    add: bool = False,
    headers: Mapping[str, str] | None = None,
    retries: int = 3,
    backoff: float = 0.5,
    timeout: float = 10.0,
    process_metrics: bool = False,
    **exposer_options: Any,
) -> PushResult:
    """Push the aggregate of ``directory`` (default: the default directory), or ``file`` alone, to a Pushgateway.

    Raises ``PushError`` when the gateway refuses or cannot be reached after
    ``retries`` retries (backoff ``backoff`` s, doubling), ``ValueError`` for a bad URL or grouping.
    """
    from .directory import default_directory

    url = gateway_url(gateway, job, grouping)
    collector: Collector
    if file is not None:
        collector = FileCollector(file, publishers=publishers, process_metrics=process_metrics)
    else:
        collector = Collector(directory or default_directory(), publishers=publishers, process_metrics=process_metrics)
    with collector:
        collection = collector.collect()
    if file is not None and collection.errors:
        raise PushError("; ".join(str(e) for e in collection.errors))
    text = render(collection, **exposer_options)
    status, attempts = send(
        url, text.encode(), method="POST" if add else "PUT", headers=headers, retries=retries, backoff=backoff,
        timeout=timeout,
    )  # fmt: skip
    series = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
    return PushResult(_safe(url), status, attempts, series)
