"""rateLimitStore: the Redis URL comes from a Secret (never the values), the NetworkPolicy lets the pods reach Redis
when egress is restricted, and nothing of it renders when unset."""

from __future__ import annotations

from typing import Any

from tests.chart.render import lint, render, validate, values_with

REDIS_PODS = [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "redis"}}}]
RESTRICTED = {"enabled": True, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": 443}]}]}


def with_store(**store: Any) -> dict[str, Any]:
    return values_with(rateLimitStore={"existingSecret": "rate-limit-store", **store}, networkPolicy=RESTRICTED)


def test_the_url_comes_from_the_secret_as_redis_url() -> None:
    env = render(with_store(urlKey="redis-url")).container()["env"]
    assert {"name": "REDIS_URL", "valueFrom": {"secretKeyRef": {"name": "rate-limit-store", "key": "redis-url"}}} in env


def test_restricted_egress_gets_a_rule_to_redis_after_dns() -> None:
    egress = render(with_store(egressTo=REDIS_PODS, ports=[6379, 26379])).one("NetworkPolicy")["spec"]["egress"]
    assert [rule["ports"][0]["port"] for rule in egress] == [53, 6379, 443]  # DNS, Redis, the operator's rules
    assert egress[1] == {
        "ports": [{"port": 6379, "protocol": "TCP"}, {"port": 26379, "protocol": "TCP"}],
        "to": REDIS_PODS,
    }


def test_it_renders_valid_objects_and_lints_clean() -> None:
    values = with_store(egressTo=REDIS_PODS)
    errors = [error for obj in render(values).objects for error in validate(obj)]
    assert not errors, "\n".join(errors)
    assert lint(values) == []


def test_unset_it_adds_nothing() -> None:
    rendered = render(values_with(networkPolicy=RESTRICTED))
    assert not any(item["name"] == "REDIS_URL" for item in rendered.container().get("env", []))
    assert [rule["ports"][0]["port"] for rule in rendered.one("NetworkPolicy")["spec"]["egress"]] == [53, 443]
