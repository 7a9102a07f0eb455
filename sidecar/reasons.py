"""Every reason a request is refused, and the one table that maps it to a status and a bearer error."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

__all__ = ["LIMIT_REASONS", "Outcome", "Reason", "Rejection", "auditable", "outcome"]


class Reason(enum.Enum):
    """A refusal's cause. The value is the `reason` label of `sidecar_rejections_total`."""

    INVALID_PATH = "invalid_path"
    NO_ROUTE = "no_route"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    MISSING_TOKEN = "missing_token"
    MALFORMED_TOKEN = "malformed_token"
    FORBIDDEN_ALGORITHM = "forbidden_algorithm"
    WRONG_ISSUER = "wrong_issuer"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    WRONG_AUDIENCE = "wrong_audience"
    WRONG_TOKEN_TYPE = "wrong_token_type"
    TOKEN_INACTIVE = "token_inactive"
    NOT_ALLOWED = "not_allowed"
    KEYS_UNAVAILABLE = "keys_unavailable"
    INTROSPECTION_UNAVAILABLE = "introspection_unavailable"
    UPSTREAM_UNREACHABLE = "upstream_unreachable"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    RATE_LIMITED = "rate_limited"
    RATE_LIMIT_UNAVAILABLE = "rate_limit_unavailable"
    CORS_REFUSED = "cors_refused"
    CONFLICTING_HEADERS = "conflicting_headers"
    BAD_REQUEST = "bad_request"
    HEADERS_TOO_LARGE = "headers_too_large"
    HEADER_TIMEOUT = "header_timeout"
    BODY_TOO_LARGE = "body_too_large"
    TOO_MANY_QUERY_PARAMS = "too_many_query_params"
    BODY_TIMEOUT = "body_timeout"
    OVERLOADED = "overloaded"
    POOL_SHARE_FULL = "pool_share_full"
    FORWARD_AUTH_SPOOFED = "forward_auth_spoofed"
    PLAIN_HTTP = "plain_http"  # plain HTTP sent to the proxy listener while it speaks HTTPS (--tls-cert)
    TOO_MANY_CONNECTIONS = "too_many_connections"  # the proxy listener holds --max-connections, none of them idle
    METRICS_BUSY = "metrics_busy"  # the admin listener's /metrics only: too many scrapes already wait their turn


@dataclass(frozen=True, slots=True)
class Outcome:
    status: int
    title: str
    bearer_error: str | None  # RFC 6750 error code for WWW-Authenticate; None: no challenge or no code
    challenge: bool  # whether the response carries WWW-Authenticate
    description: str  # safe, fixed text: never derived from the token or the request


_INVALID = "invalid_token"

