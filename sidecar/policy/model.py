"""Frozen, resolved policy objects: what the loader returns and the hot path trusts without re-validating."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from sidecar.policy.routes import RouteTable

__all__ = [
    "ANYONE",
    "AllowRule",
    "Anyone",
    "ClaimRequirement",
    "IdentityHeaders",
    "Identity",
    "Match",
    "Mode",
    "Policy",
    "Provider",
    "Route",
    "UserSet",
]

DEFAULT_ALGORITHMS: Final = ("RS256", "ES256", "PS256")
DEFAULT_LEEWAY_SECONDS: Final = 60.0
DEFAULT_JWKS_MIN_REFRESH_SECONDS: Final = 30.0
DEFAULT_TIMEOUT_SECONDS: Final = 30.0
DEFAULT_REALM: Final = "sidecar"


class Mode(enum.Enum):
    """Whether a route's rejections are enforced or only counted and logged."""

    ENFORCE = "enforce"
    AUDIT = "audit"


@dataclass(frozen=True, slots=True)
class Provider:
    """A token issuer whose signed JWTs the sidecar verifies against its published keys."""

    name: str
    issuer: str
    audiences: frozenset[str]
    jwks_uri: str | None  # None: from {issuer}/.well-known/openid-configuration
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    leeway: float = DEFAULT_LEEWAY_SECONDS
    jwks_min_refresh: float = DEFAULT_JWKS_MIN_REFRESH_SECONDS

    @property
    def discovery_url(self) -> str:
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"


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


@dataclass(frozen=True, slots=True)
class Match:
    """Which requests a route takes. Exactly one of `path` / `path_prefix` is set.

    `methods` is None when the route takes every method."""

    path: str | None = None
    path_prefix: str | None = None
    methods: frozenset[str] | None = None


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
class Policy:
    """A whole, validated policy. Swapped as one object on reload; a request keeps the one it started with."""

    providers: Mapping[str, Provider]
    routes: tuple[Route, ...]
    table: RouteTable
    realm: str = DEFAULT_REALM
    identity_headers: IdentityHeaders = field(default_factory=IdentityHeaders)
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
