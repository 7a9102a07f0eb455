"""Claims written by hand (`sidecar explain --claims`, `sidecar test`): the registered claims left out, filled in.

A case should name only what its rules read (`oid`, `roles`, ...). What a real token of the route's provider always
carries is added when absent: `iss` (the provider's issuer), `aud` (its first audience), `tid` (an Entra provider's
tenant) and `exp` (an hour from now). A claim that is given is kept as written, so `exp: 0` tests an expired token.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from sidecar.policy.model import Provider

__all__ = ["HOUR", "completed"]

HOUR = 3600


def completed(
    claims: Mapping[str, object], allowed: Collection[str], providers: Mapping[str, Provider], now: float
) -> dict[str, object]:
    """`claims` with the registered claims of their provider filled in: the allowed provider whose issuers hold
    `iss`, or, without `iss`, the only allowed provider that has an issuer (none or several: nothing is filled,
    and the verifier then refuses the missing issuer)."""
    filled = dict(claims)
    provider = _provider(filled.get("iss"), allowed, providers)
    if provider is None:
        return filled
    filled.setdefault("iss", provider.issuer)
    if "aud" not in filled and provider.audiences:
        filled["aud"] = sorted(provider.audiences)[0]
    if provider.tenant is not None:
        filled.setdefault("tid", provider.tenant)
    filled.setdefault("exp", int(now) + HOUR)
    return filled


def _provider(issuer: object, allowed: Collection[str], providers: Mapping[str, Provider]) -> Provider | None:
    candidates = [providers[name] for name in sorted(allowed) if name in providers and providers[name].issuers]
    if issuer is None:
        return candidates[0] if len(candidates) == 1 else None
    if not isinstance(issuer, str):  # no provider's: the verifier refuses it as malformed (a list is not hashable)
        return None
    return next((p for p in candidates if issuer in p.issuers), None)
