"""The admin app on its own listener: /metrics, /healthz, /readyz. Never served on the proxy port.

A plain ASGI callable: Starlette cost every worker ~0.9 MiB of RSS and its import time for three fixed paths.
The answers are the ones Starlette gave (statuses, bodies, content types, 405 with Allow, 404, and the 307 from a
path with a trailing slash), except that HEAD gets no body here rather than one the server drops.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Protocol

from sidecar.asgi import Receive, Scope, Send, lifespan

__all__ = ["AdminApp", "Readiness", "admin_app"]

Exposition = Callable[[], tuple[bytes, str]]
_Answer = tuple[int, list[tuple[bytes, bytes]], bytes]

_TEXT: Final = (b"content-type", b"text/plain; charset=utf-8")
_PATHS: Final = frozenset({"/metrics", "/healthz", "/readyz"})
_METHODS: Final = frozenset({"GET", "HEAD"})  # on every path, /metrics too (Starlette added HEAD to GET routes)


class Readiness(Protocol):
    """What /readyz asks of the runtime."""

    @property
    def draining(self) -> bool: ...

    def ready(self) -> bool: ...


class AdminApp:
    def __init__(self, runtime: Readiness, exposition: Exposition) -> None:
        self._runtime = runtime
        self._exposition = exposition

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await lifespan(receive, send)
            return
        method: str = scope["method"]
        status, headers, body = self._answer(method, scope["path"])
        headers.append((b"content-length", str(len(body)).encode("ascii")))  # HEAD: the length GET would have
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body, "more_body": False})

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
    """`exposition()` renders the metrics (one registry, or every worker's in multiprocess mode)."""
    return AdminApp(runtime, exposition)
