"""Checks across the whole policy, once each part is valid: names, ambiguous routes, nesting, unused providers,
rules that can never match, and "did you mean" for unknown keys.

Errors and warnings land on the `Document`, located at the route or key they are about.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from typing import Final
from urllib.parse import urlsplit

from sidecar.policy.fields import is_loopback
from sidecar.policy.model import AllowRule, Anyone, CallerKind, IdentityHeaders, Match, Mode, Provider, Route
from sidecar.policy.routes import claiming, conflicts, nestings
from sidecar.policy.yamlmarks import Document, Path

__all__ = [
    "check_headers",
    "check_never_match",
    "check_route_providers",
    "check_routes",
    "check_unused_providers",
    "compared_exactly",
    "did_you_mean",
]

_GUID: Final = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_ENTRA_SUB: Final = re.compile(r"[A-Za-z0-9_-]{43}")  # Entra's pairwise `sub`: 32 bytes, base64url
_RULE_KEYS: Final = ("provider", "users", "apps", "groups", "scopes", "claims", "roles")
_ENTRA_KEYS: Final = ("tenant", "cloud", "authority")

# Headers the proxy itself owns or that change how a message is framed or authenticated.
_RESERVED_HEADERS = frozenset(
    {
        "authorization",
        "connection",
        "content-length",
        "content-type",
        "cookie",
        "host",
        "keep-alive",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "x-request-id",
    }
)


def check_routes(doc: Document, routes: Mapping[int, Route]) -> None:
    """`routes` maps each valid route's index in the file to the route."""
    index_of = {id(route): index for index, route in routes.items()}
    seen: dict[str, Route] = {}
    for index, route in routes.items():
        first = seen.setdefault(route.name, route)
        if first is not route:
            doc.error(("routes", index, "name"), f'duplicate route name "{route.name}" (first at line {first.line})')
    ordered = list(routes.values())
    for earlier, later in conflicts(ordered):
        doc.error(
            _match_path(index_of[id(later)], later.match),
            f'route "{later.name}" and route "{earlier.name}" (line {earlier.line}) both match '
            f"{_describe(later.match)} for {_shared(earlier.match, later.match)}; one request must have one route",
        )
    claims = claiming(ordered)
    for inner, outer in nestings(ordered):
        # Where the rules differ, say that the exact route also takes the path's other spellings (routes.py).
        spelled = inner.match.path in claims and (inner.allow != outer.allow or inner.mode != outer.mode)
        doc.warn(
            _match_path(index_of[id(inner)], inner.match),
            f'{_describe(inner.match)} is inside path_prefix {outer.match.path_prefix} of route "{outer.name}" '
            f'(line {outer.line}); route "{inner.name}" takes the requests it matches'
            + (f" and its other spellings ({inner.match.path}/, {inner.match.path}.json, ...)" if spelled else ""),
        )


def check_route_providers(
    doc: Document, path: Path, rules: Sequence[AllowRule], providers: Mapping[str, Provider]
) -> bool:
    """An opaque token names no issuer, so a route can ask only one introspection endpoint about it: with two, the
    answer would depend on which was asked first. False (and an error) when a route's rules name more than one."""
    names = sorted({rule.provider for rule in rules if (p := providers.get(rule.provider)) and p.introspection})
    if len(names) > 1:
        doc.error((*path, "allow"), f"introspection providers {', '.join(names)} on one route: use one per route")
        return False
    return True


_EXACT_RULE_KEYS: Final = frozenset({"provider", "users", "apps", "groups", "scopes", "claims"})
_EXACT_PROVIDER_KEYS: Final = frozenset({"issuer", "audiences", "entra"})


def compared_exactly(path: Path) -> bool:
    """Whether the value at `path` is compared as is with what a token carries (an audience, a user, an app, a
    group, a scope, a claim value): whitespace at its ends would make it match no token at all."""
    if len(path) >= 3 and path[0] == "providers":
        return path[2] in _EXACT_PROVIDER_KEYS
    return len(path) >= 5 and path[0] == "routes" and path[2] == "allow" and path[4] in _EXACT_RULE_KEYS


def check_unused_providers(doc: Document, providers: Sequence[str], routes: Sequence[Route]) -> None:
    used = {provider for route in routes for provider in route.providers}
    for name in providers:
        if name not in used:
            doc.warn(("providers", name), f'provider "{name}" is not used by any route')


