"""The proxy as a plain ASGI callable: decide on the head, then stream to the upstream (or refuse)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sidecar.edge.admission import Admission, conflict
from sidecar.edge.asgi import Receive, Scope, Send, lifespan
from sidecar.edge.cross_origin import answer_preflight, with_cors
from sidecar.edge.decide import decide
from sidecar.edge.exchange import Exchange, Verdict, request_id
from sidecar.edge.forward import ClientGone, UpstreamBroken, UpstreamFailure
from sidecar.edge.forward_auth import ForwardAuth
from sidecar.edge.head import Head, read_head
from sidecar.edge.protocol import SENDING, body_checked
from sidecar.edge.response_urls import response_urls
from sidecar.edge.runtime import Runtime
from sidecar.policy.model import Route
from sidecar.reasons import Rejection
from sidecar.upstream.target import request_headers, target, target_url

__all__ = ["Gate"]


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
        exchange = Exchange.begin(runtime, snapshot, scope, rid, method, decision, started, head.forwarded_for)
        try:
            if await exchange.enforce(send):
                await self._forward(_Call(scope, receive, send, exchange, head))
        finally:
            exchange.finish()

    async def _forward(self, call: _Call) -> None:
        """Admit (a declared body within max_body, a free max_concurrent slot), count the rate limit (a request
        refused for its size or the route's load spends no slot), then stream; the slot is given back however the
        exchange ends."""
        route = call.route
        refused = self._admission.admit(route, call.head)
        if refused is not None:
            await call.exchange.refuse_limit(call.send, refused)
            return
        try:
            if await call.exchange.rate_limit(call.send):
                await self._stream(call)
        finally:
            self._admission.release(route)

    async def _stream(self, call: _Call) -> None:
        route, scope, exchange = call.route, call.scope, call.exchange
        snapshot, decision, rid = exchange.snapshot, exchange.decision, exchange.rid
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        upstream_headers = request_headers(
            headers,
            forward_token=route.forward_token,
            names=snapshot.policy.identity_headers,
            identity=decision.identity,
            client_ip=exchange.source.forwarded_for,
            scheme=scope.get("scheme", "http"),
            request_id=rid,
        )
        query = scope.get("query_string", b"") if route.forward_query else b""
        url = target_url(target(route.upstream), decision.rest, query)
        match = route.match
        public = match.path if match.path is not None else match.path_prefix or "/"
        urls = response_urls(route.upstream, public, match.path is None)
        exchange.forwarding()
        sending = scope.get("extensions", {}).get(SENDING)
        if sending is not None:  # a client that stops reading this response is counted and logged under these
            sending["route"], sending["request_id"] = route.name, rid
        try:
            forwarded = await self._runtime.forwarder.forward(
                scope["method"],
                url,
                upstream_headers,
                body_checked(call.receive, scope) if call.head.chunked else call.receive,  # a bad chunk: 400
                call.send if route.cors is None else with_cors(call.send, route.cors, headers, scope["method"]),
                route.timeout,
                call.head.has_body,
                [(b"x-request-id", rid.encode("ascii"))],
                max_body=route.max_body,
                body_timeout=snapshot.policy.limits.body_timeout,
                route=route.name,
                urls=urls,
                tls=snapshot.upstream_tls.get(route.name),
            )
        except Rejection as rejection:  # a limit of the route: the client's body, or the route's share of the pool
            await exchange.refuse_limit(call.send, rejection.reason)
            return
        except UpstreamFailure as failure:  # the upstream failed before answering: 502 / 504
            await exchange.upstream_failed(call.send, failure)
            return
        except ClientGone:
            exchange.ended(499, Verdict.CLIENT_GONE)
            return
        except UpstreamBroken:
            exchange.ended(502, Verdict.UPSTREAM_BROKEN)
            raise  # the response has started: only closing the connection tells the client
        exchange.streamed(forwarded)


@dataclass(slots=True)
class _Call:
    """One request being forwarded: the ASGI side of it and its exchange."""

    scope: Scope
    receive: Receive
    send: Send
    exchange: Exchange
    head: Head

    @property
    def route(self) -> Route:
        route = self.exchange.decision.route
        assert route is not None  # only requests with a route are forwarded
        return route
