"""The shape of `providers.<name>`: a JWT issuer (`issuer`, or the `entra` preset) or an RFC 7662 `introspection`
endpoint, with its key-refresh, staleness and hardening options. Cross-checks between keys live here too.

Validator messages never echo the value they reject: a value may have come from a secret (`${VAR}`).
"""

from __future__ import annotations

import re
from typing import Annotated, Final, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from sidecar.policy.entra import is_tenant_id
from sidecar.policy.fields import (
    Algorithms,
    Duration,
    Spec,
    Text,
    TextList,
    between,
    check_url,
    https_url,
    is_loopback,
    not_null,
)
from sidecar.policy.model import (
    DEFAULT_ALGORITHMS,
    DEFAULT_INACTIVE_CACHE_SECONDS,
    DEFAULT_INTROSPECTION_CACHE_SECONDS,
    DEFAULT_INTROSPECTION_MAX_IN_FLIGHT,
    DEFAULT_INTROSPECTION_MAX_WAITING,
    DEFAULT_JWKS_MIN_REFRESH_SECONDS,
    DEFAULT_JWKS_REFRESH_MAX_SECONDS,
    DEFAULT_JWKS_REFRESH_MIN_SECONDS,
    DEFAULT_LEEWAY_SECONDS,
    DEFAULT_MAX_STALE_SECONDS,
    DEFAULT_MAX_TOKEN_BYTES,
)
from sidecar.policy.tls_spec import TlsSpec

__all__ = ["EntraSpec", "IntrospectionSpec", "JWT_ONLY_KEYS", "JwksRefreshSpec", "ProviderSpec"]

# Keys that only mean something for a provider whose tokens are JWTs checked against published keys.
JWT_ONLY_KEYS: Final = (
    "jwks_uri",
    "algorithms",
    "jwks_min_refresh",
    "jwks_refresh",
    "max_stale",
    "require_typ",
)
_MEDIA_TYPE: Final = re.compile(r"[A-Za-z0-9!#$&^_.+-]+(/[A-Za-z0-9!#$&^_.+-]+)?")


def _tenant(value: str) -> str:
    lowered = value.lower()
    if not is_tenant_id(lowered):
        raise ValueError(
            "must be the tenant id, a GUID such as 11111111-2222-3333-4444-555555555555 (tokens carry it in `tid`; "
            "a domain name, common or organizations would not pin the tenant)"
        )
    return lowered


def _loopback_url(value: str) -> str:
    """The authority override serves tests and local proxies only: pointing a real tenant's trust at another
    public host is what the preset exists to prevent."""
    check_url(value, allow_query=False)
    if not is_loopback(urlsplit(value).hostname or ""):
        raise ValueError(
            "must be a loopback URL (localhost, 127.0.0.0/8, ::1): it is meant for tests and local proxies"
        )
    return value.rstrip("/")


def _typ(value: str) -> str:
    # RFC 7515 §4.1.9: compared case-insensitively, and "application/" may be left out.
    if not _MEDIA_TYPE.fullmatch(value):
        raise ValueError("must be a media type such as at+jwt")
    lowered = value.lower()
    return lowered.removeprefix("application/") if "/" in lowered else lowered


class EntraSpec(Spec):
    tenant: Annotated[Text, AfterValidator(_tenant)]
    cloud: Literal["public", "usgov", "china"] = "public"
    authority: Annotated[Text, AfterValidator(_loopback_url)] | None = None


class JwksRefreshSpec(Spec):
    min: Annotated[Duration, between(1, 86_400)] = DEFAULT_JWKS_REFRESH_MIN_SECONDS
    max: Annotated[Duration, between(1, 86_400)] = DEFAULT_JWKS_REFRESH_MAX_SECONDS

    @model_validator(mode="after")
    def _ordered(self) -> JwksRefreshSpec:
        if self.min > self.max:
            raise ValueError("min must not be more than max")
        return self


class IntrospectionSpec(Spec):
    endpoint: Annotated[Text, AfterValidator(https_url)]
    client_id: Text
    client_secret: Text
    cache: Annotated[Duration, between(0, 3600)] = DEFAULT_INTROSPECTION_CACHE_SECONDS
    inactive_cache: Annotated[Duration, between(0, 300)] = DEFAULT_INACTIVE_CACHE_SECONDS
    max_in_flight: Annotated[int, Field(strict=True, ge=1, le=1024)] = DEFAULT_INTROSPECTION_MAX_IN_FLIGHT
    max_waiting: Annotated[int, Field(strict=True, ge=1, le=65_536)] = DEFAULT_INTROSPECTION_MAX_WAITING

    @model_validator(mode="after")
    def _waiting_covers_in_flight(self) -> IntrospectionSpec:
        if self.max_waiting < self.max_in_flight:
            raise ValueError("max_waiting must be at least max_in_flight: every call in flight has a request waiting")
        return self


class ProviderSpec(Spec):
    issuer: Annotated[Text, AfterValidator(https_url)] | None = None
    entra: EntraSpec | None = None
    introspection: IntrospectionSpec | None = None
    audiences: TextList | None = None
    jwks_uri: Annotated[Text, AfterValidator(https_url)] | None = None
    algorithms: Algorithms = list(DEFAULT_ALGORITHMS)
    leeway: Annotated[Duration, between(0, 600)] = DEFAULT_LEEWAY_SECONDS
    jwks_min_refresh: Annotated[Duration, between(1, None)] = DEFAULT_JWKS_MIN_REFRESH_SECONDS
    jwks_refresh: JwksRefreshSpec = JwksRefreshSpec()
    max_stale: Annotated[Duration, between(1, 30 * 86_400)] = DEFAULT_MAX_STALE_SECONDS
    require_typ: Annotated[Text, AfterValidator(_typ)] | None = None
    max_token_bytes: Annotated[int, Field(strict=True, ge=1024, le=65_536)] = DEFAULT_MAX_TOKEN_BYTES
    tls: Annotated[TlsSpec | None, BeforeValidator(not_null)] = None

    @model_validator(mode="after")
    def _one_kind(self) -> ProviderSpec:
        kinds = [name for name in ("issuer", "entra", "introspection") if getattr(self, name) is not None]
        if len(kinds) != 1:
            raise ValueError("needs exactly one of issuer, entra or introspection")
        if self.introspection is not None:
            misplaced = [key for key in JWT_ONLY_KEYS if key in self.model_fields_set]
            if misplaced:
                raise ValueError(f"{', '.join(misplaced)}: only for JWT providers (issuer or entra), not introspection")
        elif self.audiences is None:
            raise ValueError("audiences is required: the aud values this sidecar's tokens carry")
        if self.jwks_refresh.max >= self.max_stale:
            raise ValueError(
                "jwks_refresh.max must be less than max_stale, or good keys would expire between refreshes"
            )
        return self
