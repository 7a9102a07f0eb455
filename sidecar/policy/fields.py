"""Field types and per-value rules shared by the policy's specs: durations, URLs, names, methods, algorithms.

Validator messages never echo the value they reject: a value may have come from a secret (`${VAR}`).
"""

from __future__ import annotations

import ipaddress
import math
import re
from typing import Annotated, Final
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

__all__ = [
    "ALGORITHMS",
    "NAME_PATTERN",
    "Algorithms",
    "ClaimMap",
    "ClaimValues",
    "Duration",
    "Methods",
    "Spec",
    "Text",
    "TextList",
    "algorithm",
    "between",
    "check_url",
    "claim_name",
    "header_name",
    "https_url",
    "is_loopback",
    "method_name",
    "metric_name",
    "not_null",
    "one_or_many",
    "parse_duration",
    "realm_text",
    "route_path",
    "upstream_url",
    "version_number",
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


def between(low: float, high: float | None, *, above: bool = False) -> AfterValidator:
    def check(seconds: float) -> float:
        if seconds < low or (above and seconds == low) or (high is not None and seconds > high):
            bound = f"more than {low:g}s" if above else f"at least {low:g}s"
            raise ValueError(f"must be {bound}" + (f" and at most {high:g}s" if high is not None else ""))
        return seconds

    return AfterValidator(check)


def not_null(value: object) -> object:
    # `users:` with nothing after it is YAML null; reading it as "absent" would widen the rule to every user.
    if value is None:
        raise ValueError("must not be empty (omit the key instead)")
    return value


def one_or_many(value: object) -> object:
    return [value] if isinstance(value, str) else value


def check_url(value: str, *, allow_query: bool) -> str:
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


def is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def https_url(value: str) -> str:
    """Keys and issuers fetched over plain http could be swapped in transit; loopback is for demos and tests."""
    check_url(value, allow_query=False)
    parts = urlsplit(value)
    if parts.scheme != "https" and not is_loopback(parts.hostname or ""):
        raise ValueError("must be an https URL (http only for a loopback host: localhost, 127.0.0.0/8, ::1)")
    return value


def upstream_url(value: str) -> str:
    return check_url(value, allow_query=True)  # a Logic App trigger URL carries its SAS signature


def algorithm(value: str) -> str:
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


def route_path(value: str) -> str:
    """Paths are compared as strings with the normalised request path (sidecar.edge.paths), so only a spelling that
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


def method_name(value: str) -> str:
    if not _TOKEN.fullmatch(value):
        raise ValueError("must be an HTTP method name such as GET or POST")
    return value.upper()  # methods are case-sensitive on the wire; the policy means the standard upper-case ones


def metric_name(value: str) -> str:
    if not NAME_PATTERN.fullmatch(value):
        raise ValueError("must contain only letters, digits, '_', '.' and '-' (it becomes a metric label)")
    return value


def header_name(value: str) -> str:
    if not _TOKEN.fullmatch(value):
        raise ValueError("must be a valid header name (letters, digits and !#$%&'*+-.^_`|~)")
    return value


def realm_text(value: str) -> str:
    # The realm is written inside a quoted WWW-Authenticate parameter.
    if not value or any(ch in '"\\' or not (" " <= ch <= "~") for ch in value):
        raise ValueError('must be non-empty printable ASCII without " or \\')
    return value


def version_number(value: int) -> int:
    if value != 1:
        raise ValueError(f"unsupported version {value} (this sidecar reads version 1)")
    return value


def claim_name(value: str) -> str:
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
ClaimValues = Annotated[TextList, BeforeValidator(one_or_many)]
Methods = Annotated[list[Annotated[str, AfterValidator(method_name)]], Field(min_length=1)]
Algorithms = Annotated[list[Annotated[str, AfterValidator(algorithm)]], Field(min_length=1)]
ClaimMap = Annotated[dict[Annotated[str, AfterValidator(claim_name)], ClaimValues], Field(min_length=1)]


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
