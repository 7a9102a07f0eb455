"""The proxy as a plain ASGI callable: decide on the head, then stream to the upstream (or refuse)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final

from sidecar.edge.admission import Admission, conflict, limit_headers
from sidecar.edge.asgi import Receive, Scope, Send, lifespan
from sidecar.edge.cross_origin import answer_preflight, with_cors
from sidecar.edge.decide import Decision, decide
from sidecar.edge.exchange import Entry, count_refusal, finish, refusal_headers, refuse, request_id, start_entry
from sidecar.edge.forward import ClientGone, UpstreamBroken
from sidecar.edge.forward_auth import ForwardAuth
from sidecar.edge.forwarded import Origin, origin
from sidecar.edge.head import Head, read_head
from sidecar.edge.protocol import SENDING
from sidecar.edge.response_urls import response_urls
from sidecar.edge.runtime import Runtime, Snapshot
from sidecar.policy.model import Mode, Route
from sidecar.reasons import Reason, Rejection
from sidecar.upstream.pool import UpstreamError
from sidecar.upstream.target import request_headers, target, target_url

__all__ = ["Gate"]

# What the forwarder refuses that is a limit of the route, not a failure of the upstream.
_LIMITS: Final = frozenset({Reason.BODY_TOO_LARGE, Reason.BODY_TIMEOUT, Reason.POOL_SHARE_FULL})


class Gate:
    """normalise -> route -> token -> verify -> authorize -> forward. Admin endpoints are never served here."""

    def __init__(self, runtime: Runtime, forward_auth: ForwardAuth | None = None) -> None:
        self._runtime = runtime
        self._forward_auth = forward_auth
        self._admission = Admission()  # requests in flight per route (max_concurrent)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await lifespan(receive, send)

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
        head = read_head(headers)  # the one scan for framing conflicts, body size and X-Forwarded-For
        if method == "OPTIONS" and not head.conflict:
            asked = (method, raw_path)
            if await answer_preflight(runtime, snapshot, scope, send, asked, rid, started, head.forwarded_for):
                return  # a CORS preflight, answered without a token
        decision = conflict(head) or await decide(snapshot, method, raw_path, headers, runtime.audit_all)
        entry = start_entry(scope, rid, method, decision)
        source = origin(entry["client_ip"], head.forwarded_for, snapshot.policy.trusted_proxies)
        entry["client_ip"] = source.client_ip
        try:
            if decision.reason is not None:
                count_refusal(runtime.metrics, decision)
                if not decision.forwarded:
                    entry["decision"] = "reject"
                    route = decision.route.name if decision.route is not None else None
                    extra = refusal_headers(decision, headers, method)
                    await refuse(
                        send, decision.reason, snapshot.policy.realm, rid, route, entry, decision.allow, extra=extra
                    )
                    return
                entry["decision"] = "audit_forward"
            await self._forward(_Call(scope, receive, send, snapshot, decision, rid, entry, head, source))
        finally:
            finish(runtime.metrics, entry, started)

    async def _forward(self, call: _Call) -> None:
        """Admit (a declared body within max_body, a free max_concurrent slot), count the rate limit, then stream;
        the slot is given back however the exchange ends."""
        route = call.route
        refused = self._admission.admit(route, call.head)
        if refused is not None:
            await self._refuse_limit(call, refused)
            return
        try:
            if route.rate_limit is None or await self._within_rate_limit(call):
                await self._stream(call)
        finally:
            self._admission.release(route)

    async def _within_rate_limit(self, call: _Call) -> bool:
        """Count the request against its route's rate limit, once admitted (a request refused for its size or
        the route's load spends no slot). False: refused here (429, or 503 when the store fails with on_error:
        deny); an audit-mode route counts the would-be refusal and forwards."""
        decision, runtime = call.decision, self._runtime
        allowed = decision.reason is None
        await runtime.limiter.admit(decision, call.entry)  # only allowed requests count
        if not allowed or decision.reason is None:
            return True
        count_refusal(runtime.metrics, decision)
        if decision.forwarded:
            call.entry["decision"] = "audit_forward"
            return True
        call.entry["decision"] = "reject"
        extra = refusal_headers(decision, call.scope["headers"], call.scope["method"])
        await refuse(
            call.send, decision.reason, call.snapshot.policy.realm, call.rid, call.route.name, call.entry, extra=extra
        )
        return False

    async def _refuse_limit(self, call: _Call, reason: Reason) -> None:
        """A limit's refusal of a request the policy allowed: counted, logged and answered like every refusal."""
        route = call.route.name
        self._runtime.metrics.rejected(route, reason, Mode.ENFORCE)
        call.entry["decision"] = "reject"
        # CORS headers as for any refusal; an audit-mode rate limit's Retry-After is not this refusal's.
        added = refusal_headers(call.decision, call.scope["headers"], call.scope["method"])
        extra = [*limit_headers(reason), *(pair for pair in added if pair[0] != b"retry-after")]
        await refuse(call.send, reason, call.snapshot.policy.realm, call.rid, route, call.entry, extra=extra)

    async def _stream(self, call: _Call) -> None:
        runtime, route, scope, entry = self._runtime, call.route, call.scope, call.entry
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        upstream_headers = request_headers(
            headers,
            forward_token=route.forward_token,
            names=call.snapshot.policy.identity_headers,
            identity=call.decision.identity,
            client_ip=call.source.forwarded_for,
            scheme=scope.get("scheme", "http"),
            request_id=call.rid,
        )
        query = scope.get("query_string", b"") if route.forward_query else b""
        url = target_url(target(route.upstream), call.decision.rest, query)
        match = route.match
        public = match.path if match.path is not None else match.path_prefix or "/"
        urls = response_urls(route.upstream, public, match.path is None)
        entry.setdefault("decision", "allow")
        sending = scope.get("extensions", {}).get(SENDING)
        if sending is not None:  # a client that stops reading this response is counted and logged under these
            sending["route"], sending["request_id"] = route.name, call.rid
        try:
            forwarded = await runtime.forwarder.forward(
                scope["method"],
                url,
                upstream_headers,
                call.receive,
                call.send if route.cors is None else with_cors(call.send, route.cors, headers, scope["method"]),
                route.timeout,
                call.head.has_body,
                [(b"x-request-id", call.rid.encode("ascii"))],
                max_body=route.max_body,
                body_timeout=call.snapshot.policy.limits.body_timeout,
                route=route.name,
                urls=urls,
                tls=call.snapshot.upstream_tls.get(route.name),
            )
        except Rejection as rejection:  # the upstream failed before answering: 502 / 504
            if rejection.reason in _LIMITS:  # or the client's body did, or the route's share of the pool is in use
                await self._refuse_limit(call, rejection.reason)
                return
            runtime.metrics.upstream_errors.labels(route.name, rejection.reason.value).inc()
            entry["decision"] = "upstream_error"
            if isinstance(rejection.__cause__, UpstreamError):  # why, for the operator: in the log, never the answer
                entry["upstream_error"] = str(rejection.__cause__)
            extra = refusal_headers(call.decision, headers, scope["method"])
            realm = call.snapshot.policy.realm
            await refuse(call.send, rejection.reason, realm, call.rid, route.name, entry, extra=extra)
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
        runtime.metrics.upstream_answered(route.name, forwarded.upstream_seconds)


@dataclass(slots=True)
class _Call:
    """One request being forwarded: what the gate has decided and learnt about it so far."""

    scope: Scope
    receive: Receive
    send: Send
    snapshot: Snapshot
    decision: Decision
    rid: str
    entry: Entry
    head: Head
    source: Origin

    @property
    def route(self) -> Route:
        assert self.decision.route is not None  # only requests with a route are forwarded
        return self.decision.route
