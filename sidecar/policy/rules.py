"""A validated `allow` rule spec -> the frozen `AllowRule` that `authorize` evaluates, with the checks that need the
rule's provider (which is known only once the providers are loaded)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sidecar.policy.allow import SCOPE_CLAIMS
from sidecar.policy.entra import guids_lowered
from sidecar.policy.model import AllowRule, CallerKind, ClaimRequirement, Provider, UserSet
from sidecar.policy.schema import RuleSpec
from sidecar.policy.yamlmarks import Document, Path

__all__ = ["build_rule"]


def build_rule(
    doc: Document, path: Path, index: int, spec: RuleSpec, providers: Mapping[str, Provider], known: Sequence[str]
) -> AllowRule | None:
    """The rule, or None when it is invalid (each error reported on `doc`). `known` lists every provider name in
    the file, valid or not: an unknown one is reported elsewhere, an invalid one already was."""
    valid = spec.provider in known
    provider = providers.get(spec.provider)
    if provider is not None and provider.entra:
        spec = _entra_ids(spec)
    users = _users(doc, (*path, "users"), spec.users) if spec.users is not None else None
    claims = []
    for name, values in (spec.claims or {}).items():
        if name in SCOPE_CLAIMS and any(" " in value for value in values):
            doc.error((*path, "claims", name), "a scope never contains a space: list each scope as its own item")
            valid = False
        claims.append(ClaimRequirement(name, frozenset(values)))
    caller = CallerKind.USER if spec.user_tokens_only else CallerKind.APP if spec.app_tokens_only else None
    if caller is not None and provider is not None and not provider.entra:
        key = "user_tokens_only" if caller is CallerKind.USER else "app_tokens_only"
        doc.error(
            (*path, key),
            f'provider "{spec.provider}" is not Microsoft Entra: only Entra says reliably whether a token is an '
            "app's (idtyp, or no scp); match apps by `apps` or by a claim instead",
        )
        valid = False
    if not valid:
        return None
    return AllowRule(
        spec.provider,
        users,
        tuple(claims),
        index,
        apps=_set(spec.apps),
        groups=_set(spec.groups),
        scopes=_set(spec.scopes),
        caller=caller,
    )


def _entra_ids(spec: RuleSpec) -> RuleSpec:
    """Entra's GUIDs in lower case, as its tokens carry them (users' oid, apps' azp/appid, groups)."""
    lowered = {key: guids_lowered(getattr(spec, key)) for key in ("users", "apps", "groups") if getattr(spec, key)}
    return spec.model_copy(update=lowered)


def _set(values: Sequence[str] | None) -> frozenset[str] | None:
    return frozenset(values) if values is not None else None


def _users(doc: Document, path: Path, entries: Sequence[str]) -> UserSet:
    """Split once: names (with `@`) are compared lowercased with upn/preferred_username, ids exactly."""
    names = set()
    for n, entry in enumerate(entries):
        if "@" in entry:
            names.add(entry.lower())
            doc.warn((*path, n), f'"{entry}" matches the mutable upn/preferred_username; prefer the object id (oid)')
    return UserSet(frozenset(entry for entry in entries if "@" not in entry), frozenset(names))