# The one table. Nothing else in the code base maps a reason to a status.
_TABLE: Final[dict[Reason, Outcome]] = {
    Reason.INVALID_PATH: Outcome(
        400, "Bad Request", None, False, "The path is not valid (encoded separators or NUL, bad escapes, dot segments)."
    ),
    Reason.NO_ROUTE: Outcome(404, "Not Found", None, False, "No route matches this path."),
    Reason.METHOD_NOT_ALLOWED: Outcome(
        405, "Method Not Allowed", None, False, "The route does not accept this method."
    ),
    Reason.MISSING_TOKEN: Outcome(401, "Unauthorized", None, True, "A bearer token is required."),
    Reason.MALFORMED_TOKEN: Outcome(401, "Unauthorized", _INVALID, True, "The token is not a well-formed JWT."),
    Reason.FORBIDDEN_ALGORITHM: Outcome(
        401, "Unauthorized", _INVALID, True, "The token's signing algorithm is not accepted."
    ),
    Reason.WRONG_ISSUER: Outcome(401, "Unauthorized", _INVALID, True, "The token's issuer is not accepted here."),
    Reason.UNKNOWN_KEY: Outcome(
        401, "Unauthorized", _INVALID, True, "The token is signed with a key the issuer does not publish."
    ),
    Reason.BAD_SIGNATURE: Outcome(401, "Unauthorized", _INVALID, True, "The token's signature is invalid."),
    Reason.EXPIRED: Outcome(401, "Unauthorized", _INVALID, True, "The token has expired."),
    Reason.NOT_YET_VALID: Outcome(401, "Unauthorized", _INVALID, True, "The token is not valid yet."),
    Reason.WRONG_AUDIENCE: Outcome(401, "Unauthorized", _INVALID, True, "The token is not meant for this audience."),
    Reason.NOT_ALLOWED: Outcome(
        403, "Forbidden", "insufficient_scope", True, "The caller is not allowed on this route."
    ),
    Reason.WRONG_TOKEN_TYPE: Outcome(
        401, "Unauthorized", _INVALID, True, "The token is not of the type this issuer's access tokens have (typ)."
    ),
    Reason.TOKEN_INACTIVE: Outcome(
        401, "Unauthorized", _INVALID, True, "The token is not active (revoked, expired or unknown to its issuer)."
    ),
    Reason.KEYS_UNAVAILABLE: Outcome(
        503,
        "Service Unavailable",
        None,
        False,
        "The issuer's signing keys are not available (not fetched yet, or too old to trust).",
    ),
    Reason.INTROSPECTION_UNAVAILABLE: Outcome(
        503, "Service Unavailable", None, False, "The token could not be checked with its issuer; try again."
    ),
    Reason.UPSTREAM_UNREACHABLE: Outcome(502, "Bad Gateway", None, False, "The upstream could not be reached."),
    Reason.UPSTREAM_TIMEOUT: Outcome(504, "Gateway Timeout", None, False, "The upstream did not answer in time."),
    Reason.RATE_LIMITED: Outcome(
        429, "Too Many Requests", None, False, "Too many requests from this caller on this route; see Retry-After."
    ),
    Reason.RATE_LIMIT_UNAVAILABLE: Outcome(
        503,
        "Service Unavailable",
        None,
        False,
        "The rate-limit store did not answer in time, and this sidecar refuses what it cannot count; see Retry-After.",
    ),
    Reason.CORS_REFUSED: Outcome(
        403, "Forbidden", None, False, "The preflight asks for an origin, method or header this route does not allow."
    ),
    Reason.CONFLICTING_HEADERS: Outcome(
        400,
        "Bad Request",
        None,
        False,
        "The request repeats Host, Authorization, Content-Length or Transfer-Encoding, or its framing is ambiguous.",
    ),
    Reason.BAD_REQUEST: Outcome(400, "Bad Request", None, False, "The request is not valid HTTP/1.1."),
    Reason.HEADERS_TOO_LARGE: Outcome(
        431, "Request Header Fields Too Large", None, False, "The request head has too many or too large headers."
    ),
    Reason.HEADER_TIMEOUT: Outcome(408, "Request Timeout", None, False, "The request head did not arrive in time."),
    Reason.BODY_TOO_LARGE: Outcome(
        413, "Content Too Large", None, False, "The request body is larger than this route accepts."
    ),
    # 414, not 400: the request target alone is refused, for its size (as a too-long URI is), and the client's fix is
    # the same: send fewer parameters, or move them into the body.
    Reason.TOO_MANY_QUERY_PARAMS: Outcome(
        414, "URI Too Long", None, False, "The query has more parameters than this route accepts."
    ),
    Reason.BODY_TIMEOUT: Outcome(408, "Request Timeout", None, False, "The request body stalled."),
    Reason.OVERLOADED: Outcome(
        503, "Service Unavailable", None, False, "The route has too many requests in flight; see Retry-After."
    ),
    Reason.POOL_SHARE_FULL: Outcome(
        503,
        "Service Unavailable",
        None,
        False,
        "The route holds its whole share of upstream connections and none came free in time; see Retry-After.",
    ),
    Reason.FORWARD_AUTH_SPOOFED: Outcome(
        403,
        "Forbidden",
        None,
        False,
        "The forward-auth request names its original URI or method in a header the ingress does not set, or twice.",
    ),
    Reason.PLAIN_HTTP: Outcome(
        400, "Bad Request", None, False, "The plain HTTP request was sent to an HTTPS port: use https://."
    ),
    Reason.TOO_MANY_CONNECTIONS: Outcome(
        503,
        "Service Unavailable",
        None,
        False,
        "The sidecar holds as many client connections as it may, none of them idle; try again.",
    ),
    Reason.METRICS_BUSY: Outcome(
        503, "Service Unavailable", None, False, "Too many scrapes are waiting for their turn; see Retry-After."
    ),
}


def outcome(reason: Reason) -> Outcome:
    return _TABLE[reason]


# Refusals of the request's form and size, made around the decision by the connection and the gate.
LIMIT_REASONS: Final = frozenset(
    {
        Reason.CONFLICTING_HEADERS,
        Reason.BAD_REQUEST,
        Reason.HEADERS_TOO_LARGE,
        Reason.HEADER_TIMEOUT,
        Reason.PLAIN_HTTP,
        Reason.BODY_TOO_LARGE,
        Reason.TOO_MANY_QUERY_PARAMS,
        Reason.BODY_TIMEOUT,
        Reason.OVERLOADED,
        Reason.POOL_SHARE_FULL,
        Reason.TOO_MANY_CONNECTIONS,
    }
)

# Refusals about where the request goes rather than who sends it: audit mode cannot forward these (there is no
# route, or no upstream answer). Every other reason is about the caller's credentials, and audit mode forwards it.
_NOT_ABOUT_THE_CALLER: Final = frozenset(
    {
        Reason.INVALID_PATH,
        Reason.NO_ROUTE,
        Reason.METHOD_NOT_ALLOWED,
        Reason.UPSTREAM_UNREACHABLE,
        Reason.UPSTREAM_TIMEOUT,
        Reason.CORS_REFUSED,  # a preflight is answered by the sidecar: there is nothing to forward
        Reason.FORWARD_AUTH_SPOOFED,  # which request is asked about is unknown: there is nothing to decide
    }
    # Limits protect the sidecar and the upstream whoever calls: audit mode never lifts them.
    | LIMIT_REASONS
)


def auditable(reason: Reason) -> bool:
    """Whether audit mode forwards a request refused for this reason (counting it as a would-be refusal)."""
    return reason not in _NOT_ABOUT_THE_CALLER


class Rejection(Exception):
    """Raised inside the pipeline to refuse a request; carries only a `Reason`, never token material."""

    def __init__(self, reason: Reason) -> None:
        super().__init__(reason.value)
        self.reason = reason