def check_headers(doc: Document, headers: IdentityHeaders) -> None:
    """Two identity fields in one header would let one overwrite the other; a reserved name would break the call."""
    seen: dict[str, str] = {}
    for key in ("subject", "user", "tenant", "roles", "provider"):
        name: str = getattr(headers, key)
        first = seen.setdefault(name.lower(), key)
        if name.lower() in _RESERVED_HEADERS:
            doc.error(("identity_headers", key), f'header "{name}" is reserved; choose another name')
        elif first != key:
            doc.error(("identity_headers", key), f'header "{name}" is already used for identity_headers.{first}')


def _match_path(index: int, match: Match) -> Path:
    return ("routes", index, "match", "path" if match.path is not None else "path_prefix")


def _describe(match: Match) -> str:
    return f"path {match.path}" if match.path is not None else f"path_prefix {match.path_prefix}"


def _shared(a: Match, b: Match) -> str:
    if a.methods is None and b.methods is None:
        return "every method"
    if a.methods is None or b.methods is None:
        return ", ".join(sorted(a.methods or b.methods or ()))
    return ", ".join(sorted(a.methods & b.methods))


def did_you_mean(key: str, allowed: Sequence[str]) -> str:
    """A hint for an unknown key: where it belongs when it is a known key of another place, else the closest
    allowed key. `allowed` tells where the key was found (a rule, a route, a provider)."""
    fields = set(allowed)
    if {"provider", "claims"} <= fields and key in ("roles", "role", "wids", "idtyp", "tid"):  # an allow rule
        claim = "roles" if key == "role" else key
        return f": did you mean claims: {{{claim}: [...]}}?"
    if {"allow", "upstream"} <= fields and key in _RULE_KEYS:  # a route
        return f": {key} belongs in an allow rule: allow: [{{provider: ..., {key}: ...}}]"
    if {"entra", "issuer"} <= fields and key in _ENTRA_KEYS:  # a provider
        extra = "" if key == "tenant" else f", {key}: ..."
        return f": {key} belongs under entra: entra: {{tenant: ...{extra}}}"
    close = difflib.get_close_matches(key.lower(), list(allowed), n=1, cutoff=0.7)
    return f': did you mean "{close[0]}"?' if close else ""


def check_never_match(doc: Document, routes: Mapping[int, Route], providers: Mapping[str, Provider]) -> None:
    """Warnings for what the loader accepts but that no real call can match, or that gives a secret away."""
    for name in providers:
        _default_scope_audiences(doc, ("providers", name, "audiences"))
    for index, route in routes.items():
        path: Path = ("routes", index)
        _upstream_in_clear(doc, (*path, "upstream"), route.upstream)
        if route.mode is Mode.AUDIT and urlsplit(route.upstream).query:
            doc.warn(
                (*path, "mode"),
                "mode: audit forwards calls that fail authorization too, so anyone can reach this upstream's secret "
                "URL (its query, such as sig) without a token; switch to mode: enforce once the audit is done",
            )
        if isinstance(route.allow, Anyone):
            continue
        for rule in route.allow:
            rule_path = (*path, "allow", rule.index)
            provider = providers.get(rule.provider)
            if provider is not None and provider.entra:
                _entra_identifiers(doc, rule_path)
                _entra_claim_names(doc, rule_path, rule)
            _role_display_names(doc, rule_path, rule)
            if rule.caller is CallerKind.APP and rule.users is not None and rule.users.names:
                doc.warn((*rule_path, "users"), "app tokens carry no upn: the entries with @ never match an app")
        _scopes_on_app_only_rule(doc, path, route.allow)


def _upstream_in_clear(doc: Document, path: Path, upstream: str) -> None:
    parts = urlsplit(upstream)
    if parts.scheme == "http" and parts.query and not is_loopback(parts.hostname or ""):
        doc.warn(
            path,
            f"http:// sends the query (a signature such as sig) in clear text to {parts.hostname}: "
            "anyone on the way can read and replay it; use https://",
        )


# key -> what Entra puts in the claim it is matched with, and what else it may be
_ENTRA_IDS: Final = {
    "users": "is not an object id: Entra names a user by oid (a GUID, on the user's Overview page) or upn; "
    "a display name never matches",
    "apps": "is not an application (client) id: Entra's azp and appid are GUIDs (the app registration's "
    "Overview page); an app's name never matches",
    "groups": "is not a group object id: Entra's groups claim lists GUIDs, unless the app registration is set to "
    "emit names (sAMAccountName or cloud group names)",
}


