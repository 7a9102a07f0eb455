"""One request's exchange: its id, its access record, the client's origin, its rate limit, its count, its refusal and
its end (the one access line and the request metrics). The gate, forward-auth and the CORS preflight all go through
it, in one order: begin -> (count -> refuse or go on) -> rate limit -> answer -> finish. Nothing else builds an
access record; heads refused before the gate sees them (edge/protocol.py) are recorded by `record_refused_head`.
"""

from __future__ import annotations

import enum
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from random import getrandbits
from typing import Any, Final

from sidecar.edge.admission import limit_headers
from sidecar.edge.asgi import Scope, Send
from sidecar.edge.decide import Decision
from sidecar.edge.forward import Forwarded, UpstreamFailure
from sidecar.edge.forwarded import Origin, origin
from sidecar.edge.problem import problem_body, problem_headers
from sidecar.edge.runtime import Runtime, Snapshot
from sidecar.observe import log
from sidecar.observe.metrics import NO_ROUTE_LABEL, Metrics
from sidecar.observe.trace_context import trace_id
from sidecar.policy.cors import request_origin, response_headers
from sidecar.policy.model import Mode
from sidecar.reasons import Reason, auditable, outcome
from sidecar.upstream.target import Headers

__all__ = ["Exchange", "Record", "Verdict", "record_refused_head", "request_id"]

_REQUEST_ID: Final = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


def request_id(headers: Sequence[tuple[bytes, bytes]]) -> str:
    """A well-formed incoming X-Request-Id is kept (so callers can correlate); anything else is replaced."""
    for name, value in headers:
        if name == b"x-request-id" and _REQUEST_ID.fullmatch(value):
            return value.decode("ascii")
    return f"{getrandbits(96):024x}"  # 24 hex digits as before; os.urandom's getrandom(2) was 3% of a request


class Verdict(enum.Enum):
    """What became of a request: the access line's `decision` (the README's log table)."""

    ALLOW = "allow"  # forwarded; forward-auth: answered 200
    REJECT = "reject"  # refused (the policy, a limit of the route, the rate limit, a CORS preflight)
    AUDIT_FORWARD = "audit_forward"  # a would-be refusal an audit-mode route let through
    PREFLIGHT = "preflight"  # a CORS preflight allowed and answered by the sidecar
    UPSTREAM_ERROR = "upstream_error"  # 502 / 504: the upstream failed before answering
    UPSTREAM_BROKEN = "upstream_broken"  # the upstream failed after its answer started
    CLIENT_GONE = "client_gone"  # the client left while its body was being streamed up


@dataclass(slots=True)
class Record:
    """The access line's fields, typed. `fields()` is the line, in this order; a None field is left out, except
    the first six, which every line has (null when unknown)."""

    request_id: str
    method: str | None
    path: str | None  # normalised; None when the path itself was refused (never one the client made up)
    route: str | None
    mode: Mode
    client_ip: str | None
    provider: str | None = None  # provider, subject and app: the verified caller only, all three or none
    subject: str | None = None
    app: str | None = None
    auth_ms: float | None = None
    ratelimit_store: str | None = None  # the store's error when its on_error decided
    reason: Reason | None = None
    retry_after: int | None = None
    cors: str | None = None  # a preflight's: "allowed", or what it asked that is refused
    forward_auth: bool = False
    decision: Verdict | None = None
    status: int | None = None
    bytes_in: int | None = None
    bytes_out: int | None = None
    upstream_ms: float | None = None
    upstream_error: str | None = None
    duration_ms: float | None = None
    trace_id: str | None = None  # a valid W3C traceparent's trace id (observe/trace_context.py), after client_ip

    def fields(self) -> dict[str, Any]:
        line: dict[str, Any] = {
            "request_id": self.request_id,
            "method": self.method,
            "path": self.path,
            "route": self.route,
            "mode": self.mode.value,
            "client_ip": self.client_ip,
        }
        if self.trace_id is not None:
            line["trace_id"] = self.trace_id
        if self.provider is not None:
            line.update(provider=self.provider, subject=self.subject, app=self.app)
        if self.auth_ms is not None:
            line["auth_ms"] = self.auth_ms
        if self.ratelimit_store is not None:
            line["ratelimit_store"] = self.ratelimit_store
        if self.reason is not None:
            line["reason"] = self.reason.value
        if self.retry_after is not None:
            line["retry_after"] = self.retry_after
        if self.cors is not None:
            line["cors"] = self.cors
        if self.forward_auth:
            line["forward_auth"] = True
        if self.decision is not None:
            line["decision"] = self.decision.value
        if self.status is not None:
            line["status"] = self.status
        if self.bytes_in is not None:
            line.update(bytes_in=self.bytes_in, bytes_out=self.bytes_out, upstream_ms=self.upstream_ms)
        if self.upstream_error is not None:
            line["upstream_error"] = self.upstream_error
        if self.duration_ms is not None:
            line["duration_ms"] = self.duration_ms
        return line


