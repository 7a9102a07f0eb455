"""The admin app on its own listener: /metrics, /healthz, /readyz. Never served on the proxy port.

A plain ASGI callable: Starlette cost every worker ~0.9 MiB of RSS and its import time for three fixed paths.
The answers are the ones Starlette gave (statuses, bodies, content types, 405 with Allow, 404, and the 307 from a
path with a trailing slash), except that HEAD gets no body here rather than one the server drops.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Final, Protocol

from sidecar.asgi import Receive, Scope, Send, lifespan

__all__ = ["METRICS_BURST", "METRICS_PER_SECOND", "AdminApp", "Pacer", "Readiness", "admin_app"]

Exposition = Callable[[], tuple[bytes, str]]
_Answer = tuple[int, list[tuple[bytes, bytes]], bytes]

_TEXT: Final = (b"content-type", b"text/plain; charset=utf-8")
_PATHS: Final = frozenset({"/metrics", "/healthz", "/readyz"})
_METHODS: Final = frozenset({"GET", "HEAD"})  # on every path, /metrics too (Starlette added HEAD to GET routes)
# Rendering the exposition costs milliseconds of the event loop the proxy shares (more with several workers' files):
# per worker at most this many a second after a burst (a scrape past them waits its turn), far above what scrapers
# need. Probes are never paced.
METRICS_PER_SECOND: Final = 10.0
METRICS_BURST: Final = 10


class Pacer:
    """At most `rate` a second after a burst of `burst` (GCRA: each call moves a theoretical arrival time on)."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = 1.0 / rate
        self._tolerance = self._interval * (burst - 1)
        self._due = 0.0  # when the next call would be on schedule
        self._clock = clock

    def wait(self) -> float:
        """Seconds to wait before going ahead; the slot is taken. Waits never pile up behind a flood: a connection
        asks one request at a time, and the admin listener holds at most 32 (3.2 s of renders at 10 a second)."""
        now = self._clock()
        due = max(self._due, now)
        self._due = due + self._interval
        return max(0.0, due - self._tolerance - now)


class Readiness(Protocol):
    """What /readyz asks of the runtime."""

    @property
    def draining(self) -> bool: ...

    def ready(self) -> bool: ...


class AdminApp:
    def __init__(self, runtime: Readiness, exposition: Exposition, pacer: Pacer) -> None:
        self._runtime = runtime
        self._exposition = exposition
        self._pacer = pacer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await lifespan(receive, send)
            return
        method: str = scope["method"]
        status, headers, body = await self._paced(method, scope["path"])
        headers.append((b"content-length", str(len(body)).encode("ascii")))  # HEAD: the length GET would have
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body, "more_body": False})

    async def _paced(self, method: str, path: str) -> _Answer:
        if path == "/metrics" and method in _METHODS:
            wait = self._pacer.wait()
            if wait > 0:
                await asyncio.sleep(wait)
        return self._answer(method, path)

    def _answer(self, method: str, path: str) -> _Answer:
        if path not in _PATHS:
            if path[:-1] in _PATHS and path.endswith("/"):
                # Relative, unlike Starlette's absolute one built from the Host header: the same target for a client.
                return 307, [(b"location", path[:-1].encode("ascii"))], b""
            return 404, [_TEXT], b"Not Found"
        if method not in _METHODS:
            return 405, [(b"allow", b"GET, HEAD"), _TEXT], b"Method Not Allowed"
        if path == "/metrics":
            body, content_type = self._exposition()  # one registry, or every worker's in multiprocess mode
            return 200, [(b"content-type", content_type.encode("latin-1"))], body
        if path == "/healthz":
            return 200, [_TEXT], b"ok\n"
        if self._runtime.draining:
            return 503, [_TEXT], b"not ready: draining\n"
        if self._runtime.ready():
            return 200, [_TEXT], b"ready\n"
        return 503, [_TEXT], b"not ready: provider keys not fetched yet\n"


def admin_app(runtime: Readiness, exposition: Exposition) -> AdminApp:
    """`exposition()` renders the metrics (one registry, or every worker's in multiprocess mode), paced."""
    return AdminApp(runtime, exposition, Pacer(METRICS_PER_SECOND, METRICS_BURST))
