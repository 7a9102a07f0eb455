"""HTTPS upstreams through a real sidecar: verified against the trust store, X.509-strict on every Python, and a
refused certificate explained in the log line, never in the answer."""

from __future__ import annotations

import http.server
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.support.servers import SidecarProcess
from tests.support.tls import LegacyCA, LocalCA


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello over tls"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def https_upstream(context: ssl.SSLContext, handler: type[_Hello] = _Hello) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextmanager
def sidecar_to(upstream: str, ca_file: Path, tmp_path: Path) -> Iterator[SidecarProcess]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f"version: 1\nroutes:\n  - name: tls\n    match: {{ path: /tls }}\n    upstream: {upstream}/hello\n"
        "    allow: anyone\n"
    )
    sidecar = SidecarProcess(policy, {"SSL_CERT_FILE": str(ca_file)}).start()
    try:
        yield sidecar
    finally:
        assert sidecar.stop() == 0


def test_an_upstream_certificate_from_a_conforming_private_ca_is_accepted(tmp_path: Path) -> None:
    ca = LocalCA(tmp_path)
    with https_upstream(ca.server_context("127.0.0.1")) as upstream, sidecar_to(upstream, ca.ca_file, tmp_path) as s:
        answer = httpx.get(s.proxy + "/tls", trust_env=False)
        assert (answer.status_code, answer.content) == (200, b"hello over tls")


@pytest.mark.parametrize(
    ("make_ca", "names", "cause"),
    [
        (LegacyCA, ("127.0.0.1",), "SSLCertVerificationError: Missing Authority Key Identifier"),
        (LocalCA, ("other.test",), "SSLCertVerificationError: IP address mismatch"),
    ],
    ids=["not-x509-strict", "wrong-host"],
)
def test_a_refused_upstream_certificate_is_a_502_with_the_cause_in_the_log_only(
    make_ca: type[LocalCA] | type[LegacyCA], names: tuple[str, ...], cause: str, tmp_path: Path
) -> None:
    ca = make_ca(tmp_path)
    with https_upstream(ca.server_context(*names)) as upstream, sidecar_to(upstream, ca.ca_file, tmp_path) as s:
        answer = httpx.get(s.proxy + "/tls", headers={"X-Request-Id": "tls-refused"}, trust_env=False)
        assert (answer.status_code, answer.json()["reason"]) == (502, "upstream_unreachable")
        assert answer.json()["detail"] == "The upstream could not be reached."  # the cause stays in the log
        line = s.wait_for_log("request", request_id="tls-refused")
        assert (line["decision"], line["reason"]) == ("upstream_error", "upstream_unreachable")
        assert line["upstream_error"].startswith(cause), line["upstream_error"]
