"""Forward-auth in-process: which (method, path) `original_request` believes for each `--forward-auth-ingress` and
what it refuses, then the endpoint driven through the ASGI interface only (scope, receive, send), built as
sidecar/ops/run.py builds it. In-process so that `make mutate` can test its mutants; tests/integration and
tests/ingress drive the same answers over the network and behind the real ingresses."""

from __future__ import annotations

import pytest

from sidecar.edge.forward_auth import ORIGINAL_HEADERS, READS, original_request
from sidecar.options import FORWARD_AUTH_INGRESSES
from sidecar.reasons import Reason, Rejection

PREFIX = b"/_auth"
Headers = list[tuple[bytes, bytes]]


def asks(ingress: str, method: str, uri: str) -> tuple[str, bytes, Headers]:
    """The auth request each ingress sends about the original (method, uri): its method, raw path and headers."""
    if ingress == "envoy":  # ext_authz: the original method, at path_prefix + the original path (no header)
        return method, PREFIX + uri.encode(), []
    if ingress == "ingress-nginx":  # an absolute URL, built from the client's Host
        return (
            "GET",
            PREFIX,
            [(b"x-original-url", f"https://gw.example{uri}".encode()), (b"x-original-method", method.encode())],
        )
    uri_name, method_name = {"nginx": (b"x-original-uri", b"x-original-method")}.get(
        ingress, (b"x-forwarded-uri", b"x-forwarded-method")
    )
    return "GET", PREFIX, [(b"x-forwarded-proto", b"https"), (uri_name, uri.encode()), (method_name, method.encode())]


def believed(ingress: str, method: str, raw_path: bytes, headers: Headers) -> tuple[str, bytes]:
    return original_request(READS[ingress], headers, method, raw_path, PREFIX)


def refused(ingress: str, method: str, raw_path: bytes, headers: Headers) -> Reason:
    with pytest.raises(Rejection) as caught:
        believed(ingress, method, raw_path, headers)
    return caught.value.reason


def test_every_ingress_is_in_the_table() -> None:
    assert set(READS) == set(FORWARD_AUTH_INGRESSES)


@pytest.mark.parametrize("ingress", FORWARD_AUTH_INGRESSES)
def test_each_ingress_is_believed_where_it_puts_the_original(ingress: str) -> None:
    method, raw_path, headers = asks(ingress, "POST", "/flows/payroll")
    assert believed(ingress, method, raw_path, headers) == ("POST", b"/flows/payroll")


@pytest.mark.parametrize("ingress", FORWARD_AUTH_INGRESSES)
def test_the_query_and_fragment_are_not_part_of_the_path(ingress: str) -> None:
    """The ingresses put the query in the URI header; decide() matches routes on the path alone. (Envoy's query is
    in the scope's query_string, never in raw_path.)"""
    uri = "/files/a%20b" if ingress == "envoy" else "/files/a%20b?sig=x#frag"
    assert believed(ingress, *asks(ingress, "GET", uri)) == ("GET", b"/files/a%20b")