def _entra_identifiers(doc: Document, rule_path: Path) -> None:
    """Entra identifies users, apps and groups by GUIDs; an entry that is none (a display name, an app's name)
    never matches. Read from the file's data so that each warning points at its entry's line."""
    rule = _at(doc.data, rule_path)
    for key, why in _ENTRA_IDS.items():
        entries = rule.get(key) if isinstance(rule, dict) else None
        for n, entry in enumerate(entries if isinstance(entries, list) else ()):
            if not isinstance(entry, str) or _GUID.fullmatch(entry):
                continue
            if key == "users" and ("@" in entry or _ENTRA_SUB.fullmatch(entry)):
                continue  # a upn (warned about elsewhere) or a pairwise sub
            doc.warn((*rule_path, key, n), f'"{entry}" {why}')


# The claims of Entra's access tokens (Microsoft Learn, "Access token claims reference"), for "did you mean".
_ENTRA_CLAIMS: Final = (
    "acct", "acr", "acrs", "aio", "amr", "appid", "appidacr", "aud", "azp", "azpacr", "ctry", "exp", "family_name",
    "given_name", "groups", "hasgroups", "iat", "idp", "idtyp", "in_corp", "ipaddr", "iss", "login_hint", "name",
    "nbf", "oid", "onprem_sid", "preferred_username", "puid", "pwd_exp", "pwd_url", "rh", "roles", "scp", "sid",
    "sub", "tenant_ctry", "tenant_region_scope", "tid", "unique_name", "upn", "uti", "ver", "verified_primary_email",
    "verified_secondary_email", "wids", "xms_cc", "xms_pdl", "xms_pl", "xms_tpl",
)  # fmt: skip


def _entra_claim_names(doc: Document, rule_path: Path, rule: AllowRule) -> None:
    """Claim names are case-sensitive, and Entra's are few: `role` or `Roles` is in no token, `roles` is."""
    for requirement in rule.claims:
        name = requirement.name
        if name in _ENTRA_CLAIMS:
            continue
        lowered = {claim.lower(): claim for claim in _ENTRA_CLAIMS}
        close = lowered.get(name.lower()) or next(
            iter(difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.75)), None
        )
        if close is not None:
            doc.warn(
                (*rule_path, "claims", name),
                f'Entra\'s tokens carry no claim "{name}" (claim names are case-sensitive): did you mean "{close}"?',
            )


def _role_display_names(doc: Document, rule_path: Path, rule: AllowRule) -> None:
    """A token's `roles` carries each app role's value (`Payroll.Invoke`), which has no spaces; its display name
    (`Payroll Invoker`) is what the portal shows first, and never appears in a token."""
    for requirement in rule.claims:
        if requirement.name != "roles":
            continue
        for value in sorted(requirement.values):
            if " " in value.strip():
                doc.warn(
                    (*rule_path, "claims", "roles"),
                    f"\"{value}\" has a space: an app role's display name? tokens carry the role's value "
                    "(App roles, Value column, e.g. Payroll.Invoke): use its value",
                )


def _default_scope_audiences(doc: Document, path: Path) -> None:
    """`api://<id>/.default` is the scope a client asks for; the token it gets says `aud: api://<id>` (or the id)."""
    audiences = _at(doc.data, path)
    for n, entry in enumerate(audiences if isinstance(audiences, list) else ()):
        if isinstance(entry, str) and entry.endswith("/.default"):
            doc.warn(
                (*path, n),
                f'"{entry}" is the scope a client requests a token with, never a token\'s aud: list '
                f'"{entry.removesuffix("/.default")}" (the Application ID URI) or the application id',
            )


def _scopes_on_app_only_rule(doc: Document, path: Path, rules: Sequence[AllowRule]) -> None:
    """A rule that asks for scopes and, through `claims: {idtyp: app}`, for an app token can never hold: apps carry
    roles, never scp. (`app_tokens_only` with `scopes` is refused by the loader.) Scopes beside app-only rules are
    fine: users call with scopes, apps with roles."""
    for rule in rules:
        idtyp = next((claim.values for claim in rule.claims if claim.name == "idtyp"), None)
        if rule.scopes is not None and idtyp == frozenset({"app"}):
            doc.warn(
                (*path, "allow", rule.index, "scopes"),
                "scopes match only user (delegated) tokens, and this rule takes app tokens only (idtyp: app): "
                "an app's client-credentials token carries roles, never scp (use claims: {roles: [...]})",
            )


def _at(data: object, path: Path) -> object:
    for part in path:
        if isinstance(data, dict) and isinstance(part, str):
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
        else:
            return None
    return data
