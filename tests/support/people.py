"""The demo issuer's callers as the suites use them: their claims, and a bearer token minted for them."""

from __future__ import annotations

from typing import Final

from sidecar.demo.issuer import CONTOSO_TENANT, DemoIssuer

__all__ = ["AUD", "LISA", "TOM", "bearer"]

AUD: Final = "api://trigger-gateway"  # the audience every test policy's contoso provider accepts
LISA: Final = {"oid": "aaaaaaaa-0000-0000-0000-00000000000a", "sub": "lisa-sub", "upn": "lisa@contoso.com"}
TOM: Final = {"oid": "aaaaaaaa-0000-0000-0000-00000000000b", "sub": "tom-sub", "upn": "tom@contoso.com"}


def bearer(issuer: DemoIssuer, who: dict[str, str], **claims: object) -> list[tuple[str, str]]:
    """An Authorization header with a contoso token for `who` (claims override)."""
    minted = issuer.mint(CONTOSO_TENANT, {"aud": AUD, **who, **claims})
    return [("Authorization", f"Bearer {minted}")]
