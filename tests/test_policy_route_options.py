"""`rate_limit` and `cors` in the policy file: what they load to, and every mistake as `FILE:LINE: path: message`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sidecar.policy.load import PolicyError, parse_policy
from sidecar.policy.model import Cors, Policy, RateKey, RateLimit

HEAD = """\
version: 1
providers:
  demo: {issuer: "https://issuer.example", audiences: [api://x]}
routes:
  - name: flow
    match: {path: /flow, methods: [GET, POST]}
    upstream: https://up.example/
"""
AUTHENTICATED = "    allow: [{provider: demo}]\n"
ANYONE = "    allow: anyone\n"
EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "example.yaml"


def load(extra: str, allow: str = AUTHENTICATED) -> Policy:
    return parse_policy(HEAD + allow + extra, "p.yaml", {})


def errors(extra: str, allow: str = AUTHENTICATED) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        load(extra, allow)
    return caught.value.errors


def test_rate_limit_loads_with_a_one_minute_default_window() -> None:
    route = load("    rate_limit: {per: app, requests: 10}\n").routes[0]
    assert route.rate_limit == RateLimit(RateKey.APP, 10, 60)
    assert route.cors is None


IPV6_PREFIXES = {"default-64": ("", 64), "a-56": (", ipv6_prefix: 56", 56), "per-address": (", ipv6_prefix: 128", 128)}


@pytest.mark.parametrize(("given", "prefix"), IPV6_PREFIXES.values(), ids=IPV6_PREFIXES.keys())
def test_rate_limit_per_ip_groups_ipv6_by_a_prefix(given: str, prefix: int) -> None:
    route = load(f"    rate_limit: {{per: ip, requests: 10{given}}}\n").routes[0]
    assert route.rate_limit == RateLimit(RateKey.IP, 10, 60, ipv6_prefix=prefix)


def test_cors_loads_normalised_with_defaults() -> None:
    route = load("    cors: {origins: ['HTTPS://App.Example.com:443']}\n").routes[0]
    assert route.cors == Cors(
        origins=frozenset({"https://app.example.com"}),
        any_origin=False,
        methods=frozenset({"GET", "POST"}),  # the route's
        headers=frozenset({"authorization", "accept", "accept-language", "content-language", "content-type"}),
        expose_headers=(),
        max_age=600,
        credentials=False,
    )


def test_cors_loads_every_key() -> None:
    cors = (
        load(
            "    cors:\n"
            "      origins: ['*']\n"
            "      methods: [GET]\n"
            "      headers: [Authorization, X-Trace]\n"
            "      expose_headers: [X-Flow-Run, X-Flow-Run]\n"
            "      max_age: 1h\n"
        )
        .routes[0]
        .cors
    )
    assert cors is not None
    assert (cors.any_origin, cors.origins, cors.methods) == (True, frozenset(), frozenset({"GET"}))
    assert "x-trace" in cors.headers and cors.expose_headers == ("x-flow-run",) and cors.max_age == 3600


ERRORS = {
    "rate-per-unknown": (
        "    rate_limit: {per: user, requests: 3}\n",
        AUTHENTICATED,
        "p.yaml:9: routes[0].rate_limit.per: must be 'subject', 'app' or 'ip'",
    ),
    "rate-requests-zero": (
        "    rate_limit: {per: ip, requests: 0}\n",
        AUTHENTICATED,
        "p.yaml:9: routes[0].rate_limit.requests: must be a whole number from 1 to 100000",
    ),
    "rate-requests-text": (
        "    rate_limit: {per: ip, requests: '3'}\n",
        AUTHENTICATED,
        "p.yaml:9: routes[0].rate_limit.requests: must be an integer",
    ),
    "rate-window-fraction": (
        "    rate_limit: {per: ip, requests: 3, window: 500ms}\n",
        AUTHENTICATED,
        "p.yaml:9: routes[0].rate_limit.window: must be whole seconds from 1s to 24h",
    ),
    "rate-window-too-long": (
        "    rate_limit: {per: ip, requests: 3, window: 25h}\n",
        AUTHENTICATED,
        "p.yaml:9: routes[0].rate_limit.window: must be whole seconds from 1s to 24h",
    ),
    "rate-empty": ("    rate_limit:\n", AUTHENTICATED, "p.yaml:9: routes[0].rate_limit: must not be empty"),
    "rate-ipv6-prefix-too-short": (
        "    rate_limit: {per: ip, requests: 3, ipv6_prefix: 16}\n",
        AUTHENTICATED,
        "p.yaml:9: routes[0].rate_limit.ipv6_prefix: must be a prefix length from 32 to 128 (64: one subscriber's",
    ),
    "rate-ipv6-prefix-too-long": (
        "    rate_limit:\n      per: ip\n      requests: 3\n      ipv6_prefix: 129\n",
        AUTHENTICATED,
        "p.yaml:12: routes[0].rate_limit.ipv6_prefix: must be a prefix length from 32 to 128",
    ),
    "rate-ipv6-prefix-as-cidr-text": (
        "    rate_limit: {per: ip, requests: 3, ipv6_prefix: /64}\n",
        AUTHENTICATED,
        "p.yaml:9: routes[0].rate_limit.ipv6_prefix: must be an integer",
    ),
    "rate-ipv6-prefix-per-subject": (
        "    rate_limit:\n      per: subject\n      requests: 3\n      ipv6_prefix: 56\n",
        AUTHENTICATED,
        "p.yaml:12: routes[0].rate_limit.ipv6_prefix: applies to per: ip only",
    ),
    "rate-per-subject-on-anyone": (
        "    rate_limit:\n      requests: 3\n      per: subject\n",
        ANYONE,
        "p.yaml:11: routes[0].rate_limit.per: per: subject needs a verified caller, and this route allows anyone",
    ),
    "cors-no-origins": ("    cors: {origins: []}\n", AUTHENTICATED, "p.yaml:9: routes[0].cors.origins: must not be"),
    "cors-origin-with-path": (
        "    cors:\n      origins:\n        - https://app.example.com\n        - https://app.example.com/\n",
        AUTHENTICATED,
        "p.yaml:12: routes[0].cors.origins[1]: must be an origin",
    ),
    "cors-star-with-others": (
        "    cors: {origins: ['*', 'https://app.example.com']}\n",
        AUTHENTICATED,
        'p.yaml:9: routes[0].cors.origins: "*" (every origin) stands alone',
    ),
    "cors-star-with-credentials": (
        "    cors: {origins: ['*'], credentials: true}\n",
        AUTHENTICATED,
        "p.yaml:9: routes[0].cors: credentials: true needs the origins listed",
    ),
    "cors-method-the-route-does-not-take": (
        "    cors:\n      origins: [https://app.example.com]\n      methods: [GET, DELETE]\n",
        AUTHENTICATED,
        "p.yaml:11: routes[0].cors.methods[1]: DELETE is not a method of this route (it takes: GET, POST)",
    ),
    "cors-header-star": (
        "    cors: {origins: [https://app.example.com], headers: ['*']}\n",
        AUTHENTICATED,
        'p.yaml:9: routes[0].cors.headers[0]: list the header names: "*" would never cover Authorization',
    ),
    "cors-header-not-a-token": (
        "    cors: {origins: [https://app.example.com], expose_headers: ['X Flow']}\n",
        AUTHENTICATED,
        "p.yaml:9: routes[0].cors.expose_headers[0]: must be a valid header name",
    ),
    "cors-max-age-too-long": (
        "    cors: {origins: [https://app.example.com], max_age: 25h}\n",
        AUTHENTICATED,
        "p.yaml:9: routes[0].cors.max_age: must be at least 0s and at most 86400s",
    ),
    "cors-unknown-key": (
        "    cors: {origins: [https://app.example.com], allow_credentials: true}\n",
        AUTHENTICATED,
        'p.yaml:9: routes[0].cors.allow_credentials: unknown key "allow_credentials": did you mean "credentials"? '
        "(allowed: credentials, expose_headers, headers, max_age, methods, origins)",
    ),
}


@pytest.mark.parametrize(("extra", "allow", "message"), ERRORS.values(), ids=ERRORS.keys())
def test_each_mistake_is_located(extra: str, allow: str, message: str) -> None:
    found = errors(extra, allow)
    assert len(found) == 1, found
    assert found[0].startswith(message), found


def test_a_route_that_takes_options_is_warned_that_preflights_stop_at_the_sidecar() -> None:
    text = HEAD.replace("[GET, POST]", "[GET, OPTIONS]") + AUTHENTICATED + "    cors: {origins: ['*']}\n"
    warnings = parse_policy(text, "p.yaml", {}).warnings
    assert any("answered by the sidecar" in warning and warning.startswith("p.yaml:6:") for warning in warnings)


def test_the_examples_commented_rate_limit_and_cors_load_as_documented() -> None:
    text = re.sub(r"^    # (rate_limit: .*|cors:)$", r"    \1", EXAMPLE.read_text(), flags=re.M)
    text = re.sub(r"^    #   (\w+: .*)$", r"      \1", text, flags=re.M)
    env = {"USER_LOOKUP_TRIGGER_URL": "https://up.example/a", "PAYROLL_TRIGGER_URL": "https://up.example/b"}
    payroll = parse_policy(text, "example.yaml", env).routes[1]
    assert payroll.rate_limit == RateLimit(RateKey.SUBJECT, 10, 60)
    assert payroll.cors is not None and payroll.cors.origins == frozenset({"https://payroll.contoso.com"})


def test_cors_headers_without_authorization_on_an_authenticated_route_are_warned() -> None:
    text = HEAD + AUTHENTICATED + "    cors: {origins: ['*'], headers: [Content-Type]}\n"
    warnings = parse_policy(text, "p.yaml", {}).warnings
    assert list(warnings) == [
        "p.yaml:9: routes[0].cors.headers: without Authorization, pages cannot send the bearer token this route needs"
    ]
