"""Authorization: which `allow` rule of a route, if any, lets a verified identity through.

Rules are alternatives (OR); inside one rule the provider, the users and every claim must all hold (AND). Only
verified claims are read, and never `email`: not every issuer verifies it (the nOAuth account takeover).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sidecar.policy.model import AllowRule, Anyone, ClaimRequirement, Identity, Route, UserSet

__all__ = ["SCOPE_CLAIMS", "authorize", "evaluate"]

_STABLE_IDS = ("oid", "sub")  # exact: oid is Entra's immutable object id, sub is unique per issuer
_NAMES = ("upn", "preferred_username")  # mutable and case-insensitive: compared lowercased
_REFUSED_CLAIM = "email"
SCOPE_CLAIMS = frozenset({"scp", "scope"})  # claims holding space-separated scopes


def authorize(route: Route, identity: Identity) -> AllowRule | None:
    """The first rule that holds for `identity`, or None. `allow: anyone` routes never get here: None."""
    if isinstance(route.allow, Anyone):
        return None
    for rule in route.allow:
        if _holds(rule, identity):
            return rule
    return None


def evaluate(route: Route, identity: Identity) -> list[tuple[AllowRule, bool, str]]:
    """Every rule with whether it held and why, for `sidecar explain`. Same checks as `authorize`.

    The reasons name claim names and configured values, and of the token only the identity value that matched."""
    if isinstance(route.allow, Anyone):
        return []
    return [_explain(rule, identity) for rule in route.allow]


def _holds(rule: AllowRule, identity: Identity) -> bool:
    if identity.provider != rule.provider:
        return False
    if rule.users is not None and _listed_user(rule.users, identity.claims) is None:
        return False
    return all(_claim_value(requirement, identity.claims) is not None for requirement in rule.claims)


def _listed_user(users: UserSet, claims: Mapping[str, object]) -> str | None:
    """The identity value found in `users`, if any."""
    for name in _STABLE_IDS:
        value = claims.get(name)
        if isinstance(value, str) and value and (value in users.ids or value in users.names):
            return value
    for name in _NAMES:
        value = claims.get(name)
        if isinstance(value, str) and value and value.lower() in users.names:
            return value
    return None


def _claim_value(requirement: ClaimRequirement, claims: Mapping[str, object]) -> str | None:
    """The required value the claim carries, if any. Only string values count: `true` is not `"true"`."""
    if requirement.name == _REFUSED_CLAIM:  # the loader refuses it; a hand-built rule must not sneak it in
        return None
    value = claims.get(requirement.name)
    present: Sequence[str]
    if isinstance(value, str):
        # Scopes travel as one space-separated string (Entra's `scp`, RFC 9068's `scope`); other strings are one value.
        present = value.split(" ") if requirement.name in SCOPE_CLAIMS else (value,)
    elif isinstance(value, list):
        present = tuple(item for item in value if isinstance(item, str))
    else:
        return None
    return next((item for item in present if item in requirement.values), None)


def _explain(rule: AllowRule, identity: Identity) -> tuple[AllowRule, bool, str]:
    if identity.provider != rule.provider:
        return rule, False, f"provider {rule.provider} required; the token is from {identity.provider}"
    reasons = [f"provider {rule.provider} matched"]
    held = True
    if rule.users is not None:
        user = _listed_user(rule.users, identity.claims)
        held = user is not None
        reasons.append(f"user {user} listed" if user else "user not listed (oid, sub, upn, preferred_username)")
    elif not rule.claims:
        reasons.append("any user")
    for requirement in rule.claims:
        found = _claim_value(requirement, identity.claims)
        held = held and found is not None
        if found is None:
            wanted = ", ".join(sorted(requirement.values))
            reasons.append(f"claim {requirement.name}: none of [{wanted}] present")
        else:
            reasons.append(f"claim {requirement.name}: {found} present")
    return rule, held, "; ".join(reasons)
