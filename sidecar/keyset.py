"""One provider's key set from its issuer: OIDC discovery (the document must name an accepted issuer), then the JWKS
it points to (or the configured `jwks_uri`), parsed into usable keys, with how long the issuer says to keep them."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from sidecar.fetch import FetchError, get_json, safe_url
from sidecar.jwks import KeyIndex, index, parse_jwks
from sidecar.policy.model import Provider

__all__ = ["KeySet", "fetch_key_set"]


@dataclass(frozen=True, slots=True)
class KeySet:
    keys: KeyIndex
    count: int
    max_age: float | None  # the JWKS response's Cache-Control max-age (0: no-cache / no-store; None: not said)


async def fetch_key_set(client: httpx.AsyncClient, provider: Provider) -> KeySet:
    """Raises FetchError or JwksError; never returns an empty key set."""
    jwks_uri = provider.jwks_uri
    if jwks_uri is None:
        jwks_uri = await _discover(client, provider)
    document = await get_json(client, jwks_uri, "JWKS")
    keys = parse_jwks(document.body)
    return KeySet(index(keys), len(keys), document.max_age)


async def _discover(client: httpx.AsyncClient, provider: Provider) -> str:
    url = provider.discovery_url
    document = (await get_json(client, url, "discovery")).body
    # An issuer mismatch means the document describes someone else (OpenID Connect Discovery §4.3).
    issuer = document.get("issuer")
    if issuer not in provider.issuers:
        wanted = " or ".join(repr(i) for i in sorted(provider.issuers))
        raise FetchError(f"discovery {safe_url(url)}: issuer {issuer!r} is not the configured issuer {wanted}")
    jwks_uri = document.get("jwks_uri")
    if not isinstance(jwks_uri, str):
        raise FetchError(f"discovery {safe_url(url)}: no jwks_uri")
    return jwks_uri
