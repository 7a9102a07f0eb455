"""Frozen, resolved policy objects: what the loader returns and the hot path trusts without re-validating."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network
from typing import Final, Protocol

from sidecar.policy.limits import (
    DEFAULT_MAX_BODY,
    DEFAULT_MAX_CONCURRENT,
    DEFAULT_MAX_QUERY_PARAMS,
    ServerLimits,
    UpstreamPool,
)

__all__ = [
    "ANYONE",
    "AllowRule",
    "Anyone",
    "CallerKind",
    "ClaimRequirement",
    "Cors",
    "IdentityHeaders",
    "Identity",
    "Introspection",
    "Match",
    "NoRoute",
    "RouteHit",
    "RouteLookup",
    "WrongMethod",
    "Mode",
    "Policy",
    "Provider",
    "RateKey",
    "RateLimit",
    "RateLimitStore",
    "Route",
    "StoreFailure",
    "UserSet",
]

DEFAULT_ALGORITHMS: Final = ("RS256", "ES256", "PS256")
DEFAULT_LEEWAY_SECONDS: Final = 60.0
DEFAULT_JWKS_MIN_REFRESH_SECONDS: Final = 30.0
DEFAULT_JWKS_REFRESH_MIN_SECONDS: Final = 300.0  # scheduled refresh: Cache-Control max-age clamped to [min, max]
DEFAULT_JWKS_REFRESH_MAX_SECONDS: Final = 3600.0
DEFAULT_MAX_STALE_SECONDS: Final = 86_400.0
DEFAULT_MAX_TOKEN_BYTES: Final = 16 * 1024
DEFAULT_INTROSPECTION_CACHE_SECONDS: Final = 300.0
DEFAULT_INACTIVE_CACHE_SECONDS: Final = 10.0
DEFAULT_INTROSPECTION_MAX_IN_FLIGHT: Final = 64  # calls to one introspection endpoint at once, per worker
DEFAULT_INTROSPECTION_MAX_WAITING: Final = 256  # requests waiting for one provider's answers at once, per worker
DEFAULT_TIMEOUT_SECONDS: Final = 30.0
DEFAULT_REALM: Final = "sidecar"
DEFAULT_IPV6_PREFIX: Final = 64  # rate_limit per: ip groups IPv6 clients by their /64
# rate_limit_store: a local Redis answers in well under a millisecond; 50 ms is a network hiccup, not a slow answer.
DEFAULT_STORE_TIMEOUT_SECONDS: Final = 0.05
DEFAULT_STORE_PREFIX: Final = "auth-sidecar"


class Mode(enum.Enum):
    """Whether a route's rejections are enforced or only counted and logged."""

    ENFORCE = "enforce"
    AUDIT = "audit"


@dataclass(frozen=True, slots=True)
class UpstreamTls:
    """`tls:` of a route or provider (sidecar/policy/tls_spec.py). Each value is an absolute path or PEM text."""

    ca_file: str | None = None  # None: the system's CAs
    client_cert: str | None = None  # with client_key: presented to the upstream (mutual TLS)
    client_key: str | None = field(default=None, repr=False)  # may be the key itself: never logged (nor in repr)
    where: str = field(default="", compare=False)  # `FILE:LINE: routes[0].tls`, for errors found when it loads


@dataclass(frozen=True, slots=True)
class Introspection:
    """An OAuth 2.0 token introspection endpoint (RFC 7662) that vouches for opaque tokens."""

    endpoint: str
    client_id: str
    client_secret: str = field(repr=False)  # a secret: never logged or echoed (nor in repr)
    cache: float = DEFAULT_INTROSPECTION_CACHE_SECONDS  # an active answer is kept until exp, at most this long
    inactive_cache: float = DEFAULT_INACTIVE_CACHE_SECONDS  # an inactive answer is kept this long
    max_in_flight: int = DEFAULT_INTROSPECTION_MAX_IN_FLIGHT  # calls at once; the next waits for a slot
    # Requests waiting for an answer (their call in flight or waiting for a slot); the next is 503 at once.
    max_waiting: int = DEFAULT_INTROSPECTION_MAX_WAITING


