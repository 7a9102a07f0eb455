"""The shape of the traffic-limit keys: top-level `limits`, `upstream_pool` and `trusted_proxies`, and the per-route
`max_body` and `max_concurrent` types. The loader validates each part on its own and builds the frozen values.

Validator messages never echo the value they reject: a value may have come from a secret (`${VAR}`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Annotated, Final

from pydantic import BeforeValidator, Field

from sidecar.policy.fields import Duration, Spec, between
from sidecar.policy.limits import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MAX_HEADERS,
    DEFAULT_MIN_BODY_RATE,
    DEFAULT_MIN_BODY_RATE_GRACE,
    DEFAULT_POOL_CONNECTIONS,
    DEFAULT_POOL_IDLE_TIMEOUT,
    DEFAULT_SEND_TIMEOUT,
    KIB,
    MIB,
    ServerLimits,
    UpstreamPool,
    parse_size,
)
from sidecar.policy.model import Provider

__all__ = [
    "IPNetwork",
    "LimitsSpec",
    "UpstreamPoolSpec",
    "header_room_warnings",
    "parse_networks",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# Room besides the token for the request line and the other headers, when checking that a token fits.
_HEADER_ROOM: Final = 4 * KIB


def _header_bytes(value: object) -> int:
    size = parse_size(value)
    if size is None:
        raise ValueError("must be a size: a request head is never unlimited")
    if not 4 * KIB <= size <= 16 * MIB:
        raise ValueError(f"must be at least {4 * KIB} bytes and at most {16 * MIB} bytes")
    return size


HeaderBytes = Annotated[int, BeforeValidator(_header_bytes)]


def _body_rate(value: object) -> int:
    """Bytes per second, written as a size (`240`, `"1KiB"`); 0 turns the minimum off."""
    size = parse_size(value)
    if size is None:
        raise ValueError('must be bytes per second (240, "1KiB"), or 0 for no minimum; "unlimited" is not a rate')
    if size > 1024 * MIB:
        raise ValueError(f"must be at most {1024 * MIB} bytes per second")
    return size


BodyRate = Annotated[int, BeforeValidator(_body_rate)]


class LimitsSpec(Spec):
    max_header_bytes: HeaderBytes = DEFAULT_MAX_HEADER_BYTES
    max_headers: Annotated[int, Field(strict=True, ge=16, le=1000)] = DEFAULT_MAX_HEADERS
    header_timeout: Annotated[Duration, between(0, 300, above=True)] = DEFAULT_HEADER_TIMEOUT
    body_timeout: Annotated[Duration, between(0, 3600, above=True)] = DEFAULT_BODY_TIMEOUT
    send_timeout: Annotated[Duration, between(0, 3600, above=True)] = DEFAULT_SEND_TIMEOUT
    min_body_rate: BodyRate = DEFAULT_MIN_BODY_RATE
    min_body_rate_grace: Annotated[Duration, between(0, 3600, above=True)] = DEFAULT_MIN_BODY_RATE_GRACE

    def build(self) -> ServerLimits:
        return ServerLimits(
            self.max_header_bytes,
            self.max_headers,
            self.header_timeout,
            self.body_timeout,
            self.send_timeout,
            self.min_body_rate,
            self.min_body_rate_grace,
        )


class UpstreamPoolSpec(Spec):
    max_connections: Annotated[int, Field(strict=True, ge=1, le=100_000)] = DEFAULT_POOL_CONNECTIONS
    max_per_host: Annotated[int, Field(strict=True, ge=1, le=100_000)] | None = None
    idle_timeout: Annotated[Duration, between(0, 3600, above=True)] = DEFAULT_POOL_IDLE_TIMEOUT
    max_per_route: Annotated[int, Field(strict=True, ge=1, le=100_000)] | None = None

    def share_error(self) -> str | None:
        """What is wrong with `max_per_route` given `max_connections` (a route cannot hold more than the pool)."""
        if self.max_per_route is not None and self.max_per_route > self.max_connections:
            return f"must be at most max_connections ({self.max_connections})"
        return None

    def build(self) -> UpstreamPool:
        return UpstreamPool(self.max_connections, self.max_per_host, self.idle_timeout, self.max_per_route)


def parse_networks(values: Iterable[object]) -> tuple[list[IPNetwork], list[tuple[int, str]]]:
    """`trusted_proxies` entries: CIDRs (`10.0.0.0/8`) or single addresses. Returns the networks and, per bad entry,
    its index and a message. Host bits set (`10.0.0.1/8`) are an error: which network was meant?"""
    networks: list[IPNetwork] = []
    errors: list[tuple[int, str]] = []
    for index, value in enumerate(values):
        if not isinstance(value, str):
            errors.append((index, "must be a CIDR string such as 10.0.0.0/8 or 2001:db8::/32"))
            continue
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=True))
        except ValueError:
            errors.append((index, "must be an IP network in CIDR form (10.0.0.0/8), without host bits set"))
    return networks, errors


def header_room_warnings(limits: ServerLimits, providers: Iterable[Provider]) -> list[tuple[str, str]]:
    """(provider name, message) for each provider whose largest accepted token would not fit in the request head
    `limits` allow: such a token is refused with 431 before it is ever verified."""
    return [
        (
            provider.name,
            f"tokens of up to {provider.max_token_bytes} bytes are accepted, but a request head over "
            f"{limits.max_header_bytes} bytes is refused (431): raise limits.max_header_bytes",
        )
        for provider in providers
        if provider.max_token_bytes + _HEADER_ROOM > limits.max_header_bytes
    ]
