"""The admin app on its own listener: /metrics, /healthz, /readyz. Never served on the proxy port.

A plain ASGI callable: Starlette cost every worker ~0.9 MiB of RSS and its import time for three fixed paths.
The answers are the ones Starlette gave (statuses, bodies, content types, 405 with Allow, 404, and the 307 from a
path with a trailing slash), except that HEAD gets no body here rather than one the server drops.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Final, Protocol

from sidecar.edge.asgi import Receive, Scope, Send, lifespan
from sidecar.edge.problem import problem_body, problem_headers
from sidecar.observe.log import logger
from sidecar.reasons import Reason, outcome

__all__ = [
    "METRICS_BURST",
    "METRICS_MAX_WAIT",
    "METRICS_PER_SECOND",
    "METRICS_RETRY_AFTER",
    "AdminApp",
    "Pacer",
    "Readiness",
    "admin_app",
]

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
# A scrape past its turn waits at most this long (so at most 5 wait at 10 a second), else 503 `metrics_busy` at
# once: without a bound, scrapes whose clients had left piled up for ever (each a task and its buffers) and held back
# every later scrape by a tenth of a second each.
METRICS_MAX_WAIT: Final = 0.5
METRICS_RETRY_AFTER: Final = 1  # seconds, in the refusal's Retry-After: the pacer has slots again by then


class Pacer:
    """At most `rate` a second after a burst of `burst` (GCRA: each call moves a theoretical arrival time on)."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = 1.0 / rate
        self._tolerance = self._interval * (burst - 1)
        self._due = 0.0  # when the next call would be on schedule
        self._clock = clock

    def wait(self, most: float = float("inf")) -> float | None:
        """Seconds to wait before going ahead, the slot taken; or None, no slot taken, when that would be more
        than `most` seconds (so that waits never pile up behind a flood)."""
        now = self._clock()
        due = max(self._due, now)
        wait = max(0.0, due - self._tolerance - now)
        if wait > most:
            return None
        self._due = due + self._interval
        return wait

    def give_back(self) -> None:
        """Returns a slot taken but not used (its client left while waiting), so that it holds back nobody."""
        self._due -= self._interval


class Readiness(Protocol):
    """What /readyz asks of the runtime."""

    @property
    def draining(self) -> bool: ...

    def ready(self) -> bool: ...


class AdminApp:
    def __init__(
        self, runtime: Readiness, exposition: Exposition, pacer: Pacer, refused: Callable[[str], None] | None = None
    ) -> None:
        self._runtime = runtime
        self._exposition = exposition
        self._pacer = pacer
        self._refused = refused  # counts an admin refusal by reason (sidecar_admin_refusals_total)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await lifespan(receive, send)
            return
        method: str = scope["method"]
        answer = await self._paced(method, scope["path"], receive, scope.get("client"))
        if answer is None:  # the client left while its scrape waited: nobody to answer, nothing to log
            return
        status, headers, body = answer
        headers.append((b"content-length", str(len(body)).encode("ascii")))  # HEAD: the length GET would have
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body, "more_body": False})

    async def _paced(self, method: str, path: str, receive: Receive, client: object) -> _Answer | None:
        if path == "/metrics" and method in _METHODS:
            wait = self._pacer.wait(METRICS_MAX_WAIT)
            if wait is None:
                return self._busy(client)
            if wait > 0 and await _left_within(receive, wait):
                self._pacer.give_back()
                return None
        return self._answer(method, path)

    def _busy(self, client: object) -> _Answer:
        """503 problem+json `metrics_busy` with Retry-After, counted and logged like the admin listener's other
        refusals (never as a proxy request)."""
        reason = Reason.METRICS_BUSY
        if self._refused is not None:
            self._refused(reason.value)
        client_ip = client[0] if isinstance(client, tuple | list) and client else None
        logger.warning("admin refusal", extra={"fields": {"reason": reason.value, "client_ip": client_ip}})
        rid = os.urandom(12).hex()
        body = problem_body(reason, rid, None)
        headers = [
            (name, value) for name, value in problem_headers(reason, "", rid, body) if name != b"content-length"
        ]  # the length is added with every answer's
        headers.append((b"retry-after", str(METRICS_RETRY_AFTER).encode("ascii")))
        return outcome(reason).status, headers, body

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


async def _left_within(receive: Receive, seconds: float) -> bool:
    """Waits `seconds`; True as soon as the client has gone (http.disconnect), so that a waiter outlives no client."""
    watcher = asyncio.ensure_future(_disconnected(receive))
    try:
        done, _ = await asyncio.wait({watcher}, timeout=seconds)
    finally:
        watcher.cancel()
    return bool(done)


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def admin_app(runtime: Readiness, exposition: Exposition, refused: Callable[[str], None] | None = None) -> AdminApp:
    """`exposition()` renders the metrics (one registry, or every worker's in multiprocess mode), paced;
    `refused(reason)` counts a scrape refused for want of a turn."""
    return AdminApp(runtime, exposition, Pacer(METRICS_PER_SECOND, METRICS_BURST), refused)
