"""`sidecar explain`: the decision for one request, and why: route, each check of the token, each rule.

It decides through the same `decide()` as the proxy, with the live keys of the issuer, and shows the verifier's own
steps (verify.Step) up to the one that decided: the proxy stops at the first failing check, and so does this.
Nothing is forwarded anywhere.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from sidecar.auth.introspect import Introspector
from sidecar.auth.keys import KeyStore
from sidecar.auth.steps import Step
from sidecar.auth.verify import Verifier
from sidecar.edge.decide import Decision, decide
from sidecar.edge.exchange import Verdict
from sidecar.edge.runtime import Snapshot
from sidecar.policy.allow import evaluate
from sidecar.policy.model import Policy
from sidecar.reasons import outcome
from sidecar.upstream.target import target

__all__ = ["CLAIMS_NOTE", "Explanation", "explain", "render"]

CLAIMS_NOTE = "claims given by hand: the token's header, key and signature are not checked"


@dataclass(slots=True)
class Explanation:
    method: str
    path: str | None
    route: str | None = None
    route_line: int | None = None
    upstream: str | None = None  # origin and path only: the query holds the secret signature
    mode: str | None = None
    caller: str = "none"  # none | token | claims (hand-written: not verified)
    token: list[Step] = field(default_factory=list)
    provider: str | None = None
    rules: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    reason: str | None = None
    decision: str = Verdict.ALLOW.value
    allow: list[str] = field(default_factory=list)


async def explain(
    policy: Policy,
    method: str,
    raw_path: bytes,
    token: str | None,
    claims: dict[str, Any] | None,
    *,
    client: httpx.AsyncClient | None = None,
    clock: Callable[[], float] = time.time,
) -> Explanation:
    """With `token`, the live decision (keys fetched from the issuer now, through `client` when given); with
    `claims`, the same decision for a caller with these claims, without signature verification."""
    async with _http(client) as http:
        verifier = Verifier(policy.providers, KeyStore(http), clock=clock, introspector=Introspector(http, clock))
        snapshot = Snapshot(policy, verifier, "")
        headers = [(b"authorization", f"Bearer {token}".encode())] if token is not None else []
        trace: list[Step] = []
        decision = await decide(snapshot, method.upper(), raw_path, headers, trace=trace, claims=claims)
    result = _base(method.upper(), decision)
    result.caller = "claims" if claims is not None else "token" if token is not None else "none"
    result.token = trace
    route, identity = decision.route, decision.identity
    if identity is not None and route is not None:
        result.provider = identity.provider
        result.rules = [{"rule": rule.index, "held": held, "why": why} for rule, held, why in evaluate(route, identity)]
    return result


@asynccontextmanager
async def _http(client: httpx.AsyncClient | None) -> AsyncIterator[httpx.AsyncClient]:
    if client is not None:
        yield client
        return
    async with httpx.AsyncClient(timeout=10.0, follow_redirects=False, trust_env=False) as own:
        yield own


def _base(method: str, decision: Decision) -> Explanation:
    result = Explanation(method=method, path=decision.path)
    if decision.route is not None:
        route = decision.route
        result.route, result.route_line, result.mode = route.name, route.line, decision.mode.value
        result.upstream = target(route.upstream).redacted()
    result.allow = list(decision.allow)
    if decision.reason is not None:
        result.reason = decision.reason.value
        result.status = outcome(decision.reason).status
        verdict = Verdict.AUDIT_FORWARD if decision.forwarded else Verdict.REJECT  # as the access line says
        result.decision = verdict.value
    return result


def render(result: Explanation, as_json: bool) -> str:
    if as_json:
        return json.dumps(asdict(result), indent=2)
    lines = [f"request   {result.method} {result.path if result.path is not None else '(path refused)'}"]
    if result.route is None:
        why = "no route matches this path" if result.reason == "no_route" else result.reason
        if result.allow:
            why = f"the path's routes take only {', '.join(result.allow)}"
        lines.append(f"route     none: {why}")
    else:
        lines.append(
            f"route     {result.route} (line {result.route_line}), mode {result.mode}, upstream {result.upstream}"
        )
    if result.caller == "claims" and result.token:
        lines.append(f"caller    {CLAIMS_NOTE}")
    for check in result.token:
        lines.append(f"token     {'ok  ' if check.ok else 'FAIL'} {check.name}: {check.detail}")
    for rule in result.rules:
        lines.append(f"rule {rule['rule']:<4} {'holds' if rule['held'] else 'fails'}: {rule['why']}")
    verdict = f"{result.status} {result.decision}" + (f" ({result.reason})" if result.reason else "")
    lines.append(f"decision  {verdict}")
    return "\n".join(lines)
