"""The proxy app (the gate: decide on the head, then stream) and the admin app (metrics and probes)."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from typing import Any, Final

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route as HttpRoute

from sidecar import log
from sidecar.decision import Reason, Rejection, outcome
from sidecar.metrics import NO_ROUTE_LABEL, method_label
from sidecar.paths import normalise
from sidecar.policy.allow import authorize
from sidecar.policy.model import Anyone, Identity, Mode, Route
from sidecar.policy.routes import NoRoute, WrongMethod
from sidecar.problem import problem_body, problem_headers
from sidecar.proxy import ClientGone, Receive, Send, UpstreamBroken
from sidecar.runtime import Runtime
from sidecar.tokens import bearer
from sidecar.upstream import request_headers, target, target_url

__all__ = ["Gate", "admin_app"]

Scope = dict[str, Any]
_REQUEST_ID: Final = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


class Gate:
    """The data plane as a plain ASGI callable: normalise -> route -> token -> verify -> authorize -> forward."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await _lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        runtime = self._runtime
        policy = runtime.policy  # one snapshot per request: a reload never splits a request
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        request_id = _request_id(headers)
        method: str = scope["method"]
        entry: dict[str, Any] = {"request_id": request_id, "method": method}
        route: Route | None = None
        try:
            path = normalise(scope.get("raw_path") or scope["path"].encode("ascii"))
            entry["path"] = path
            hit = policy.table.lookup(method, path)
            if isinstance(hit, NoRoute):
                raise Rejection(Reason.NO_ROUTE)
            if isinstance(hit, WrongMethod):
                await self._refuse(send, Reason.METHOD_NOT_ALLOWED, request_id, None, entry, hit.allow)
                return
            route = hit.route
            entry["route"] = route.name
            identity: Identity | None = None
            if not isinstance(route.allow, Anyone):
                identity, reason = await self._authenticate(route, headers, entry)
                if reason is not None:
                    if route.mode is Mode.ENFORCE:
                        return await self._refuse(send, reason, request_id, route, entry)
                    # Audit: the refusal is counted and logged, and the request goes on.
                    runtime.metrics.rejected(route.name, reason, Mode.AUDIT)
                    entry.update(decision="audit_forward", reason=reason.value, mode=Mode.AUDIT.value)
            await self._forward(scope, receive, send, route, hit.rest, identity, request_id, entry)
        except Rejection as rejection:
            await self._refuse(send, rejection.reason, request_id, route, entry)
        finally:
            _finish(runtime, entry, started)

    async def _authenticate(
        self, route: Route, headers: list[tuple[bytes, bytes]], entry: dict[str, Any]
    ) -> tuple[Identity | None, Reason | None]:
        """The verified identity (None when the token did not verify) and why the route refuses it, if it does."""
        try:
            token = bearer(headers)
            if token is None:
                return None, Reason.MISSING_TOKEN
            identity = await self._runtime.verifier.verify(token, route.providers)
        except Rejection as rejection:
            return None, rejection.reason
        entry["provider"] = identity.provider
        entry["subject"] = identity.subject
        if authorize(route, identity) is None:
            return identity, Reason.NOT_ALLOWED
        return identity, None

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        route: Route,
        rest: str,
        identity: Identity | None,
        request_id: str,
        entry: dict[str, Any],
    ) -> None:
        runtime = self._runtime
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        client = scope.get("client")
        upstream_headers = request_headers(
            headers,
            forward_token=route.forward_token,
            names=runtime.policy.identity_headers,
            identity=identity,
            client_ip=client[0] if client else "",
            scheme=scope.get("scheme", "http"),
            request_id=request_id,
        )
        url = target_url(target(route.upstream), rest, scope.get("query_string", b""))
        entry.setdefault("decision", "allow")
        try:
            forwarded = await runtime.forwarder.forward(
                scope["method"],
                url,
                upstream_headers,
                receive,
                send,
                route.timeout,
                _has_body(headers),
                [(b"x-request-id", request_id.encode("ascii"))],
            )
        except Rejection as rejection:
            runtime.metrics.upstream_errors.labels(route.name, rejection.reason.value).inc()
            raise
        except ClientGone:
            entry.update(status=499, decision="client_gone")
            return
        except UpstreamBroken:
            runtime.metrics.upstream_errors.labels(route.name, "broken_stream").inc()
            entry.update(status=502, decision="upstream_broken")
            raise
        entry.update(status=forwarded.status, bytes_in=forwarded.bytes_in, bytes_out=forwarded.bytes_out)
        entry["upstream_ms"] = round(forwarded.upstream_seconds * 1000, 3)
        runtime.metrics.upstream_duration.labels(route.name).observe(forwarded.upstream_seconds)

    async def _refuse(
        self,
        send: Send,
        reason: Reason,
        request_id: str,
        route: Route | None,
        entry: dict[str, Any],
        allow: Sequence[str] = (),
    ) -> None:
        policy = self._runtime.policy
        route_name = route.name if route is not None else None
        body = problem_body(reason, request_id, route_name)
        start = {
            "type": "http.response.start",
            "status": outcome(reason).status,
            "headers": problem_headers(reason, policy.realm, request_id, body, allow),
        }
        await send(start)
        await send({"type": "http.response.body", "body": body, "more_body": False})
        if reason not in (Reason.UPSTREAM_UNREACHABLE, Reason.UPSTREAM_TIMEOUT):
            self._runtime.metrics.rejected(route_name or NO_ROUTE_LABEL, reason, Mode.ENFORCE)
            entry["decision"] = "reject"
        entry.update(status=start["status"], reason=reason.value)


def _finish(runtime: Runtime, entry: dict[str, Any], started: float) -> None:
    elapsed = time.perf_counter() - started
    route = entry.get("route", NO_ROUTE_LABEL)
    status = entry.get("status", 500)
    metrics = runtime.metrics
    metrics.requests.labels(route, method_label(entry["method"]), str(status)).inc()
    metrics.request_duration.labels(route).observe(elapsed)
    entry["duration_ms"] = round(elapsed * 1000, 3)
    log.access(entry)


def _request_id(headers: list[tuple[bytes, bytes]]) -> str:
    """A well-formed incoming X-Request-Id is kept (so callers can correlate); anything else is replaced."""
    for name, value in headers:
        if name == b"x-request-id" and _REQUEST_ID.fullmatch(value):
            return value.decode("ascii")
    return os.urandom(12).hex()


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def admin_app(runtime: Runtime) -> Starlette:
    """Metrics and probes on their own listener: never served on the proxy port."""

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(_: Request) -> Response:
        if runtime.ready():
            return PlainTextResponse("ready\n")
        return PlainTextResponse("not ready: provider keys not fetched yet\n", status_code=503)

    return Starlette(
        routes=[
            HttpRoute("/metrics", metrics, methods=["GET"]),
            HttpRoute("/healthz", healthz, methods=["GET", "HEAD"]),
            HttpRoute("/readyz", readyz, methods=["GET", "HEAD"]),
        ]
    )
