"""One provider's key set from its issuer: OIDC discovery (the document must name an accepted issuer), then the JWKS
it points to (or the configured `jwks_uri`), parsed into usable keys, with how long the issuer says to keep them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from sidecar.auth.issuer_http import FetchError, get_json, safe_url
from sidecar.auth.jwks import KeyIndex, index, parse_jwks
from sidecar.policy.model import Provider

__all__ = ["KeySet", "fetch_key_set", "jwks_uri_of"]


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
    keys = parse_jwks(document.body, provider.name)
    return KeySet(index(keys), len(keys), document.max_age)


async def _discover(client: httpx.AsyncClient, provider: Provider) -> str:
    url = provider.discovery_url
    return jwks_uri_of((await get_json(client, url, "discovery")).body, provider.issuers, url)


def jwks_uri_of(document: Mapping[str, Any], issuers: frozenset[str], url: str) -> str:
    """The `jwks_uri` a discovery document names; raises FetchError when it describes another issuer or names none.
    Any JSON object is safe to pass: a member of the wrong type is refused, never raised as something else."""
    # An issuer mismatch means the document describes someone else (OpenID Connect Discovery §4.3).
    issuer = document.get("issuer")
    if not isinstance(issuer, str) or issuer not in issuers:
        wanted = " or ".join(repr(i) for i in sorted(issuers))
        shown = repr(issuer[:200]) if isinstance(issuer, str) else f"of type {type(issuer).__name__}"
        raise FetchError(f"discovery {safe_url(url)}: issuer {shown} is not the configured issuer {wanted}")
    jwks_uri = document.get("jwks_uri")
    if not isinstance(jwks_uri, str):
        raise FetchError(f"discovery {safe_url(url)}: no jwks_uri")
    return jwks_uri