@dataclass(frozen=True, slots=True)
class Provider:
    """Who vouches for tokens: an issuer of signed JWTs checked against its published keys, or (with
    `introspection`) an authorization server asked about each opaque token."""

    name: str
    issuer: str  # the configured issuer; "" for an introspection provider
    audiences: frozenset[str]
    jwks_uri: str | None  # None: from discovery
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    leeway: float = DEFAULT_LEEWAY_SECONDS
    jwks_min_refresh: float = DEFAULT_JWKS_MIN_REFRESH_SECONDS
    # Every `iss` accepted (Entra: the v1 and v2 forms); empty means {issuer}, filled in by __post_init__.
    issuers: frozenset[str] = frozenset()
    tenant: str | None = None  # Entra: the token's `tid` must equal it
    discovery: str | None = None  # the discovery document's URL; None: {issuer}/.well-known/openid-configuration
    jwks_refresh_min: float = DEFAULT_JWKS_REFRESH_MIN_SECONDS
    jwks_refresh_max: float = DEFAULT_JWKS_REFRESH_MAX_SECONDS
    max_stale: float = DEFAULT_MAX_STALE_SECONDS  # last good keys keep serving this long while the issuer is down
    require_typ: str | None = None  # the JOSE `typ` required (lower-case, without "application/"), e.g. at+jwt
    max_token_bytes: int = DEFAULT_MAX_TOKEN_BYTES
    introspection: Introspection | None = None
    entra: bool = False  # made by the `entra:` preset (idtyp and scp mean what Entra means by them)
    tls: UpstreamTls | None = None  # discovery, JWKS and introspection: a private CA, a client certificate

    def __post_init__(self) -> None:
        if not self.issuers and self.introspection is None:
            object.__setattr__(self, "issuers", frozenset({self.issuer}))

    @property
    def discovery_url(self) -> str:
        return self.discovery or self.issuer.rstrip("/") + "/.well-known/openid-configuration"


class CallerKind(enum.Enum):
    """`user_tokens_only` / `app_tokens_only`: a token on behalf of a signed-in user, or of an application itself
    (client credentials)."""

    USER = "user"
    APP = "app"


class Anyone(enum.Enum):
    """`allow: anyone` - no authentication at all, stated explicitly."""

    ANYONE = "anyone"


ANYONE: Final = Anyone.ANYONE


@dataclass(frozen=True, slots=True)
class UserSet:
    """`users:` split once at load: stable ids match `oid`/`sub` exactly, names (with `@`) match `upn`/
    `preferred_username` case-insensitively (stored lowercased). A name also matches `oid`/`sub` exactly."""

    ids: frozenset[str]
    names: frozenset[str]


@dataclass(frozen=True, slots=True)
class ClaimRequirement:
    """The claim equals one of `values`, or (list claim, or space-separated `scp`) contains one of them."""

    name: str
    values: frozenset[str]


@dataclass(frozen=True, slots=True)
class AllowRule:
    """One alternative of a route's `allow` list: it holds when provider, users and every claim hold."""

    provider: str
    users: UserSet | None = None
    claims: tuple[ClaimRequirement, ...] = ()
    index: int = 0  # position in the route's allow list, for explain and logs
    apps: frozenset[str] | None = None  # client ids, matched with azp (v2), appid (v1) or client_id (RFC 9068)
    groups: frozenset[str] | None = None  # the `groups` claim must contain one
    scopes: frozenset[str] | None = None  # `scp` / `scope` (space-separated, or a list) must contain one
    caller: CallerKind | None = None  # user_tokens_only / app_tokens_only


@dataclass(frozen=True, slots=True)
class Match:
    """Which requests a route takes. Exactly one of `path` / `path_prefix` is set.

    `methods` is None when the route takes every method."""

    path: str | None = None
    path_prefix: str | None = None
    methods: frozenset[str] | None = None


class RateKey(enum.Enum):
    """`rate_limit.per`: whose requests share one budget."""

    SUBJECT = "subject"  # the verified oid, else sub
    APP = "app"  # the verified azp, appid or client_id
    IP = "ip"  # the client's address


@dataclass(frozen=True, slots=True)
class RateLimit:
    """`rate_limit`: at most `requests` allowed requests per caller in any `window` seconds (a moving window)."""

    per: RateKey
    requests: int
    window: int  # whole seconds
    # per: ip: an IPv6 client is one caller per network of this prefix length (one subscriber's /64 holds more
    # addresses than anyone could spend budgets of); IPv4 addresses are each a caller.
    ipv6_prefix: int = DEFAULT_IPV6_PREFIX


class StoreFailure(enum.Enum):
    """`rate_limit_store.on_error`: what a request gets when the store does not answer within its timeout."""

    ALLOW = "allow"  # forwarded, uncounted (the error is counted): a store outage is not an outage of the routes
    DENY = "deny"  # 503 rate_limit_unavailable: no request passes uncounted


@dataclass(frozen=True, slots=True)
class RateLimitStore:
    """`rate_limit_store`: every route's `rate_limit` counted in one Redis (limits' moving window, server-side), so
    that all replicas and workers share one budget per caller. Without it each worker process counts on its own."""

    url: str = field(repr=False)  # may hold a password: never logged or echoed (nor in repr)
    timeout: float = DEFAULT_STORE_TIMEOUT_SECONDS  # the longest a request waits for the store's answer
    on_error: StoreFailure = StoreFailure.ALLOW
    password: str | None = field(default=None, repr=False)  # a secret (`${file:...}`); None: as in the URL
    prefix: str = DEFAULT_STORE_PREFIX  # of every key: deployments that share a Redis keep their budgets apart


