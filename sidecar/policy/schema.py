"""The policy file's shape as pydantic models: every key, type and per-value rule (cross-references live in load).

Validator messages never echo the value they reject: a value may have come from a secret (`${VAR}`).
"""

from __future__ import annotations

import ipaddress
import math
import re
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag, model_validator

from sidecar.policy.cors import ANY_ORIGIN, normalise_origin
from sidecar.policy.limits import DEFAULT_MAX_BODY, DEFAULT_MAX_CONCURRENT, parse_count, parse_size
from sidecar.policy.model import (
    DEFAULT_REALM,
    DEFAULT_TIMEOUT_SECONDS,
    IdentityHeaders,
)

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

ALGORITHMS: Final = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9_.-]+")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token: methods and header names
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)?")
_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_LOOPBACK_NAMES: Final = frozenset({"localhost"})
_NOT_A_DURATION: Final = 'must be a duration: seconds (30) or a number with a unit ("500ms", "60s", "5m", "1h")'


def parse_duration(value: object) -> float:
    """Seconds from `30`, `1.5`, `"30"`, `"500ms"`, `"60s"`, `"5m"` or `"1h"`."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(_NOT_A_DURATION)
    if isinstance(value, str):
        match = _DURATION.fullmatch(value.strip())
        if match is None:
            raise ValueError(_NOT_A_DURATION)
        return float(match.group(1)) * _UNITS[match.group(2)]
    if not math.isfinite(value) or value < 0:
        raise ValueError("must be a finite, non-negative duration")
    return float(value)


def _between(low: float, high: float | None, *, above: bool = False) -> AfterValidator:
    def check(seconds: float) -> float:
        if seconds < low or (above and seconds == low) or (high is not None and seconds > high):
            bound = f"more than {low:g}s" if above else f"at least {low:g}s"
            raise ValueError(f"must be {bound}" + (f" and at most {high:g}s" if high is not None else ""))
        return seconds

    return AfterValidator(check)


def _not_null(value: object) -> object:
    # `users:` with nothing after it is YAML null; reading it as "absent" would widen the rule to every user.
    if value is None:
        raise ValueError("must not be empty (omit the key instead)")
    return value


def _one_or_many(value: object) -> object:
    return [value] if isinstance(value, str) else value


def _url(value: str, *, allow_query: bool) -> str:
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        raise ValueError("must not contain spaces or control characters")
    parts = urlsplit(value)
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError:
        raise ValueError("has an invalid port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http(s) URL with a host")
    if "@" in parts.netloc:
        raise ValueError("must not contain user information (user:password@)")
    if parts.fragment or value.endswith("#"):
        raise ValueError("must not contain a fragment (#...)")
    if not allow_query and (parts.query or value.endswith("?")):
        raise ValueError("must not contain a query (?...)")
    return value


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _https_url(value: str) -> str:
    """Keys and issuers fetched over plain http could be swapped in transit; loopback is for demos and tests."""
    _url(value, allow_query=False)
    parts = urlsplit(value)
    if parts.scheme != "https" and not _is_loopback(parts.hostname or ""):
        raise ValueError("must be an https URL (http only for a loopback host: localhost, 127.0.0.0/8, ::1)")
    return value


def _upstream(value: str) -> str:
    return _url(value, allow_query=True)  # a Logic App trigger URL carries its SAS signature


def _algorithm(value: str) -> str:
    if value in ALGORITHMS:
        return value
    if value.lower() == "none":
        raise ValueError('"none" is refused: it accepts unsigned tokens')
    if value.upper().startswith("HS"):
        raise ValueError(
            f'"{value}" is refused: with a shared secret anyone who can verify can also sign, '
            "and a public key mistaken for the secret lets anyone mint tokens"
        )
    raise ValueError(f'unsupported algorithm "{value}" (allowed: {", ".join(ALGORITHMS)})')


def _route_path(value: str) -> str:
    """Paths are compared as strings with the normalised request path (sidecar.paths), so only a spelling that
    normalisation can produce is allowed: one that could never match would be a silently dead route."""
    if not value.startswith("/"):
        raise ValueError('must start with "/"')
    if any(ch in "?#%\\" or not "!" <= ch <= "~" for ch in value):
        raise ValueError(
            "must be a plain ASCII path: no query, fragment, percent-encoding, backslash, spaces or control characters"
        )
    if "//" in value:
        raise ValueError('must not contain an empty segment ("//")')
    if any(segment in (".", "..") for segment in value.split("/")):
        raise ValueError('must not contain "." or ".." segments')
    return value


def _method(value: str) -> str:
    if not _TOKEN.fullmatch(value):
        raise ValueError("must be an HTTP method name such as GET or POST")
    return value.upper()  # methods are case-sensitive on the wire; the policy means the standard upper-case ones


def _name(value: str) -> str:
    if not NAME_PATTERN.fullmatch(value):
        raise ValueError("must contain only letters, digits, '_', '.' and '-' (it becomes a metric label)")
    return value


def _header_name(value: str) -> str:
    if not _TOKEN.fullmatch(value):
        raise ValueError("must be a valid header name (letters, digits and !#$%&'*+-.^_`|~)")
    return value


def _realm(value: str) -> str:
    # The realm is written inside a quoted WWW-Authenticate parameter.
    if not value or any(ch in '"\\' or not (" " <= ch <= "~") for ch in value):
        raise ValueError('must be non-empty printable ASCII without " or \\')
    return value


def _version(value: int) -> int:
    if value != 1:
        raise ValueError(f"unsupported version {value} (this sidecar reads version 1)")
    return value


def _claim_name(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    if value == "email":
        raise ValueError(
            "the email claim is refused: not every issuer verifies it, so anyone could claim an address "
            "(the nOAuth account takeover); match users by oid or sub instead"
        )
    return value


Text = Annotated[str, Field(min_length=1)]
TextList = Annotated[list[Text], Field(min_length=1)]
Duration = Annotated[float, BeforeValidator(parse_duration)]
ClaimValues = Annotated[TextList, BeforeValidator(_one_or_many)]
Methods = Annotated[list[Annotated[str, AfterValidator(_method)]], Field(min_length=1)]
Algorithms = Annotated[list[Annotated[str, AfterValidator(_algorithm)]], Field(min_length=1)]
ClaimMap = Annotated[dict[Annotated[str, AfterValidator(_claim_name)], ClaimValues], Field(min_length=1)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _scope(value: str) -> str:
    if " " in value:
        raise ValueError("a scope never contains a space: list each scope as its own item")
    return value


Scopes = Annotated[list[Annotated[Text, AfterValidator(_scope)]], Field(min_length=1)]


class RuleSpec(_Spec):
    """One `allow` alternative. The provider spec is in provider_spec (it needs this module's field types)."""

    provider: Text
    users: Annotated[TextList | None, BeforeValidator(_not_null)] = None
    apps: Annotated[TextList | None, BeforeValidator(_not_null)] = None
    groups: Annotated[TextList | None, BeforeValidator(_not_null)] = None
    scopes: Annotated[Scopes | None, BeforeValidator(_not_null)] = None
    claims: Annotated[ClaimMap | None, BeforeValidator(_not_null)] = None
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


class MatchSpec(_Spec):
    path: Annotated[str, AfterValidator(_route_path)] | None = None
    path_prefix: Annotated[str, AfterValidator(_route_path)] | None = None
    methods: Annotated[Methods | None, BeforeValidator(_not_null)] = None

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


class RateLimitSpec(_Spec):
    per: Literal["subject", "app", "ip"]
    requests: Annotated[int, Field(strict=True), AfterValidator(_requests)]
    window: Annotated[Duration, AfterValidator(_window)] = 60.0


def _origins(values: list[str]) -> list[str]:
    if ANY_ORIGIN in values and len(values) > 1:
        raise ValueError('"*" (every origin) stands alone')
    return values


def _cors_header(value: str) -> str:
    if value == "*":
        raise ValueError('list the header names: "*" would never cover Authorization (Fetch standard)')
    return _header_name(value)


CorsHeaders = list[Annotated[str, AfterValidator(_cors_header)]]
Origins = Annotated[
    list[Annotated[str, AfterValidator(normalise_origin)]], Field(min_length=1), AfterValidator(_origins)
]


class CorsSpec(_Spec):
    origins: Origins
    methods: Annotated[Methods | None, BeforeValidator(_not_null)] = None  # None: the route's methods
    headers: CorsHeaders = ["Authorization"]
    expose_headers: CorsHeaders = []
    max_age: Annotated[Duration, _between(0, 86_400)] = 600.0
    credentials: bool = False

    @model_validator(mode="after")
    def _credentials(self) -> CorsSpec:
        if self.credentials and ANY_ORIGIN in self.origins:
            raise ValueError('credentials: true needs the origins listed: with "*" any site could read the answers')
        return self


class RouteSpec(_Spec):
    name: Annotated[Text, AfterValidator(_name)]
    match: MatchSpec
    upstream: Annotated[Text, AfterValidator(_upstream)]
    allow: Allow
    mode: Literal["enforce", "audit"] = "enforce"
    forward_token: bool = False
    timeout: Annotated[Duration, _between(0, None, above=True)] = DEFAULT_TIMEOUT_SECONDS
    rate_limit: Annotated[RateLimitSpec | None, BeforeValidator(_not_null)] = None
    cors: Annotated[CorsSpec | None, BeforeValidator(_not_null)] = None
    max_body: Annotated[int | None, BeforeValidator(parse_size)] = DEFAULT_MAX_BODY
    max_concurrent: Annotated[int | None, BeforeValidator(parse_count)] = DEFAULT_MAX_CONCURRENT


_DEFAULT_HEADERS: Final = IdentityHeaders()
HeaderName = Annotated[str, AfterValidator(_header_name)]


class IdentityHeadersSpec(_Spec):
    subject: HeaderName = _DEFAULT_HEADERS.subject
    user: HeaderName = _DEFAULT_HEADERS.user
    tenant: HeaderName = _DEFAULT_HEADERS.tenant
    roles: HeaderName = _DEFAULT_HEADERS.roles
    provider: HeaderName = _DEFAULT_HEADERS.provider


class PolicySpec(_Spec):
    """The top level. Providers, routes and identity headers are validated one by one (see load) so that one bad
    part does not hide the errors of the others."""

    version: Annotated[int, Field(strict=True), AfterValidator(_version)]
    providers: dict[str, Any] | None = None
    routes: Annotated[list[Any], Field(min_length=1)]
    realm: Annotated[str, AfterValidator(_realm)] = DEFAULT_REALM
    identity_headers: dict[str, Any] | None = None
    limits: dict[str, Any] | None = None  # each of these three is validated on its own (see load)
    upstream_pool: dict[str, Any] | None = None
    trusted_proxies: list[Any] | None = None
