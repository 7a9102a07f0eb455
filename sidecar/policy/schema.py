"""The policy file's shape as pydantic models: every key, type and per-value rule (cross-references live in load).

Validator messages never echo the value they reject: a value may have come from a secret (`${VAR}`).
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BeforeValidator, Discriminator, Field, Tag, model_validator

from sidecar.policy.cors import ANY_ORIGIN, normalise_origin
from sidecar.policy.fields import (
    ALGORITHMS,
    NAME_PATTERN,
    ClaimMap,
    Duration,
    Methods,
    Spec,
    Text,
    TextList,
    between,
    header_name,
    metric_name,
    not_null,
    parse_duration,
    realm_text,
    route_path,
    upstream_url,
    version_number,
)
from sidecar.policy.limits import (
    DEFAULT_MAX_BODY,
    DEFAULT_MAX_CONCURRENT,
    DEFAULT_MAX_QUERY_PARAMS,
    parse_count,
    parse_query_params,
    parse_size,
)
from sidecar.policy.model import (
    DEFAULT_REALM,
    DEFAULT_TIMEOUT_SECONDS,
    IdentityHeaders,
)
from sidecar.policy.tls_spec import TlsSpec

__all__ = [
    "ALGORITHMS",
    "NAME_PATTERN",
    "CorsSpec",
    "IdentityHeadersSpec",
    "MatchSpec",
    "PolicySpec",
    "RateLimitSpec",
    "RouteSpec",
    "RuleSpec",
    "parse_duration",
]


def _scope(value: str) -> str:
    if " " in value:
        raise ValueError("a scope never contains a space: list each scope as its own item")
    return value


Scopes = Annotated[list[Annotated[Text, AfterValidator(_scope)]], Field(min_length=1)]


class RuleSpec(Spec):
    """One `allow` alternative. The provider spec is in provider_spec (it needs this module's field types)."""

    provider: Text
    users: Annotated[TextList | None, BeforeValidator(not_null)] = None
    apps: Annotated[TextList | None, BeforeValidator(not_null)] = None
    groups: Annotated[TextList | None, BeforeValidator(not_null)] = None
    scopes: Annotated[Scopes | None, BeforeValidator(not_null)] = None
    claims: Annotated[ClaimMap | None, BeforeValidator(not_null)] = None
    user_tokens_only: bool = False
    app_tokens_only: bool = False

    @model_validator(mode="after")
    def _caller(self) -> RuleSpec:
        if self.user_tokens_only and self.app_tokens_only:
            raise ValueError("user_tokens_only and app_tokens_only exclude each other: no token is both")
        if self.app_tokens_only and self.scopes is not None:
            raise ValueError(
                "scopes never match app tokens (client credentials carry roles, never scp): use claims.roles"
            )
        return self


class MatchSpec(Spec):
    path: Annotated[str, AfterValidator(route_path)] | None = None
    path_prefix: Annotated[str, AfterValidator(route_path)] | None = None
    methods: Annotated[Methods | None, BeforeValidator(not_null)] = None

    @model_validator(mode="after")
    def _one_matcher(self) -> MatchSpec:
        if (self.path is None) == (self.path_prefix is None):
            raise ValueError("needs exactly one of path or path_prefix")
        return self


def _allow_kind(value: object) -> str | None:
    if value == "anyone":
        return "anyone"
    return "rules" if isinstance(value, list) else None


Allow = Annotated[
    Annotated[Literal["anyone"], Tag("anyone")] | Annotated[list[RuleSpec], Field(min_length=1), Tag("rules")],
    Discriminator(_allow_kind, custom_error_type="allow", custom_error_message='must be "anyone" or a list of rules'),
]


# --- rate_limit and cors (built and checked against their route in policy.route_options) ------------------


def _window(seconds: float) -> float:
    if seconds != int(seconds) or not 1 <= seconds <= 86_400:
        raise ValueError("must be whole seconds from 1s to 24h")
    return seconds


def _requests(value: int) -> int:
    if not 1 <= value <= 100_000:  # the moving window keeps one entry per request it counts
        raise ValueError("must be a whole number from 1 to 100000")
    return value


def _ipv6_prefix(value: int) -> int:
    if not 32 <= value <= 128:  # below /32 one budget would span a whole provider's customers
        raise ValueError("must be a prefix length from 32 to 128 (64: one subscriber's IPv6 network)")
    return value


class RateLimitSpec(Spec):
    per: Literal["subject", "app", "ip"]
    requests: Annotated[int, Field(strict=True), AfterValidator(_requests)]
    window: Annotated[Duration, AfterValidator(_window)] = 60.0
    ipv6_prefix: Annotated[int, Field(strict=True), AfterValidator(_ipv6_prefix)] | None = None  # None: the default


def _origins(values: list[str]) -> list[str]:
    if ANY_ORIGIN in values and len(values) > 1:
        raise ValueError('"*" (every origin) stands alone')
    return values


def _cors_header(value: str) -> str:
    if value == "*":
        raise ValueError('list the header names: "*" would never cover Authorization (Fetch standard)')
    return header_name(value)


CorsHeaders = list[Annotated[str, AfterValidator(_cors_header)]]
Origins = Annotated[
    list[Annotated[str, AfterValidator(normalise_origin)]], Field(min_length=1), AfterValidator(_origins)
]


class CorsSpec(Spec):
    origins: Origins
    methods: Annotated[Methods | None, BeforeValidator(not_null)] = None  # None: the route's methods
    headers: CorsHeaders = ["Authorization"]
    expose_headers: CorsHeaders = []
    max_age: Annotated[Duration, between(0, 86_400)] = 600.0
    credentials: bool = False

    @model_validator(mode="after")
    def _credentials(self) -> CorsSpec:
        if self.credentials and ANY_ORIGIN in self.origins:
            raise ValueError('credentials: true needs the origins listed: with "*" any site could read the answers')
        return self


class RouteSpec(Spec):
    name: Annotated[Text, AfterValidator(metric_name)]
    match: MatchSpec
    upstream: Annotated[Text, AfterValidator(upstream_url)]
    allow: Allow
    mode: Literal["enforce", "audit"] = "enforce"
    forward_token: bool = False
    forward_query: bool = True
    timeout: Annotated[Duration, between(0, None, above=True)] = DEFAULT_TIMEOUT_SECONDS
    rate_limit: Annotated[RateLimitSpec | None, BeforeValidator(not_null)] = None
    cors: Annotated[CorsSpec | None, BeforeValidator(not_null)] = None
    max_body: Annotated[int | None, BeforeValidator(parse_size)] = DEFAULT_MAX_BODY
    max_concurrent: Annotated[int | None, BeforeValidator(parse_count)] = DEFAULT_MAX_CONCURRENT
    max_query_params: Annotated[int, BeforeValidator(parse_query_params)] = DEFAULT_MAX_QUERY_PARAMS
    tls: Annotated[TlsSpec | None, BeforeValidator(not_null)] = None


_DEFAULT_HEADERS: Final = IdentityHeaders()
HeaderName = Annotated[str, AfterValidator(header_name)]


class IdentityHeadersSpec(Spec):
    subject: HeaderName = _DEFAULT_HEADERS.subject
    user: HeaderName = _DEFAULT_HEADERS.user
    tenant: HeaderName = _DEFAULT_HEADERS.tenant
    roles: HeaderName = _DEFAULT_HEADERS.roles
    provider: HeaderName = _DEFAULT_HEADERS.provider


class PolicySpec(Spec):
    """The top level. Providers, routes and identity headers are validated one by one (see load) so that one bad
    part does not hide the errors of the others."""

    version: Annotated[int, Field(strict=True), AfterValidator(version_number)]
    providers: dict[str, Any] | None = None
    routes: Annotated[list[Any], Field(min_length=1)]
    realm: Annotated[str, AfterValidator(realm_text)] = DEFAULT_REALM
    identity_headers: dict[str, Any] | None = None
    limits: dict[str, Any] | None = None  # each of these three is validated on its own (see load)
    upstream_pool: dict[str, Any] | None = None
    trusted_proxies: list[Any] | None = None
    rate_limit_store: dict[str, Any] | None = None  # validated on its own too (store_spec)