@dataclass(frozen=True, slots=True)
class Cors:
    """`cors`: the web origins whose pages may call the route from a browser (sidecar.policy.cors decides)."""

    origins: frozenset[str]  # `scheme://host[:port]`, lower-case, default port dropped; empty with any_origin
    any_origin: bool  # `origins: ["*"]` (never with credentials)
    methods: frozenset[str] | None  # None: every method the route takes
    headers: frozenset[str]  # request headers a page may send, lower-case, the CORS-safelisted ones included
    expose_headers: tuple[str, ...]
    max_age: int  # seconds a browser may cache a preflight answer
    credentials: bool


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    match: Match
    upstream: str = field(repr=False)  # a secret: holds the SAS signature; never logged or echoed (nor in repr)
    allow: Anyone | tuple[AllowRule, ...]
    mode: Mode = Mode.ENFORCE
    forward_token: bool = False
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    line: int = 0  # where the route starts in the policy file
    rate_limit: RateLimit | None = None
    cors: Cors | None = None
    max_body: int | None = DEFAULT_MAX_BODY  # bytes; None: unlimited (413 above it)
    max_concurrent: int | None = DEFAULT_MAX_CONCURRENT  # requests in flight per worker; None: unlimited (503 above)
    forward_query: bool = True  # False: the upstream gets only its own query, never a client's parameters
    max_query_params: int = DEFAULT_MAX_QUERY_PARAMS  # client query parameters (414 above); none without forward_query
    tls: UpstreamTls | None = None  # the upstream's CA bundle and client certificate; None: system CAs, none

    @property
    def providers(self) -> frozenset[str]:
        """The providers whose tokens this route verifies; a token of any other issuer is `wrong_issuer`."""
        if isinstance(self.allow, Anyone):
            return frozenset()
        return frozenset(rule.provider for rule in self.allow)


@dataclass(frozen=True, slots=True)
class IdentityHeaders:
    """Names of the headers that carry the verified caller to the upstream (configurable)."""

    subject: str = "X-Auth-Subject"
    user: str = "X-Auth-User"
    tenant: str = "X-Auth-Tenant"
    roles: str = "X-Auth-Roles"
    provider: str = "X-Auth-Provider"

    def names(self) -> tuple[str, ...]:
        return (self.subject, self.user, self.tenant, self.roles, self.provider)


@dataclass(frozen=True, slots=True)
class RouteHit:
    """The route that takes the request; `rest` is what a prefix route appends to its upstream path."""

    route: Route
    rest: str  # "" for an exact path; for a prefix route the remainder, starting with "/" (or "")


@dataclass(frozen=True, slots=True)
class NoRoute:
    """No route matches the path (404)."""


@dataclass(frozen=True, slots=True)
class WrongMethod:
    """Routes match the path but none takes the method (405); `allow` is for the `Allow` header."""

    allow: tuple[str, ...]


class RouteLookup(Protocol):
    """What a policy matches requests with (`routes.RouteTable`, compiled by the loader)."""

    def lookup(self, method: str, path: str) -> RouteHit | NoRoute | WrongMethod: ...


@dataclass(frozen=True, slots=True)
class Policy:
    """A whole, validated policy. Swapped as one object on reload; a request keeps the one it started with."""

    providers: Mapping[str, Provider]
    routes: tuple[Route, ...]
    table: RouteLookup
    realm: str = DEFAULT_REALM
    identity_headers: IdentityHeaders = field(default_factory=IdentityHeaders)
    limits: ServerLimits = field(default_factory=ServerLimits)
    upstream_pool: UpstreamPool = field(default_factory=UpstreamPool)
    trusted_proxies: tuple[IPv4Network | IPv6Network, ...] = ()  # peers whose X-Forwarded-For is believed
    rate_limit_store: RateLimitStore | None = None  # None: rate limits counted per worker process
    source: str = ""  # the file it came from
    warnings: tuple[str, ...] = ()  # `FILE:LINE: path: message`, for `sidecar check`


@dataclass(frozen=True, slots=True)
class Identity:
    """A caller whose token verified: the provider that vouches for it and the verified claims."""

    provider: str
    claims: Mapping[str, object]
    expires_at: float  # the token's `exp`, epoch seconds

    @property
    def subject(self) -> str | None:
        """`oid` when present (Entra's stable object id), else `sub`."""
        return _str_claim(self.claims, "oid") or _str_claim(self.claims, "sub")

    @property
    def user(self) -> str | None:
        return _str_claim(self.claims, "upn") or _str_claim(self.claims, "preferred_username")

    @property
    def app(self) -> str | None:
        """The calling application's client id: `azp` (Entra v2), `appid` (v1) or `client_id` (RFC 9068, 7662)."""
        return (
            _str_claim(self.claims, "azp") or _str_claim(self.claims, "appid") or _str_claim(self.claims, "client_id")
        )

    @property
    def tenant(self) -> str | None:
        return _str_claim(self.claims, "tid")

    @property
    def roles(self) -> tuple[str, ...]:
        value = self.claims.get("roles")
        if isinstance(value, list):
            return tuple(item for item in value if isinstance(item, str))
        if isinstance(value, str):
            return (value,)
        return ()


def _str_claim(claims: Mapping[str, object], name: str) -> str | None:
    value = claims.get(name)
    return value if isinstance(value, str) and value else None
