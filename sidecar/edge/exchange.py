"""One request's bookkeeping: its id, the refusal response, and the metrics and log line written at its end."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from random import getrandbits
from typing import Any, Final

from sidecar.edge.asgi import Scope, Send
from sidecar.edge.decide import Decision
from sidecar.edge.problem import problem_body, problem_headers
from sidecar.observe import log
from sidecar.observe.metrics import NO_ROUTE_LABEL, Metrics
from sidecar.observe.trace_context import trace_id
from sidecar.policy.cors import request_origin, response_headers
from sidecar.policy.model import Mode
from sidecar.reasons import Reason, outcome
from sidecar.upstream.target import Headers

__all__ = ["Entry", "finish", "refuse", "refusal_headers", "request_id"]

Entry = dict[str, Any]
_REQUEST_ID: Final = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


def request_id(headers: Sequence[tuple[bytes, bytes]]) -> str:
    """A well-formed incoming X-Request-Id is kept (so callers can correlate); anything else is replaced."""
    for name, value in headers:
        if name == b"x-request-id" and _REQUEST_ID.fullmatch(value):
            return value.decode("ascii")
    return f"{getrandbits(96):024x}"  # 24 hex digits as before; os.urandom's getrandom(2) was 3% of a request


def start_entry(scope: Scope, rid: str, method: str, decision: Decision) -> Entry:
    """The access-log fields known once the head is decided. Identity fields are the verified ones only."""
    client = scope.get("client")
    entry: Entry = {
        "request_id": rid,
        "method": method,
        "path": decision.path,
        "route": decision.route.name if decision.route is not None else None,
        "mode": decision.mode.value,
        "client_ip": client[0] if client else None,
    }
    trace = trace_id(scope["headers"])  # a valid W3C traceparent's trace id only
    if trace is not None:
        entry["trace_id"] = trace
    identity = decision.identity
    if identity is not None:
        app = identity.claims.get("azp") or identity.claims.get("appid")
        entry.update(provider=identity.provider, subject=identity.subject, app=app if isinstance(app, str) else None)
    if decision.auth_seconds:
        entry["auth_ms"] = round(decision.auth_seconds * 1000, 3)
    if decision.reason is not None:
        entry["reason"] = decision.reason.value
    return entry


def count_refusal(metrics: Metrics, decision: Decision) -> None:
    """One increment per refused (or, in audit mode, would-be refused) request."""
    assert decision.reason is not None
    route = decision.route.name if decision.route is not None else NO_ROUTE_LABEL
    metrics.rejected(route, decision.reason, decision.mode if decision.forwarded else Mode.ENFORCE)


def refusal_headers(decision: Decision, headers: Headers, method: str) -> Headers:
    """What a refusal adds for the caller: when to retry (Retry-After), and on a route with `cors` the
    Access-Control-* headers, so that a page can read the refusal."""
    extra = []
    if decision.retry_after is not None:
        extra.append((b"retry-after", str(decision.retry_after).encode("ascii")))
    route = decision.route
    if route is not None and route.cors is not None:
        extra += response_headers(route.cors, request_origin(headers), method, refusal=True)
    return extra


async def refuse(
    send: Send,
    reason: Reason,
    realm: str,
    rid: str,
    route: str | None,
    entry: Entry,
    allow: Sequence[str] = (),
    status: int | None = None,
    extra: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """Answer with the problem+json refusal. `status` overrides the table's (forward-auth speaks only 401/403);
    `extra` headers are added (Retry-After, CORS: see `refusal_headers`)."""
    body = problem_body(reason, rid, route, status)
    code = status or outcome(reason).status
    headers = problem_headers(reason, realm, rid, body, allow)
    headers.extend(extra)
    await send({"type": "http.response.start", "status": code, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
    entry.update(status=code, reason=reason.value)


def finish(metrics: Metrics, entry: Entry, started: float) -> None:
    elapsed = time.perf_counter() - started
    route = entry.get("route") or NO_ROUTE_LABEL
    status = entry.setdefault("status", 500)
    metrics.answered(route, entry["method"], status, elapsed)
    entry["duration_ms"] = round(elapsed * 1000, 3)
    log.access(entry)
