"""The limit keys of a policy: route `max_body` / `max_concurrent`, top-level `limits`, `upstream_pool` and
`trusted_proxies` - their defaults, their spellings, and each mistake reported at its line."""

from __future__ import annotations

import ipaddress

import pytest

from sidecar.policy.limits import ServerLimits, UpstreamPool, parse_size
from sidecar.policy.load import PolicyError, parse_policy
from sidecar.policy.model import Policy

HEAD = """\
version: 1
providers:
  contoso:
    issuer: https://login.example.com/tenant/v2.0
    audiences: [api://app]
routes:
  - name: a
    match: {path: /a}
    upstream: https://up.example.com/a
    allow: [{provider: contoso}]
"""  # ten lines: whatever follows starts on line 11


def parse(text: str) -> Policy:
    return parse_policy(text, "p.yaml", {})


def errors(text: str) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        parse(text)
    return caught.value.errors


def test_defaults_bound_everything() -> None:
    policy = parse(HEAD)
    route = policy.routes[0]
    assert (route.max_body, route.max_concurrent, route.max_query_params) == (100 * 1024**2, 256, 1000)
    assert policy.limits == ServerLimits(64 * 1024, 100, 10.0, 30.0, send_timeout=30.0)
    assert policy.upstream_pool == UpstreamPool(256, None)
    assert policy.upstream_pool.route_share == 128  # one route never holds the whole pool
    assert policy.trusted_proxies == ()
    assert policy.warnings == ()


SIZES = {
    "bytes": (1048576, 1048576),
    "bytes-as-text": ("512", 512),
    "kib": ("64KiB", 64 * 1024),
    "mib": ("10MiB", 10 * 1024**2),
    "gib": ("2GiB", 2 * 1024**3),
    "kb-is-decimal": ("1KB", 1000),
    "gb-is-decimal": ("1GB", 1000**3),
    "spaced": (" 5 MiB ", 5 * 1024**2),
    "zero": (0, 0),
    "unlimited": ("unlimited", None),
}


@pytest.mark.parametrize(("text", "size"), SIZES.values(), ids=SIZES.keys())
def test_sizes(text: object, size: int | None) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["-1", "1.5MiB", "10 mb", "lots", True, 1.5, "1TB"], ids=str)
def test_not_sizes(text: object) -> None:
    with pytest.raises(ValueError, match="must be a size"):
        parse_size(text)


def test_route_limits_are_read() -> None:
    policy = parse(HEAD + "    max_body: 1MiB\n    max_concurrent: 8\n    max_query_params: 100000\n")
    assert (policy.routes[0].max_body, policy.routes[0].max_concurrent) == (1024**2, 8)
    assert policy.routes[0].max_query_params == 100_000
    assert parse(HEAD + "    max_query_params: 1\n").routes[0].max_query_params == 1
    unlimited = parse(HEAD + "    max_body: unlimited\n    max_concurrent: unlimited\n").routes[0]
    assert (unlimited.max_body, unlimited.max_concurrent) == (None, None)


def test_top_level_limits_are_read() -> None:
    text = HEAD + (
        "limits: {max_header_bytes: 32KiB, max_headers: 50, header_timeout: 5s, body_timeout: 2m, send_timeout: 90s}\n"
        "upstream_pool: {max_connections: 64, max_per_host: 16, idle_timeout: 4s, max_per_route: 40}\n"
        "trusted_proxies: [10.0.0.0/8, 192.168.1.7, '2001:db8::/32']\n"
    )
    policy = parse(text)
    assert policy.limits == ServerLimits(32 * 1024, 50, 5.0, 120.0, 90.0)
    assert policy.upstream_pool == UpstreamPool(64, 16, 4.0, 40)
    assert policy.upstream_pool.route_share == 40
    assert policy.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.168.1.7/32"),
        ipaddress.ip_network("2001:db8::/32"),
    )


def test_a_body_must_average_240_bytes_a_second_after_5s_unless_set() -> None:
    assert (parse(HEAD).limits.min_body_rate, parse(HEAD).limits.min_body_rate_grace) == (240, 5.0)
    limits = parse(HEAD + "limits: {min_body_rate: 1KiB, min_body_rate_grace: 500ms}\n").limits
    assert (limits.min_body_rate, limits.min_body_rate_grace) == (1024, 0.5)
    assert parse(HEAD + "limits: {min_body_rate: 0}\n").limits.min_body_rate == 0  # no minimum


