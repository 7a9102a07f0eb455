"""Traffic limits as the hot path reads them: server-wide head and body limits, the upstream pool, and sizes.

Pure: frozen values and the size parser; the policy schema validates them, the connection, gate and proxy apply them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DEFAULT_MAX_BODY",
    "DEFAULT_MAX_CONCURRENT",
    "DEFAULT_MAX_QUERY_PARAMS",
    "MAX_QUERY_PARAMS_CEILING",
    "DEFAULT_MIN_BODY_RATE",
    "DEFAULT_MIN_BODY_RATE_GRACE",
    "DEFAULT_SEND_TIMEOUT",
    "UNLIMITED",
    "ServerLimits",
    "UpstreamPool",
    "parse_count",
    "parse_query_params",
    "parse_size",
]

KIB: Final = 1024
MIB: Final = 1024 * KIB
UNLIMITED: Final = "unlimited"

# Logic Apps' HTTP trigger refuses bodies over 100 MB itself: streaming more to it only costs the transfer.
DEFAULT_MAX_BODY: Final = 100 * MIB
# Per route and worker. Above it a request is shed with 503 at once, never queued.
DEFAULT_MAX_CONCURRENT: Final = 256
# Client query parameters per request (as `upstream.target.query_params` counts them): each costs microseconds of the
# worker's one event loop when the upstream's own parameters are protected, so a 64 KiB query of 30,000 short pairs
# stalled every route and the probes. 1,000 is PHP's max_input_vars, ASP.NET's MaxHttpCollectionKeys and Django's
# DATA_UPLOAD_MAX_NUMBER_FIELDS.
DEFAULT_MAX_QUERY_PARAMS: Final = 1000
MAX_QUERY_PARAMS_CEILING: Final = 100_000
# The request target plus every header name and value: room for a default-sized token (16 KiB) several times over.
# Envoy's default is 60 KiB, nginx's 32 KiB. `check` warns when a provider's max_token_bytes would not fit.
DEFAULT_MAX_HEADER_BYTES: Final = 64 * KIB
DEFAULT_MAX_HEADERS: Final = 100  # Envoy's default, and Python's http.client's
DEFAULT_HEADER_TIMEOUT: Final = 10.0
DEFAULT_BODY_TIMEOUT: Final = 30.0
# A request body must arrive at this average rate (bytes per second, measured over the body so far) once the grace
# period has passed: else a client trickling a byte just inside body_timeout would hold its upstream connection (and
# its share of the route's pool) for as long as it likes. Kestrel's MinRequestBodyDataRate: 240 bytes/s after 5 s.
DEFAULT_MIN_BODY_RATE: Final = 240
DEFAULT_MIN_BODY_RATE_GRACE: Final = 5.0
# The longest a response waits for a client that does not read (nginx's send_timeout; the route timeout's default).
DEFAULT_SEND_TIMEOUT: Final = 30.0
DEFAULT_POOL_CONNECTIONS: Final = 256
# An idle upstream connection is closed after this (aiohttp's default): set it below the upstream's own idle timeout
# (Node.js and uvicorn: 5 s) so that a request never races the upstream closing the connection it is sent on.
DEFAULT_POOL_IDLE_TIMEOUT: Final = 15.0

_SIZE = re.compile(r"(\d+)\s*(B|KB|MB|GB|KiB|MiB|GiB)?")
_UNITS: Final = {
    None: 1,
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "KiB": KIB,
    "MiB": MIB,
    "GiB": 1024**3,
}
_NOT_A_SIZE: Final = 'must be a size: bytes (1048576) or a number with a unit ("64KiB", "10MiB", "1GB"), or "unlimited"'


def parse_size(value: object) -> int | None:
    """Bytes from `1048576`, `"64KiB"`, `"10MiB"`, `"1GB"` (KB/MB/GB are powers of 1000); None for "unlimited"."""
    if value == UNLIMITED:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(_NOT_A_SIZE)
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.fullmatch(value.strip())
        if match is None:
            raise ValueError(_NOT_A_SIZE)
        size = int(match.group(1)) * _UNITS[match.group(2)]
    if size < 0:
        raise ValueError(_NOT_A_SIZE)
    return size


def parse_query_params(value: object) -> int:
    """A route's `max_query_params`: a whole number from 1 to the ceiling, never "unlimited"."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_QUERY_PARAMS_CEILING:
        raise ValueError(
            f"must be a whole number from 1 to {MAX_QUERY_PARAMS_CEILING}: never unlimited, as every parameter costs "
            "the worker's event loop time"
        )
    return value


def parse_count(value: object) -> int | None:
    """A whole number of at least 1; None for "unlimited"."""
    if value == UNLIMITED:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError('must be a whole number of at least 1, or "unlimited"')
    return value


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """What every connection to the proxy listener is held to, before any route is known."""

    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    max_headers: int = DEFAULT_MAX_HEADERS
    header_timeout: float = DEFAULT_HEADER_TIMEOUT  # from the first byte of a request head to its end
    body_timeout: float = DEFAULT_BODY_TIMEOUT  # the longest wait for the next piece of a request body
    send_timeout: float = DEFAULT_SEND_TIMEOUT  # the longest wait for a client to make room for more of a response
    min_body_rate: int = DEFAULT_MIN_BODY_RATE  # bytes per second a request body must average (0: no minimum)
    min_body_rate_grace: float = DEFAULT_MIN_BODY_RATE_GRACE  # how long a body may be slower than that at its start


@dataclass(frozen=True, slots=True)
class UpstreamPool:
    """The upstream connection pool (one per worker; a reload resizes it)."""

    max_connections: int = DEFAULT_POOL_CONNECTIONS
    max_per_host: int | None = None  # None: any host may use the whole pool
    idle_timeout: float = DEFAULT_POOL_IDLE_TIMEOUT  # an idle connection older than this is closed, not reused
    max_per_route: int | None = None  # None: half of max_connections (see `route_share`)

    @property
    def route_share(self) -> int:
        """The most connections one route's requests hold at once: as set, else half the pool, so that one route
        (its clients stalled, or its upstream slow) can never take the connections every other route needs."""
        return self.max_per_route or max(1, self.max_connections // 2)
