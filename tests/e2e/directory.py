"""Who is who in the end-to-end suite: tenants, principals and their Entra-shaped claims, in one table.

The same table feeds the OpenID Provider (its clients and token claims), the sidecar's policy (issuers, lisa's
object id, the upstream secrets) and the Postman environment (client ids, secrets, expected identity headers).
Client secrets and upstream `sig` values are drawn fresh for every run.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

__all__ = ["AUDIENCE", "CONTOSO", "FABRIKAM", "PRINCIPALS", "ROUTE_SIGS", "Directory", "Principal", "Tenant"]

AUDIENCE = "api://trigger-gateway"


@dataclass(frozen=True)
class Tenant:
    name: str  # the sidecar's provider name
    id: str  # the tenant id: in the issuer path and the `tid` claim
    alg: str  # the algorithm its OpenID Provider signs access tokens with


@dataclass(frozen=True)
class Principal:
    key: str  # the name in the collection's variables (`lisa_client_id`, `lisa_token`, ...)
    tenant: Tenant
    client_id: str
    oid: str
    upn: str | None = None  # users have one, apps do not
    roles: tuple[str, ...] = ()

    def claims(self) -> dict[str, Any]:
        """What Entra puts in a v2 access token for this caller (the IdP adds iss, aud, sub, exp, iat, jti)."""
        claims: dict[str, Any] = {
            "ver": "2.0",
            "tid": self.tenant.id,
            "oid": self.oid,
            "azp": self.client_id,
            "appid": self.client_id,
            "idtyp": "user" if self.upn else "app",
        }
        if self.upn:
            claims |= {"upn": self.upn, "preferred_username": self.upn, "name": self.key.capitalize()}
        if self.roles:
            claims["roles"] = list(self.roles)
        return claims


CONTOSO = Tenant("contoso", "5f0e8c3a-2b7d-4e19-9c41-7a6d2e8b1f03", "RS256")
FABRIKAM = Tenant("fabrikam", "c2d94b71-8e3f-4a56-b0d2-91e7f4a8c6e5", "ES256")

PRINCIPALS = (
    Principal("lisa", CONTOSO, "1b7e4f2c-lisa-app", "8d2f6a91-3c4e-4b7a-a5d1-0e9f3b2c7a64", "lisa@contoso.example"),
    Principal("bob", CONTOSO, "4c9a1d3e-bob-app", "2e7b9c05-6f1a-4d83-b2e4-c8a1f5d3e970", "bob@contoso.example"),
    Principal("eve", FABRIKAM, "9f3b6e2a-eve-app", "6a1c8e47-d2b9-4f05-93e6-b7d4a0c2f815", "eve@fabrikam.example"),
    Principal(
        "payroll_app",
        CONTOSO,
        "7e2d5c8b-payroll-app",
        "3b8f1e6d-9a2c-4d57-8e0b-f4c6a9d2b183",
        None,
        ("Payroll.Invoke",),
    ),
    Principal("plain_app", CONTOSO, "0a6f3d9e-plain-app", "d5e2a8c1-7b4f-4e96-a0c3-2f9b6d1e8a47"),
)

# Route name -> the environment variable holding the `sig` of its upstream URL (the trigger URL's secret).
ROUTE_SIGS = {"status": "STATUS_SIG", "user-lookup": "LOOKUP_SIG", "payroll": "PAYROLL_SIG", "partner": "PARTNER_SIG"}


@dataclass
class Directory:
    """One run's directory: the fixed table above plus fresh secrets."""

    client_secrets: dict[str, str] = field(default_factory=lambda: {p.key: _secret() for p in PRINCIPALS})
    sigs: dict[str, str] = field(default_factory=lambda: {var: _secret() for var in ROUTE_SIGS.values()})

    def idp_config(self) -> dict[str, Any]:
        """The OpenID Provider's input (tests/e2e/idp/idp.mjs)."""
        tenants = []
        for tenant in (CONTOSO, FABRIKAM):
            clients = [
                {"client_id": p.client_id, "client_secret": self.client_secrets[p.key], "claims": p.claims()}
                for p in PRINCIPALS
                if p.tenant == tenant
            ]
            tenants.append({"id": tenant.id, "alg": tenant.alg, "clients": clients})
        return {"audience": AUDIENCE, "tenants": tenants}

    def sidecar_env(self, idp: str, httpbin: str) -> dict[str, str]:
        """The variables tests/e2e/policy.yaml reads."""
        lisa = next(p for p in PRINCIPALS if p.key == "lisa")
        return {
            "CONTOSO_ISSUER": f"{idp}/{CONTOSO.id}/v2.0",
            "FABRIKAM_ISSUER": f"{idp}/{FABRIKAM.id}/v2.0",
            "HTTPBIN": httpbin,
            "LISA_OID": lisa.oid,
            **self.sigs,
        }

    def postman_values(self, idp: str, proxy: str) -> dict[str, str]:
        """The Postman environment: where things are, each principal's credentials and expected identity."""
        values = {
            "authority": idp,
            "proxy": proxy,
            "audience": AUDIENCE,
            "contoso_tenant": CONTOSO.id,
            "fabrikam_tenant": FABRIKAM.id,
        }
        values |= {f"{route}_sig".replace("-", "_"): self.sigs[var] for route, var in ROUTE_SIGS.items()}
        for p in PRINCIPALS:
            values |= {
                f"{p.key}_client_id": p.client_id,
                f"{p.key}_client_secret": self.client_secrets[p.key],
                f"{p.key}_oid": p.oid,
                f"{p.key}_upn": p.upn or "",
                f"{p.key}_tid": p.tenant.id,
                f"{p.key}_roles": ",".join(p.roles),
                f"{p.key}_provider": p.tenant.name,
            }
        return values

    def secrets(self) -> list[str]:
        """Every secret of the run: none may appear in a line the sidecar writes."""
        return [*self.client_secrets.values(), *self.sigs.values()]


def _secret() -> str:
    return secrets.token_urlsafe(24)
