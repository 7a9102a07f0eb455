"""`sidecar explain`: the decision for one request, and why: route, each check of the token, each rule.

It decides through the same `decide()` as the proxy, with the live keys of the issuer, then looks at the token check
by check so that every failing check is named (the proxy stops at the first). Nothing is forwarded anywhere.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import jwt

from sidecar.decide import Decision, decide
from sidecar.decision import Reason, outcome
from sidecar.introspect import Introspector
from sidecar.keys import KeyStore
from sidecar.policy.allow import evaluate
from sidecar.policy.model import Anyone, Identity, Policy, Provider, Route
from sidecar.runtime import Snapshot
from sidecar.upstream import target
from sidecar.verify import Verifier

__all__ = ["Check", "Explanation", "explain", "render"]


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(slots=True)
class Explanation:
    method: str
    path: str | None
    route: str | None = None
    route_line: int | None = None
    upstream: str | None = None  # origin and path only: the query holds the secret signature
    mode: str | None = None
    token: list[Check] = field(default_factory=list)
    provider: str | None = None
    rules: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    reason: str | None = None
    decision: str = "allow"
    allow: list[str] = field(default_factory=list)


async def explain(
    policy: Policy, method: str, raw_path: bytes, token: str | None, claims: dict[str, Any] | None
) -> Explanation:
    """With `token`, the live decision (keys fetched from the issuer now); with `claims`, the rules applied to
    claims given by hand (no verification)."""
    async with httpx.AsyncClient(timeout=10.0, follow_redirects=False, trust_env=False) as client:
        keys = KeyStore(client)
        verifier = Verifier(policy.providers, keys, introspector=Introspector(client))
        snapshot = Snapshot(policy, verifier, "")
        headers = [(b"authorization", f"Bearer {token}".encode())] if token is not None else []
        decision = await decide(snapshot, method.upper(), raw_path, headers)
        route = decision.route
        authenticated = route is not None and not isinstance(route.allow, Anyone)
        if claims is not None and route is not None and authenticated:
            decision.identity = _from_claims(claims, route, policy)
            decision.reason = _rules_verdict(route, decision.identity)
        result = _base(method.upper(), decision)
        if token is not None and route is not None and authenticated:
            result.token = await _token_checks(token, route, policy, keys)
        if decision.identity is not None and route is not None:
            result.provider = decision.identity.provider
            result.rules = [
                {"rule": rule.index, "held": held, "why": why} for rule, held, why in evaluate(route, decision.identity)
            ]
        return result


def _rules_verdict(route: Route, identity: Identity | None) -> Reason | None:
    if identity is None:
        return Reason.WRONG_ISSUER
    return None if any(held for _, held, _ in evaluate(route, identity)) else Reason.NOT_ALLOWED


def _base(method: str, decision: Decision) -> Explanation:
    result = Explanation(method=method, path=decision.path)
    if decision.route is not None:
        route = decision.route
        result.route, result.route_line, result.mode = route.name, route.line, decision.mode.value
        result.upstream = target(route.upstream).redacted()
    result.allow = list(decision.allow)
    _finish(result, decision)
    return result


def _finish(result: Explanation, decision: Decision) -> None:
    if decision.reason is None:
        result.status, result.reason, result.decision = 200, None, "allow"
        return
    result.reason = decision.reason.value
    result.status = outcome(decision.reason).status
    result.decision = "audit_forward" if decision.forwarded else "reject"


def _from_claims(claims: dict[str, Any], route: Route, policy: Policy) -> Identity | None:
    """Claims given by hand (not verified): the provider is the route's one whose issuer is `iss`, or the route's
    only provider when `iss` is absent."""
    names = sorted(route.providers)
    issuer = claims.get("iss")
    matching = (
        [n for n in names if policy.providers[n].issuer == issuer] if issuer else names[:1] if len(names) == 1 else []
    )
    if not matching:
        return None
    return Identity(provider=matching[0], claims=claims, expires_at=float(claims.get("exp", 0) or 0))


async def _token_checks(token: str, route: Route, policy: Policy, keys: KeyStore) -> list[Check]:
    """Each check on its own, so that every failing one is named."""
    try:
        header, payload = (json.loads(_b64(part)) for part in token.split(".")[:2])
        if not isinstance(header, dict) or not isinstance(payload, dict):
            raise ValueError
    except (ValueError, IndexError):
        return [Check("format", False, "not a JWT: three base64url segments with JSON header and payload")]
    checks = [Check("format", True, "three segments, JSON header and payload")]
    issuer = payload.get("iss")
    providers = [policy.providers[name] for name in sorted(route.providers)]
    provider = next((p for p in providers if p.issuer == issuer), None)
    known = ", ".join(p.issuer for p in providers)
    checks.append(Check("issuer", provider is not None, f"iss {issuer!r}; this route accepts: {known}"))
    if provider is None:
        return checks
    alg = header.get("alg")
    checks.append(
        Check("algorithm", alg in provider.algorithms, f"alg {alg!r}; accepted: {', '.join(provider.algorithms)}")
    )
    checks += await _signature(token, header, provider, keys)
    checks += _times(payload, provider)
    audiences = payload.get("aud")
    given = set(audiences) if isinstance(audiences, list) else {audiences}
    checks.append(
        Check(
            "audience", bool(given & provider.audiences), f"aud {audiences!r}; accepted: {sorted(provider.audiences)}"
        )
    )
    return checks


async def _signature(token: str, header: dict[str, Any], provider: Provider, keys: KeyStore) -> list[Check]:
    alg, kid = str(header.get("alg")), header.get("kid")
    try:
        candidates = await keys.keys(provider, kid if isinstance(kid, str) else None, alg)
    except Exception as exc:  # Rejection: no such key, or the issuer's keys could not be fetched
        reason = getattr(exc, "reason", None)
        detail = (
            "the issuer's keys could not be fetched"
            if reason is Reason.KEYS_UNAVAILABLE
            else f"kid {kid!r} not published by the issuer"
        )
        return [Check("key", False, detail)]
    unchecked = {
        "verify_aud": False,
        "verify_iss": False,
        "verify_exp": False,
        "verify_nbf": False,
        "verify_iat": False,
    }
    for key in candidates:  # several only when keys share the kid, as the verifier tries them
        try:
            jwt.decode(token, key, algorithms=[alg], options=unchecked)  # type: ignore[arg-type]
        except jwt.PyJWTError:
            continue
        return [Check("key", True, f"kid {kid!r}"), Check("signature", True, "verified with the issuer's key")]
    return [Check("key", True, f"kid {kid!r}"), Check("signature", False, "does not verify with the issuer's key")]


def _times(payload: dict[str, Any], provider: Provider) -> list[Check]:
    now, leeway = time.time(), provider.leeway
    checks = []
    exp = _number(payload.get("exp"))
    if exp is None:
        checks.append(Check("expiry", False, "exp missing or not a number"))
    else:
        checks.append(Check("expiry", exp > now - leeway, f"exp {_when(exp, now)} (leeway {leeway:g} s)"))
    for name in ("nbf", "iat"):
        if name in payload:
            value = _number(payload[name])
            ok = value is not None and value <= now + leeway
            checks.append(Check(name, ok, f"{name} {_when(value, now) if value is not None else 'not a number'}"))
    return checks


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _when(value: float, now: float) -> str:
    delta = int(value - now)
    moment = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(value))
    return f"{moment} (in {delta} s)" if delta >= 0 else f"{moment} ({-delta} s ago)"


def _b64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


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
    for check in result.token:
        lines.append(f"token     {'ok  ' if check.ok else 'FAIL'} {check.name}: {check.detail}")
    for rule in result.rules:
        lines.append(f"rule {rule['rule']:<4} {'holds' if rule['held'] else 'fails'}: {rule['why']}")
    verdict = f"{result.status} {result.decision}" + (f" ({result.reason})" if result.reason else "")
    lines.append(f"decision  {verdict}")
    return "\n".join(lines)
