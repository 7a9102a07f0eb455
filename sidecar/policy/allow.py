"""Authorization: which `allow` rule of a route, if any, lets a verified identity through.

Rules are alternatives (OR); inside one rule the provider and every condition it lists (users, apps, groups, scopes,
claims, user or app tokens only) must all hold (AND). Only verified claims are read, and never `email`: not every
issuer verifies it (the nOAuth account takeover).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from sidecar.policy.model import AllowRule, Anyone, CallerKind, ClaimRequirement, Identity, Route, UserSet

__all__ = ["SCOPE_CLAIMS", "authorize", "caller_kind", "evaluate"]

_STABLE_IDS = ("oid", "sub")  # exact: oid is Entra's immutable object id, sub is unique per issuer
_NAMES = ("upn", "preferred_username")  # mutable and case-insensitive: compared lowercased
_REFUSED_CLAIM = "email"
SCOPE_CLAIMS = frozenset({"scp", "scope"})  # claims holding space-separated scopes
_APP_CLAIMS = ("azp", "appid", "client_id")  # the client's id: Entra v2, Entra v1, RFC 9068 / RFC 7662


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


def caller_kind(claims: Mapping[str, object]) -> CallerKind:
    """Entra's rule: `idtyp` (`app` or `user`) when the token has it; otherwise a token without `scp` is an app's.
    Delegated (user) tokens always carry the scopes consented to in `scp`; client-credentials tokens never do."""
    idtyp = claims.get("idtyp")
    if idtyp in ("app", "user"):
        return CallerKind(idtyp)
    return CallerKind.USER if "scp" in claims else CallerKind.APP


def _holds(rule: AllowRule, identity: Identity) -> bool:
    claims = identity.claims
    if identity.provider != rule.provider:
        return False
    if rule.caller is not None and caller_kind(claims) is not rule.caller:
        return False
    if rule.users is not None and _listed_user(rule.users, claims) is None:
        return False
    if rule.apps is not None and _listed_app(rule.apps, claims) is None:
        return False
    if rule.groups is not None and _contained(claims.get("groups"), rule.groups) is None:
        return False
    if rule.scopes is not None and _scope(rule.scopes, claims) is None:
        return False
    return all(_claim_value(requirement, claims) is not None for requirement in rule.claims)


def _listed_app(apps: frozenset[str], claims: Mapping[str, object]) -> str | None:
    for name in _APP_CLAIMS:
        value = claims.get(name)
        if isinstance(value, str) and value in apps:
            return value
    return None


def _scope(scopes: frozenset[str], claims: Mapping[str, object]) -> str | None:
    for name in ("scp", "scope"):
        value = claims.get(name)
        found = _contained(value.split(" ") if isinstance(value, str) else value, scopes)
        if found is not None:
            return found
    return None


def _contained(value: object, wanted: frozenset[str]) -> str | None:
    """The first wanted string in a list claim (a lone string counts as a list of one)."""
    present = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    return next((item for item in present if isinstance(item, str) and item in wanted), None)


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
    checks = [(True, f"provider {rule.provider} matched")]
    claims = identity.claims
    if rule.caller is not None:
        kind = caller_kind(claims)
        described = "an app token" if kind is CallerKind.APP else "a user token"
        checks.append((kind is rule.caller, f"{rule.caller.value} tokens only: this is {described}"))
    if rule.users is not None:
        user = _listed_user(rule.users, claims)
        missing = "user not listed (oid, sub, upn, preferred_username)"
        checks.append((user is not None, f"user {_shown(user)} listed" if user else missing))
    if rule.apps is not None:
        app = _listed_app(rule.apps, claims)
        checks.append(
            (app is not None, f"app {_shown(app)} listed" if app else "app not listed (azp, appid, client_id)")
        )
    if rule.groups is not None:
        checks.append(_found("groups", _contained(claims.get("groups"), rule.groups), rule.groups, claims))
    if rule.scopes is not None:
        checks.append(_found("scopes", _scope(rule.scopes, claims), rule.scopes, claims))
    if len(checks) == 1 and not rule.claims:
        checks.append((True, "any user"))
    for requirement in rule.claims:
        checks.append(_found(f"claim {requirement.name}", _claim_value(requirement, claims), requirement.values))
    return rule, all(held for held, _ in checks), "; ".join(reason for _, reason in checks)


def _found(
    what: str, found: str | None, wanted: frozenset[str], claims: Mapping[str, object] | None = None
) -> tuple[bool, str]:
    if found is not None:
        return True, f"{what}: {_shown(found)} present"
    overage = what == "groups" and claims is not None and "groups" in _names(claims.get("_claim_names"))
    hint = " (group overage: the token lists too many groups to carry them; use app roles)" if overage else ""
    return False, f"{what}: none of [{', '.join(_shown(value) for value in sorted(wanted))}] present{hint}"


def _shown(value: str) -> str:
    """A value with whitespace at an end (or any control character) is quoted, so the space shows."""
    if value and value == value.strip() and value.isprintable():
        return value
    return json.dumps(value)


def _names(value: object) -> Sequence[str]:
    return [name for name in value if isinstance(name, str)] if isinstance(value, dict) else []