def _record(scope: Scope, rid: str, method: str, decision: Decision) -> Record:
    """The access fields known once the head is decided. Identity fields are the verified ones only."""
    client = scope.get("client")
    route = decision.route
    record = Record(
        rid,
        method,
        decision.path,
        route.name if route is not None else None,
        decision.mode,
        client[0] if client else None,
        trace_id=trace_id(scope["headers"]),
    )
    identity = decision.identity
    if identity is not None:
        app = identity.claims.get("azp") or identity.claims.get("appid")
        record.provider, record.subject = identity.provider, identity.subject
        record.app = app if isinstance(app, str) else None
    if decision.auth_seconds:
        record.auth_ms = round(decision.auth_seconds * 1000, 3)
    record.reason = decision.reason
    return record


@dataclass(slots=True)
class Exchange:
    """One request from its decided head to its access line. `reason` is why it is refused so far (the policy's,
    then the rate limit's); a refusal the route's limits or the upstream add later is answered by its own method."""

    runtime: Runtime
    snapshot: Snapshot
    decision: Decision
    record: Record
    source: Origin  # the client, behind trusted_proxies the one X-Forwarded-For names
    headers: Headers  # the request's: a refusal on a route with `cors` carries Access-Control-* for its Origin
    started: float  # time.perf_counter() when the request arrived
    reason: Reason | None = None
    retry_after: int | None = None  # seconds, with the rate limit's refusal

    @classmethod
    def begin(
        cls,
        runtime: Runtime,
        snapshot: Snapshot,
        scope: Scope,
        rid: str,
        method: str,
        decision: Decision,
        started: float,
        forwarded_for: bytes | None,
        *,
        forward_auth: bool = False,
        cors: str | None = None,
    ) -> Exchange:
        """`forwarded_for`: the request's X-Forwarded-For, read for the client address behind trusted_proxies.
        `forward_auth`: an answer for an ingress (only 200, 401 or 403). `cors`: a preflight's outcome."""
        record = _record(scope, rid, method, decision)
        source = origin(record.client_ip, forwarded_for, snapshot.policy.trusted_proxies)
        record.client_ip, record.forward_auth, record.cors = source.client_ip, forward_auth, cors
        return cls(runtime, snapshot, decision, record, source, scope["headers"], started, decision.reason)

    @property
    def rid(self) -> str:
        return self.record.request_id

    @property
    def forwarded(self) -> bool:
        """Allowed so far, or refused only in audit mode (counted and logged as a would-be refusal)."""
        reason = self.reason
        return reason is None or (self.decision.mode is Mode.AUDIT and auditable(reason))

    async def enforce(self, send: Send, extra: Sequence[tuple[bytes, bytes]] | None = None) -> bool:
        """Count the request's refusal, if it has one, and answer it, unless audit mode lets it through. True: the
        request goes on. `extra`: the refusal's headers instead of the usual ones (Retry-After, CORS)."""
        reason = self.reason
        if reason is None:
            return True
        self.metrics.rejected(self._route_label, reason, self.decision.mode if self.forwarded else Mode.ENFORCE)
        if self.forwarded:
            self.record.decision = Verdict.AUDIT_FORWARD
            return True
        await self.refuse(send, reason, self._refusal_headers() if extra is None else extra)
        return False

    async def rate_limit(self, send: Send) -> bool:
        """Count an allowed request against its route's rate_limit (refused ones never spend a caller's budget);
        over it, or when the store fails with on_error: deny, it is refused as by `enforce`. True: it goes on."""
        route = self.decision.route
        if self.reason is not None or route is None or route.rate_limit is None:
            return True
        check = await self.runtime.limiter.admit(self.decision, self.source.client_ip)
        self.record.ratelimit_store = check.store_error
        if check.reason is None:
            return True
        self.reason = self.record.reason = check.reason
        self.retry_after = self.record.retry_after = check.retry_after
        return await self.enforce(send)

    async def refuse_limit(self, send: Send, reason: Reason) -> None:
        """A limit of the route refuses a request the policy allowed (max_body, max_concurrent, body_timeout, its
        share of the pool): counted in enforce mode, answered like every refusal with the limit's own headers."""
        self.metrics.rejected(self._route_label, reason, Mode.ENFORCE)
        await self.refuse(send, reason, [*limit_headers(reason), *self._cors_headers()])

    async def upstream_failed(self, send: Send, failure: UpstreamFailure) -> None:
        """502 / 504: counted as an upstream error, not a refusal; why is for the log, never the answer."""
        self.metrics.upstream_errors.labels(self._route_label, failure.reason.value).inc()
        self.record.upstream_error = failure.detail
        await self.refuse(send, failure.reason, self._cors_headers(), Verdict.UPSTREAM_ERROR)

    async def refuse(
        self, send: Send, reason: Reason, extra: Sequence[tuple[bytes, bytes]] = (), verdict: Verdict = Verdict.REJECT
    ) -> None:
        """Answer with the problem+json refusal from the Reason table, `extra` headers added. Forward-auth speaks
        only 401 and 403 (nginx auth_request understands no other refusal): every other refusal is a 403 there."""
        record = self.record
        status = None
        if record.forward_auth:
            status = 401 if outcome(reason).status == 401 else 403
        body = problem_body(reason, record.request_id, record.route, status)
        code = status or outcome(reason).status
        allow = () if record.forward_auth else self.decision.allow
        headers = problem_headers(reason, self.snapshot.policy.realm, record.request_id, body, allow)
        headers.extend(extra)
        await send({"type": "http.response.start", "status": code, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})
        record.status, record.reason, record.decision = code, reason, verdict

    def answered(self, status: int, verdict: Verdict | None = None) -> None:
        """The sidecar answered itself (forward-auth's 200, a preflight's 204): allowed, or audit-forwarded."""
        record = self.record
        record.status = status
        record.decision = verdict or record.decision or Verdict.ALLOW

    def forwarding(self) -> None:
        """The request goes to the upstream: logged `allow` unless audit mode forwards a would-be refusal."""
        self.record.decision = self.record.decision or Verdict.ALLOW

    def streamed(self, forwarded: Forwarded) -> None:
        record = self.record
        record.status, record.bytes_in, record.bytes_out = forwarded.status, forwarded.bytes_in, forwarded.bytes_out
        record.upstream_ms = round(forwarded.upstream_seconds * 1000, 3)
        self.metrics.upstream_answered(self._route_label, forwarded.upstream_seconds)

    def ended(self, status: int, verdict: Verdict) -> None:
        """The exchange ended without an answer of ours: the client gone (499), the upstream broken mid-answer (502:
        only closing the connection tells the client)."""
        self.record.status, self.record.decision = status, verdict
        if verdict is Verdict.UPSTREAM_BROKEN:
            self.metrics.upstream_errors.labels(self._route_label, "broken_stream").inc()

    def finish(self) -> None:
        """The request metrics and the one access line (status 500 if nothing answered: an error of ours)."""
        _finish(self.metrics, self.record, self.started)

    @property
    def metrics(self) -> Metrics:
        return self.runtime.metrics

    @property
    def _route_label(self) -> str:
        return self.record.route or NO_ROUTE_LABEL

    def _refusal_headers(self) -> list[tuple[bytes, bytes]]:
        """A refusal's headers besides the problem's: when to retry (the rate limit's), and CORS."""
        if self.retry_after is None:
            return self._cors_headers()
        return [(b"retry-after", str(self.retry_after).encode("ascii")), *self._cors_headers()]

    def _cors_headers(self) -> list[tuple[bytes, bytes]]:
        """On a route with `cors`, the Access-Control-* headers, so that a page can read the refusal."""
        route = self.decision.route
        if route is None or route.cors is None:
            return []
        return response_headers(route.cors, request_origin(self.headers), self.record.method or "", refusal=True)


def record_refused_head(
    metrics: Metrics, method: str | None, client: str | None, reason: Reason, rid: str, started: float
) -> None:
    """A head refused before the gate saw it (edge/protocol.py: too large, too slow, malformed): counted and logged
    like any refusal, with no path and no route."""
    metrics.rejected(NO_ROUTE_LABEL, reason, Mode.ENFORCE)
    record = Record(rid, method, None, None, Mode.ENFORCE, client, reason=reason)
    record.decision, record.status = Verdict.REJECT, outcome(reason).status
    _finish(metrics, record, started)


def _finish(metrics: Metrics, record: Record, started: float) -> None:
    elapsed = time.perf_counter() - started
    if record.status is None:
        record.status = 500
    metrics.answered(record.route or NO_ROUTE_LABEL, record.method or "", record.status, elapsed)
    record.duration_ms = round(elapsed * 1000, 3)
    log.access(record.fields())
