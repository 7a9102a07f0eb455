"""The forward-auth snippets of docs/forward-auth.md name the Service the chart really renders, on its real port."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
import yaml

from tests.chart.render import NAMESPACE, RELEASE, render, values_with
from tests.ingress.peers import SERVICE, snippet


def test_the_snippets_name_the_charts_service_and_port() -> None:
    service = render(values_with()).one("Service", f"{RELEASE}-auth-sidecar")
    assert SERVICE == f"{service['metadata']['name']}.{NAMESPACE}.svc.cluster.local"
    assert [port["port"] for port in service["spec"]["ports"]] == [80]


@pytest.mark.parametrize("name", ["nginx", "caddy", "envoy", "ingress-nginx", "traefik"])
def test_every_snippet_calls_the_service_and_nothing_else(name: str) -> None:
    text = snippet(name)
    assert SERVICE in text
    assert "auth-sidecar:8080" not in text and "svc.cluster.local:8080" not in text


def test_the_ingress_nginx_annotation_asks_the_service_at_the_forward_auth_path() -> None:
    annotations = yaml.safe_load(snippet("ingress-nginx"))["metadata"]["annotations"]
    url = urlsplit(annotations["nginx.ingress.kubernetes.io/auth-url"])
    assert (url.scheme, url.hostname, url.port or 80, url.path) == ("http", SERVICE, 80, "/_auth")
    headers = annotations["nginx.ingress.kubernetes.io/auth-response-headers"].split(",")
    assert headers == ["X-Auth-Subject", "X-Auth-User", "X-Auth-Tenant", "X-Auth-Roles", "X-Auth-Provider"]


def test_the_traefik_middleware_asks_the_service_and_does_not_trust_client_headers() -> None:
    forward = yaml.safe_load(snippet("traefik"))["spec"]["forwardAuth"]
    url = urlsplit(forward["address"])
    assert (url.scheme, url.hostname, url.port or 80, url.path) == ("http", SERVICE, 80, "/_auth")
    assert forward.get("trustForwardHeader", False) is False  # with it, Traefik passes a client's X-Forwarded-Uri on
    assert forward["authResponseHeaders"] == ["X-Auth-Subject", "X-Auth-User", "X-Auth-Tenant", "X-Auth-Roles",
                                              "X-Auth-Provider"]  # fmt: skip


def _addresses(text: str) -> list[tuple[str, int]]:
    """Every (host, port) a snippet sends the auth request to: URLs (http without a port is 80), Caddy's
    `host:port`, and Envoy's `socket_address`."""
    found = [
        (host, int(port) if port else 80)
        for host, port in re.findall(r"http://([a-z0-9.-]+\.svc\.cluster\.local)(?::(\d+))?", text)
    ]
    found += [
        (host, int(port)) for host, port in re.findall(r"(?<![/\w.-])([a-z0-9.-]+\.svc\.cluster\.local):(\d+)", text)
    ]
    found += [
        (host, int(port))
        for host, port in re.findall(r"address: ([a-z0-9.-]+\.svc\.cluster\.local), port_value: (\d+)", text)
    ]
    return found


@pytest.mark.parametrize("name", ["nginx", "caddy", "envoy", "ingress-nginx", "traefik"])
def test_every_address_in_a_snippet_is_the_rendered_services_host_and_port(name: str) -> None:
    service = render(values_with()).one("Service", f"{RELEASE}-auth-sidecar")
    rendered = {(f"{service['metadata']['name']}.{NAMESPACE}.svc.cluster.local", port["port"])
                for port in service["spec"]["ports"]}  # fmt: skip
    addresses = _addresses(snippet(name))
    assert addresses, f"the {name} snippet names no Service address"
    assert set(addresses) <= rendered, f"the {name} snippet calls {addresses}; the chart renders {rendered}"


def test_a_snippet_calling_another_port_or_name_is_caught() -> None:
    assert _addresses("proxy_pass http://payments-auth-sidecar.flows.svc.cluster.local:8080/_auth;") == [
        ("payments-auth-sidecar.flows.svc.cluster.local", 8080)
    ]
    assert _addresses("forward_auth payments-sidecar.flows.svc.cluster.local:80 {") == [
        ("payments-sidecar.flows.svc.cluster.local", 80)
    ]
    assert _addresses(
        "socket_address: { address: payments-auth-sidecar.flows.svc.cluster.local, port_value: 9901 }"
    ) == [("payments-auth-sidecar.flows.svc.cluster.local", 9901)]
