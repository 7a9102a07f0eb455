"""The admin app on its own listener: /metrics, /healthz, /readyz. Never served on the proxy port."""

from __future__ import annotations

from collections.abc import Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from sidecar.runtime import Runtime

__all__ = ["admin_app"]


def admin_app(runtime: Runtime, exposition: Callable[[], tuple[bytes, str]]) -> Starlette:
    """`exposition()` renders the metrics (one registry, or every worker's in multiprocess mode)."""

    async def metrics(_: Request) -> Response:
        body, content_type = exposition()
        return Response(body, media_type=content_type)

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(_: Request) -> Response:
        if runtime.draining:
            return PlainTextResponse("not ready: draining\n", status_code=503)
        if runtime.ready():
            return PlainTextResponse("ready\n")
        return PlainTextResponse("not ready: provider keys not fetched yet\n", status_code=503)

    return Starlette(
        routes=[
            Route("/metrics", metrics, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET", "HEAD"]),
            Route("/readyz", readyz, methods=["GET", "HEAD"]),
        ]
    )
