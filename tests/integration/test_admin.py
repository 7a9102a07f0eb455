"""The admin listener's answers, path by method, as probes and scrapers see them on the wire."""

from __future__ import annotations

import pytest
from prometheus_client import CONTENT_TYPE_LATEST

from tests.support.rawhttp import request
from tests.support.servers import SidecarProcess

pytestmark = pytest.mark.integration

TEXT = "text/plain; charset=utf-8"
NOT_ALLOWED = (405, TEXT, b"Method Not Allowed")
NOT_FOUND = (404, TEXT, b"Not Found")

# (method, target) -> (status, content type, body); HEAD rows give GET's length and no body.
CASES = {
    "healthz": ("GET", "/healthz", (200, TEXT, b"ok\n")),
    "healthz-query-ignored": ("GET", "/healthz?probe=kubelet", (200, TEXT, b"ok\n")),
    "healthz-head": ("HEAD", "/healthz", (200, TEXT, b"ok\n")),
    "readyz": ("GET", "/readyz", (200, TEXT, b"ready\n")),
    "readyz-head": ("HEAD", "/readyz", (200, TEXT, b"ready\n")),
    "metrics": ("GET", "/metrics", (200, CONTENT_TYPE_LATEST, None)),
    "metrics-head": ("HEAD", "/metrics", (200, CONTENT_TYPE_LATEST, None)),
    "metrics-post": ("POST", "/metrics", NOT_ALLOWED),
    "healthz-delete": ("DELETE", "/healthz", NOT_ALLOWED),
    "readyz-put": ("PUT", "/readyz", NOT_ALLOWED),
    "healthz-options": ("OPTIONS", "/healthz", NOT_ALLOWED),
    "root": ("GET", "/", NOT_FOUND),
    "unknown": ("GET", "/nope", NOT_FOUND),
    "unknown-post": ("POST", "/nope", NOT_FOUND),
    "unknown-head": ("HEAD", "/nope", NOT_FOUND),
    "case-matters": ("GET", "/HEALTHZ", NOT_FOUND),
    "below-an-endpoint": ("GET", "/readyz/x", NOT_FOUND),
    "proxy-route-not-here": ("GET", "/flows/user-lookup", NOT_FOUND),
}


@pytest.mark.parametrize(("method", "target", "expected"), list(CASES.values()), ids=list(CASES))
def test_admin_answers(
    sidecar: SidecarProcess, method: str, target: str, expected: tuple[int, str, bytes | None]
) -> None:
    status, content_type, body = expected
    response = request(sidecar.admin, target.encode("ascii"), method.encode("ascii"))
    assert (response.status, response.header("content-type")) == (status, content_type)
    if status == 405:
        assert response.header("allow") == "GET, HEAD"
    if method == "HEAD":
        assert response.raw.endswith(b"\r\n\r\n")  # nothing after the head
        assert int(response.header("content-length") or 0) > 0  # the length GET would have
    elif body is None:  # the exposition: Prometheus text with the sidecar's series
        assert response.body.startswith(b"# HELP ") and b"\nsidecar_config_info{" in response.body
    else:
        assert response.body == body


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_trailing_slash_redirects_to_the_endpoint(sidecar: SidecarProcess, path: str) -> None:
    response = request(sidecar.admin, path.encode("ascii") + b"/")
    assert (response.status, response.header("location"), response.body) == (307, path, b"")
