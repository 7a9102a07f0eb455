"""The decision for a request head: normalise -> route -> token -> verify -> authorize. No I/O but verification.

The proxy, the forward-auth endpoint, `sidecar explain` and `sidecar test` all decide through `decide()`, so they
cannot disagree. The last two may pass a `trace` (the verifier's steps) and hand-written `claims` in place of a token.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sidecar.auth.bearer import bearer
from sidecar.auth.steps import Step
from sidecar.edge.paths import normalise
from sidecar.edge.runtime import Snapshot
from sidecar.policy.allow import authorize
from sidecar.policy.model import Anyone, Identity, Mode, Route
from sidecar.policy.routes import NoRoute, WrongMethod
from sidecar.reasons import Reason, Rejection, auditable

__all__ = ["Decision", "decide"]


@dataclass(frozen=True, slots=True)
class Decision:
    """What the policy says about one request head. Frozen: what happens to the request after (a rate limit, a
    limit of the route, the upstream) is the request's Exchange's (edge/exchange.py), never a change to this."""

    path: str | None = None  # normalised; None when the path itself was refused
    route: Route | None = None
    rest: str = ""  # for a prefix route, the part of the path after the prefix
    identity: Identity | None = None  # set when the token verified (even if no rule then allowed it)
    reason: Reason | None = None  # why the policy refuses the request; None: allowed
    allow: tuple[str, ...] = ()  # the methods of the path, for 405
    mode: Mode = Mode.ENFORCE
    auth_seconds: float = 0.0

    @property
    def forwarded(self) -> bool:
        """Allowed, or refused only in audit mode (counted and logged as a would-be refusal)."""
        return self.reason is None or (self.mode is Mode.AUDIT and auditable(self.reason))


async def decide(
    snapshot: Snapshot,
    method: str,
    raw_path: bytes,
    headers: Iterable[tuple[bytes, bytes]],
    audit_all: bool = False,
    *,
    trace: list[Step] | None = None,
    claims: Mapping[str, object] | None = None,
) -> Decision:
    """`claims` (explain, test): a caller given by its claims, checked by the verifier except for the signature."""
    try:
        path = normalise(raw_path)
    except Rejection as rejection:
        return Decision(reason=rejection.reason)
    hit = snapshot.policy.table.lookup(method, path)
    if isinstance(hit, NoRoute):
        return Decision(path=path, reason=Reason.NO_ROUTE)
    if isinstance(hit, WrongMethod):
        return Decision(path=path, reason=Reason.METHOD_NOT_ALLOWED, allow=hit.allow)
    route = hit.route
    mode = Mode.AUDIT if audit_all else route.mode
    if isinstance(route.allow, Anyone):
        return Decision(path, route, hit.rest, mode=mode)
    started = time.perf_counter()
    identity: Identity | None = None
    reason: Reason | None = None
    try:
        if claims is not None:
            identity = snapshot.verifier.check_claims(claims, route.providers, trace)
        else:
            token = bearer(headers)
            if token is None:
                raise Rejection(Reason.MISSING_TOKEN)
            identity = await snapshot.verifier.verify(token, route.providers, trace)
        if authorize(route, identity) is None:
            reason = Reason.NOT_ALLOWED
    except Rejection as rejection:
        reason = rejection.reason
    return Decision(path, route, hit.rest, identity, reason, mode=mode, auth_seconds=time.perf_counter() - started)
