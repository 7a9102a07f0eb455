"""The policy's `tls:` settings, built: a client context per route for the data plane, an httpx client per provider
for the control plane (discovery, JWKS, introspection). Built whole on every load and reload, before the policy
is used: `check` reports what serving would (FILE:LINE), a reload whose files do not load keeps the current policy,
and a SIGHUP takes rotated files (same settings, new content: new connections use it)."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from sidecar.auth.issuer_http import FETCH_TIMEOUT_SECONDS
from sidecar.policy.load import PolicyError
from sidecar.policy.model import Policy, Provider, UpstreamTls
from sidecar.upstream.tls import UpstreamTlsError, Verified, client_context

__all__ = ["BuiltTls", "ControlClients", "build_tls", "control_client", "tls_errors"]


@dataclass(frozen=True, slots=True)
class BuiltTls:
    routes: Mapping[str, ssl.SSLContext]  # by route name: routes without `tls:` are absent
    providers: Mapping[UpstreamTls, Verified]


def build_tls(policy: Policy) -> BuiltTls:
    """Every route's and provider's `tls:`, each distinct setting built once; PolicyError lists what failed."""
    built: dict[UpstreamTls, Verified] = {}
    errors: list[str] = []
    wanted = [route.tls for route in policy.routes] + [provider.tls for provider in policy.providers.values()]
    for tls in wanted:
        if tls is None or tls in built:
            continue
        try:
            built[tls] = client_context(tls)
        except UpstreamTlsError as exc:
            errors.append(f"{tls.where}: {exc}")
    if errors:
        raise PolicyError(sorted(set(errors)))
    routes = {route.name: built[route.tls].context for route in policy.routes if route.tls is not None}
    providers = {provider.tls: built[provider.tls] for provider in policy.providers.values() if provider.tls}
    return BuiltTls(routes, providers)


def tls_errors(policy: Policy) -> list[str]:
    try:
        build_tls(policy)
    except PolicyError as exc:
        return exc.errors
    return []


def control_client(verify: ssl.SSLContext | bool = True) -> httpx.AsyncClient:
    """A control-plane client: no redirects, no proxy or CA settings from the environment (SSL_CERT_FILE aside)."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(FETCH_TIMEOUT_SECONDS), follow_redirects=False, trust_env=False, verify=verify
    )


class ControlClients:
    """The control plane's httpx clients: the default one, and one per provider `tls:` setting and content."""

    def __init__(self, default: httpx.AsyncClient) -> None:
        self.default = default
        self._own: dict[UpstreamTls, tuple[str, httpx.AsyncClient]] = {}
        self._retired: list[httpx.AsyncClient] = []  # replaced by a rotation: closed with the rest at the end

    def use(self, built: Mapping[UpstreamTls, Verified]) -> None:
        """A client for each setting whose content is new; an unchanged one keeps its client (its connections)."""
        for tls, verified in built.items():
            current = self._own.get(tls)
            if current is not None and current[0] == verified.digest:
                continue
            if current is not None:
                self._retired.append(current[1])  # a fetch may still be using it
            self._own[tls] = (verified.digest, control_client(verified.context))

    def for_provider(self, provider: Provider) -> httpx.AsyncClient:
        if provider.tls is None:
            return self.default
        own = self._own.get(provider.tls)
        return own[1] if own is not None else self.default

    async def close(self) -> None:
        for client in [self.default, *(own[1] for own in self._own.values()), *self._retired]:
            await client.aclose()