SIZE_ERROR = 'must be a size: bytes (1048576) or a number with a unit ("64KiB", "10MiB", "1GB"), or "unlimited"'
COUNT_ERROR = 'must be a whole number of at least 1, or "unlimited"'
PARAMS_ERROR = (
    "must be a whole number from 1 to 100000: never unlimited, as every parameter costs the worker's event loop time"
)
MISTAKES = {
    "max-body-not-a-size": ("    max_body: big\n", 11, f"routes[0].max_body: {SIZE_ERROR}"),
    "max-concurrent-zero": ("    max_concurrent: 0\n", 11, f"routes[0].max_concurrent: {COUNT_ERROR}"),
    "max-query-params-zero": ("    max_query_params: 0\n", 11, f"routes[0].max_query_params: {PARAMS_ERROR}"),
    "max-query-params-unlimited": (
        "    max_query_params: unlimited\n",
        11,
        f"routes[0].max_query_params: {PARAMS_ERROR}",
    ),
    "max-query-params-over-the-ceiling": (
        "    max_query_params: 100001\n",
        11,
        f"routes[0].max_query_params: {PARAMS_ERROR}",
    ),
    "header-bytes-too-small": (
        "limits:\n  max_header_bytes: 1KiB\n",
        12,
        "limits.max_header_bytes: must be at least 4096 bytes and at most 16777216 bytes",
    ),
    "header-bytes-unlimited": (
        "limits:\n  max_header_bytes: unlimited\n",
        12,
        "limits.max_header_bytes: must be a size: a request head is never unlimited",
    ),
    "max-headers-too-few": (
        "limits:\n  max_headers: 3\n",
        12,
        "limits.max_headers: Input should be greater than or equal to 16",
    ),
    "header-timeout-zero": (
        "limits:\n  header_timeout: 0\n",
        12,
        "limits.header_timeout: must be more than 0s and at most 300s",
    ),
    "unknown-limit": (
        "limits:\n  max_body: 1MiB\n",
        12,
        'limits.max_body: unknown key "max_body" '
        "(allowed: body_timeout, header_timeout, max_header_bytes, max_headers, min_body_rate, min_body_rate_grace, "
        "send_timeout)",
    ),
    "limits-not-a-mapping": ("limits: [1]\n", 11, "limits: must be a mapping"),
    "pool-zero": (
        "upstream_pool: {max_connections: 0}\n",
        11,
        "upstream_pool.max_connections: Input should be greater than or equal to 1",
    ),
    "send-timeout-zero": (
        "limits:\n  send_timeout: 0\n",
        12,
        "limits.send_timeout: must be more than 0s and at most 3600s",
    ),
    "min-body-rate-unlimited": (
        "limits:\n  min_body_rate: unlimited\n",
        12,
        'limits.min_body_rate: must be bytes per second (240, "1KiB"), or 0 for no minimum; "unlimited" is not a rate',
    ),
    "min-body-rate-negative": ("limits:\n  min_body_rate: -1\n", 12, f"limits.min_body_rate: {SIZE_ERROR}"),
    "min-body-rate-too-high": (
        "limits:\n  min_body_rate: 2GiB\n",
        12,
        "limits.min_body_rate: must be at most 1073741824 bytes per second",
    ),
    "min-body-rate-grace-zero": (
        "limits:\n  min_body_rate_grace: 0\n",
        12,
        "limits.min_body_rate_grace: must be more than 0s and at most 3600s",
    ),
    "route-share-over-the-pool": (
        "upstream_pool:\n  max_connections: 8\n  max_per_route: 9\n",
        13,
        "upstream_pool.max_per_route: must be at most max_connections (8)",
    ),
    "route-share-zero": (
        "upstream_pool: {max_per_route: 0}\n",
        11,
        "upstream_pool.max_per_route: Input should be greater than or equal to 1",
    ),
    "pool-idle-timeout-zero": (
        "upstream_pool: {idle_timeout: 0s}\n",
        11,
        "upstream_pool.idle_timeout: must be more than 0s and at most 3600s",
    ),
    "proxy-host-bits": (
        "trusted_proxies: [10.0.0.1/8]\n",
        11,
        "trusted_proxies[0]: must be an IP network in CIDR form (10.0.0.0/8), without host bits set",
    ),
    "proxy-not-an-address": (
        "trusted_proxies:\n  - 10.0.0.0/8\n  - proxy.example.com\n",
        13,
        "trusted_proxies[1]: must be an IP network in CIDR form (10.0.0.0/8), without host bits set",
    ),
    "proxies-not-a-list": ("trusted_proxies: 10.0.0.0/8\n", 11, "trusted_proxies: must be a list"),
}


@pytest.mark.parametrize(("extra", "line", "message"), MISTAKES.values(), ids=MISTAKES.keys())
def test_mistakes_are_reported_at_their_line(extra: str, line: int, message: str) -> None:
    assert errors(HEAD + extra) == [f"p.yaml:{line}: {message}"]


def test_a_token_that_cannot_fit_in_the_head_is_warned_about() -> None:
    text = HEAD.replace("    audiences: [api://app]\n", "    audiences: [api://app]\n    max_token_bytes: 65536\n")
    warnings = parse(text).warnings
    assert warnings == (
        "p.yaml:6: providers.contoso.max_token_bytes: tokens of up to 65536 bytes are accepted, but a request head "
        "over 65536 bytes is refused (431): raise limits.max_header_bytes",
    )
    assert parse(text + "limits: {max_header_bytes: 80KiB}\n").warnings == ()
