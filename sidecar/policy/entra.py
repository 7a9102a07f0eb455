"""Microsoft Entra ID: the issuers and discovery document of a tenant in each cloud, for the `entra:` provider preset.

Entra signs v1 and v2 access tokens of a tenant with the same keys, but names itself differently in each: a v1 token's
`iss` is the cloud's security token service (`https://sts.windows.net/<tid>/`), a v2 token's is the login host
(`https://login.microsoftonline.com/<tid>/v2.0`). Which one an API receives depends on the API's app registration
(`requestedAccessTokenVersion`), not on the caller, so the preset accepts both.

Where the forms come from (checked when this was written):
- login hosts per cloud: Microsoft Learn, "National clouds" (entra/identity-platform/authentication-national-cloud):
  login.microsoftonline.com, login.microsoftonline.us, login.chinacloudapi.cn.
- v1 issuers: `https://sts.windows.net/<tid>/` in the global cloud and also in Azure Government: Microsoft's own
  botbuilder-dotnet `SkillValidation.cs` lists `https://sts.windows.net/<tid>/` and `https://login.microsoftonline
  .us/<tid>/` as "Auth for US Gov, 1.0 token" and `https://login.microsoftonline.us/<tid>/v2.0` as "Auth for US
  Gov, 2.0 token", so usgov accepts both v1 spellings. `https://sts.chinacloudapi.cn/<tid>/` for the cloud
  operated by 21Vianet (MicrosoftDocs/azure-docs issue 123050, and v1 token samples in Microsoft's docs for it).
- China v2: tokens name `https://login.partner.microsoftonline.cn/<tid>/v2.0` (Microsoft Q&A 1190472, as cited by
  snowflake-connector-python's issuer list); `login.chinacloudapi.cn` is that cloud's other login host, so both
  spellings are accepted there. Either way the discovery document's own `issuer` must be one of these.

Only these forms are accepted, each with the configured tenant id, and the token's `tid` must equal that tenant.
This module is pure data and string building (the policy package imports it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

__all__ = [
    "CLOUDS",
    "EntraCloud",
    "EntraEndpoints",
    "app_id_audiences",
    "endpoints",
    "guids_lowered",
    "is_tenant_id",
]

_GUID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(frozen=True, slots=True)
class EntraCloud:
    """One cloud instance: the host that serves discovery and keys, and the hosts that name the issuer."""

    login: str  # discovery and keys: {login}/{tid}/v2.0/.well-known/openid-configuration
    v1_issuer_hosts: tuple[str, ...]  # iss = {host}/{tid}/
    v2_issuer_hosts: tuple[str, ...]  # iss = {host}/{tid}/v2.0


CLOUDS: Final[dict[str, EntraCloud]] = {
    "public": EntraCloud(
        "https://login.microsoftonline.com", ("https://sts.windows.net",), ("https://login.microsoftonline.com",)
    ),
    "usgov": EntraCloud(
        "https://login.microsoftonline.us",
        ("https://sts.windows.net", "https://login.microsoftonline.us"),
        ("https://login.microsoftonline.us",),
    ),
    "china": EntraCloud(
        "https://login.chinacloudapi.cn",
        ("https://sts.chinacloudapi.cn",),
        ("https://login.partner.microsoftonline.cn", "https://login.chinacloudapi.cn"),
    ),
}


@dataclass(frozen=True, slots=True)
class EntraEndpoints:
    issuer: str  # the v2 issuer, as the cloud's v2 discovery document names it
    issuers: frozenset[str]  # every accepted `iss`
    discovery_url: str  # where the keys are found (its `issuer` must be one of `issuers`)


def is_tenant_id(value: str) -> bool:
    """A tenant id as tokens carry it in `tid`: a lower-case GUID (never a domain name, `common` or `organizations`:
    a multi-tenant preset would accept any tenant's tokens)."""
    return _GUID.fullmatch(value) is not None


def endpoints(tenant: str, cloud: str, authority: str | None = None) -> EntraEndpoints:
    """The issuers and discovery URL of `tenant` in `cloud`.

    `authority` replaces every host with one base URL (a loopback test issuer or local proxy shaped like Entra):
    the v1 issuer becomes `{authority}/{tid}/`, the v2 issuer `{authority}/{tid}/v2.0`."""
    if authority is not None:
        base = authority.rstrip("/")
        spec = EntraCloud(base, (base,), (base,))
    else:
        spec = CLOUDS[cloud]
    issuers = {f"{host}/{tenant}/" for host in spec.v1_issuer_hosts}
    issuers |= {f"{host}/{tenant}/v2.0" for host in spec.v2_issuer_hosts}
    issuer = f"{spec.v2_issuer_hosts[0]}/{tenant}/v2.0"
    return EntraEndpoints(issuer, frozenset(issuers), f"{spec.login}/{tenant}/v2.0/.well-known/openid-configuration")


def app_id_audiences(audiences: Iterable[str]) -> frozenset[str]:
    """The audiences with `api://<id>` added for every bare application id (a GUID). v2 tokens carry the app id,
    v1 tokens the App ID URI, which Entra proposes as `api://<app id>` by default."""
    listed = frozenset(audiences)
    app_ids = {value.lower() for value in listed if _GUID.fullmatch(value.lower())}  # tokens carry it lower-case
    return listed | app_ids | {f"api://{app_id}" for app_id in app_ids}


def guids_lowered(values: Iterable[str]) -> list[str]:
    """The entries with every GUID lower-cased: Entra writes oid, appid, azp and groups in lower case, and the
    portal's copy buttons (or PowerShell) may give upper case, which would then never match."""
    return [value.lower() if _GUID.fullmatch(value.lower()) else value for value in values]
