"""The proxy as a plain ASGI callable: decide on the head, then stream to the upstream (or refuse)."""

from __future__ import annotations

import time
from typing import Any

from sidecar.decide import Decision, decide
from sidecar.decision import Rejection
from sidecar.exchange import Entry, count_refusal, finish, refuse, request_id, start_entry
from sidecar.forward_auth import ForwardAuth
from sidecar.proxy import ClientGone, Receive, Send, UpstreamBroken
from sidecar.runtime import Runtime, Snapshot
from sidecar.upstream import request_headers, target, target_url

__all__ = ["Gate"]

Scope = dict[str, Any]


class Gate:
    """normalise -> route -> token -> verify -> authorize -> forward. Admin endpoints are never served here."""

    def __init__(self, runtime: Runtime, forward_auth: ForwardAuth | None = None) -> None:
        self._runtime = runtime
        self._forward_auth = forward_auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await _lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        runtime = self._runtime
        snapshot = runtime.current  # one snapshot per request: a reload never splits a request
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        rid = request_id(headers)
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode("ascii")
        if self._forward_auth is not None and self._forward_auth.owns(raw_path):
            await self._forward_auth.answer(scope, send, snapshot, rid, started)
            return
        method: str = scope["method"]
        decision = await decide(snapshot, method, raw_path, headers, runtime.audit_all)
        entry = start_entry(scope, rid, method, decision)
        try:
            if decision.reason is not None:
                count_refusal(runtime.metrics, decision)
                if not decision.forwarded:
                    entry["decision"] = "reject"
                    route = decision.route.name if decision.route is not None else None
                    await refuse(send, decision.reason, snapshot.policy.realm, rid, route, entry, decision.allow)
                    return
                entry["decision"] = "audit_forward"
            await self._forward(scope, receive, send, snapshot, decision, rid, entry)
        finally:
            finish(runtime.metrics, entry, started)

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        snapshot: Snapshot,
        decision: Decision,
        rid: str,
        entry: Entry,
    ) -> None:
        runtime = self._runtime
        route = decision.route
        assert route is not None
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        upstream_headers = request_headers(
            headers,
            forward_token=route.forward_token,
            names=snapshot.policy.identity_headers,
            identity=decision.identity,
            client_ip=entry["client_ip"] or "",
            scheme=scope.get("scheme", "http"),
            request_id=rid,
        )
        url = target_url(target(route.upstream), decision.rest, scope.get("query_string", b""))
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
                [(b"x-request-id", rid.encode("ascii"))],
            )
        except Rejection as rejection:  # the upstream failed before answering: 502 / 504
            runtime.metrics.upstream_errors.labels(route.name, rejection.reason.value).inc()
            entry["decision"] = "upstream_error"
            await refuse(send, rejection.reason, snapshot.policy.realm, rid, route.name, entry)
            return
        except ClientGone:
            entry.update(status=499, decision="client_gone")
            return
        except UpstreamBroken:
            runtime.metrics.upstream_errors.labels(route.name, "broken_stream").inc()
            entry.update(status=502, decision="upstream_broken")
            raise  # the response has started: only closing the connection tells the client
        entry.update(status=forwarded.status, bytes_in=forwarded.bytes_in, bytes_out=forwarded.bytes_out)
        entry["upstream_ms"] = round(forwarded.upstream_seconds * 1000, 3)
        runtime.metrics.upstream_duration.labels(route.name).observe(forwarded.upstream_seconds)


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
