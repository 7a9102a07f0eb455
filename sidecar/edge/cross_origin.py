"""CORS in the request path: preflights answered by the sidecar, Access-Control-* headers on forwarded answers.

A preflight (OPTIONS with Origin and Access-Control-Request-Method) for a path whose route, for the requested
method, has `cors` is answered here without a token and without calling the upstream: 204 with the allow headers,
or 403 `cors_refused`. Every other request still needs its token. The decisions are sidecar.policy.cors's.
"""

from __future__ import annotations

from sidecar.edge.asgi import Message, Scope, Send
from sidecar.edge.decide import Decision
from sidecar.edge.exchange import Exchange, Verdict
from sidecar.edge.paths import normalise
from sidecar.edge.runtime import Runtime, Snapshot
from sidecar.policy.cors import (
    PreflightRequest,
    preflight_failure,
    preflight_headers,
    preflight_request,
    preflight_route,
    request_origin,
    response_headers,
)
from sidecar.policy.model import Cors, Mode
from sidecar.reasons import Reason, Rejection
from sidecar.upstream.target import Headers

__all__ = ["answer_preflight", "preflight", "with_cors"]


def preflight(
    snapshot: Snapshot, method: str, raw_path: bytes, headers: Headers, audit_all: bool = False
) -> tuple[Decision, PreflightRequest, str | None] | None:
    """The decision on a CORS preflight, the preflight, and what it asks for that is not allowed (None: nothing).
    None when the request is not a preflight that a route with `cors` owns: then it is an ordinary request."""
    request = preflight_request(method, headers)
    if request is None:
        return None
    try:
        path = normalise(raw_path)
    except Rejection:
        return None  # the ordinary path refuses it, in the one place that does
    route = preflight_route(snapshot.policy.table, path, request)
    if route is None or route.cors is None:
        return None
    failure = preflight_failure(route.cors, request)
    mode = Mode.AUDIT if audit_all else route.mode
    return Decision(path, route, reason=None if failure is None else Reason.CORS_REFUSED, mode=mode), request, failure


async def answer_preflight(
    runtime: Runtime,
    snapshot: Snapshot,
    scope: Scope,
    send: Send,
    asked: tuple[str, bytes],
    rid: str,
    started: float,
    forwarded_for: bytes | None,
    forward_auth: bool = False,
) -> bool:
    """Answer the preflight for `asked` (method, raw path) if it is one; False: it is not, decide it as usual.
    `forwarded_for` is the request's X-Forwarded-For (the client address of the log line, behind trusted proxies).
    Forward-auth answers 200 (the ingress passes the preflight on) instead of 204 with the allow headers."""
    found = preflight(snapshot, asked[0], asked[1], scope["headers"], runtime.audit_all)
    if found is None:
        return False
    decision, request, failure = found
    route = decision.route
    assert route is not None and route.cors is not None
    exchange = Exchange.begin(
        runtime,
        snapshot,
        scope,
        rid,
        asked[0],
        decision,
        started,
        forwarded_for,
        forward_auth=forward_auth,
        cors=failure or "allowed",
    )
    try:
        if await exchange.enforce(send, [(b"vary", b"Origin")]):  # cors_refused is never audit-forwarded
            status = await _allow(send, route.cors, request, rid, forward_auth)
            exchange.answered(status, Verdict.PREFLIGHT)
    finally:
        exchange.finish()
    return True


async def _allow(send: Send, cors: Cors, request: PreflightRequest, rid: str, forward_auth: bool) -> int:
    status = 200 if forward_auth else 204
    headers = [(b"x-request-id", rid.encode("ascii"))]
    if forward_auth:
        headers.append((b"content-length", b"0"))
    else:
        headers += preflight_headers(cors, request)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    return status


def with_cors(send: Send, cors: Cors, headers: Headers, method: str) -> Send:
    """`send` for a forwarded answer on a route with `cors`: the sidecar owns CORS there, so the upstream's own
    Access-Control-* headers are dropped (two Access-Control-Allow-Origin make a browser refuse) and ours added."""
    added = response_headers(cors, request_origin(headers), method)

    async def send_with_cors(message: Message) -> None:
        if message["type"] == "http.response.start":
            kept = [
                (name, value) for name, value in message["headers"] if not name.lower().startswith(b"access-control-")
            ]
            message = {**message, "headers": kept + added}
        await send(message)

    return send_with_cors
