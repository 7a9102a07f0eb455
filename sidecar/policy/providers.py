"""A validated `providers.<name>` spec -> the resolved, frozen `Provider` the verifier trusts (Entra issuers and
discovery worked out, audiences completed, refresh bounds set)."""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

from sidecar.policy.entra import CLOUDS, app_id_audiences, endpoints
from sidecar.policy.model import Introspection, Provider, UpstreamTls
from sidecar.policy.provider_spec import ProviderSpec

__all__ = ["ENTRA_HOSTS", "build_provider"]

# Hosts that name an Entra issuer: a provider configured with a plain `issuer` on one of them is Entra too.
ENTRA_HOSTS: Final = frozenset(
    urlsplit(host).hostname or ""
    for cloud in CLOUDS.values()
    for host in (cloud.login, *cloud.v1_issuer_hosts, *cloud.v2_issuer_hosts)
)


def build_provider(name: str, spec: ProviderSpec, tls: UpstreamTls | None = None) -> Provider:
    issuer = spec.issuer or ""
    audiences = frozenset(spec.audiences or ())
    issuers: frozenset[str] = frozenset()  # empty: just `issuer`
    tenant = discovery = None
    is_entra = urlsplit(issuer).hostname in ENTRA_HOSTS
    if spec.entra is not None:
        found = endpoints(spec.entra.tenant, spec.entra.cloud, spec.entra.authority)
        issuer, issuers, discovery, tenant, is_entra = (
            found.issuer,
            found.issuers,
            found.discovery_url,
            spec.entra.tenant,
            True,
        )
        audiences = app_id_audiences(audiences)
    introspection = None
    if spec.introspection is not None:
        given = spec.introspection
        introspection = Introspection(
            given.endpoint,
            given.client_id,
            given.client_secret,
            given.cache,
            given.inactive_cache,
            given.max_in_flight,
            given.max_waiting,
        )
    return Provider(
        name,
        issuer,
        audiences,
        spec.jwks_uri,
        tuple(dict.fromkeys(spec.algorithms)),  # deduplicated, order kept
        spec.leeway,
        spec.jwks_min_refresh,
        issuers=issuers,
        tenant=tenant,
        discovery=discovery,
        jwks_refresh_min=spec.jwks_refresh.min,
        jwks_refresh_max=spec.jwks_refresh.max,
        max_stale=spec.max_stale,
        require_typ=spec.require_typ,
        max_token_bytes=spec.max_token_bytes,
        introspection=introspection,
        entra=is_entra,
        tls=tls,
    )
