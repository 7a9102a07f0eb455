"""No confusing path reaches an upstream under a policy other than its own: raw request lines to a real sidecar.

The policy puts a protected `/admin` (exact) and `/admin/` (prefix) next to an open `/public/` prefix and an open
catch-all `/`, each forwarding to a different path of the echo upstream. Every request is sent without a token, so
the upstream must never see a path under `/protected`; each row names what must happen instead: a refusal (and which
route refused), or the exact path the echo upstream received: the path that the matched route's policy authorised.

What the HTTP parser (uvicorn with httptools) does before the sidecar sees a path, found by these rows:
- absolute-form (`GET http://host/x HTTP/1.1`): the scheme and authority are dropped, the path is `/x`; a
  target with no path (`http://host`) is refused by the parser with 400.
- `#`: httptools cuts the fragment from the path (and from the query) unseen; RFC 9112 has no fragment in a request
  target, so the sidecar's connection layer refuses a raw `#` anywhere in it (400 `invalid_path`).
- `*` (asterisk-form): reaches the sidecar as the path `*`, refused by normalisation (400).
- raw tab, space, control or non-ASCII bytes: refused by the parser, answered 400 `bad_request` by the sidecar's
  connection layer (sidecar/edge/protocol.py); a target that takes the head over `limits.max_header_bytes` (64 KiB by
  default, about where httptools itself gives up) is 431 `headers_too_large`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sidecar.demo.issuer import CONTOSO_TENANT, DemoIssuer
from sidecar.edge.paths import MAX_PATH_BYTES
from tests.support.rawhttp import RawResponse, request
from tests.support.servers import SidecarProcess, ThreadServer

pytestmark = pytest.mark.integration

POLICY = """\
version: 1
realm: paths
providers:
  contoso:
    issuer: ${ISSUER}/11111111-2222-3333-4444-555555555555/v2.0
    audiences: [api://trigger-gateway]
routes:
  - name: admin
    match: { path: /admin }
    upstream: ${UPSTREAM}/protected/admin
    allow: [{ provider: contoso }]
  - name: admin-area
    match: { path_prefix: /admin/ }
    upstream: ${UPSTREAM}/protected/area
    allow: [{ provider: contoso }]
  - name: public
    match: { path_prefix: /public/, methods: [GET] }
    upstream: ${UPSTREAM}/open/public
    allow: anyone
  - name: everything-else
    match: { path_prefix: / }
    upstream: ${UPSTREAM}/open/root
    allow: anyone
"""


@dataclass(frozen=True)
class Refused:
    status: int
    route: str | None = None  # the route whose policy refused it (None: refused before any route was chosen)
    reason: str | None = None  # default: invalid_path for 400, missing_token for 401


@dataclass(frozen=True)
class Echoed:
    path: str  # what the echo upstream received


LONG = "a" * 4000
# id -> (raw request target, what must happen)
CONFUSING: dict[str, tuple[bytes, Refused | Echoed]] = {
    "dot-dot-into-admin": (b"/public/../admin", Refused(401, "admin")),
    "encoded-dot-dot": (b"/public/%2e%2e/admin", Refused(401, "admin")),
    "upper-encoded-dot-dot": (b"/public/%2E%2E/admin", Refused(401, "admin")),
    "half-encoded-dot-dot": (b"/public/.%2e/admin", Refused(401, "admin")),
    "dot-dot-into-admin-area": (b"/public/x/../../admin/users", Refused(401, "admin-area")),
    "climb-above-root": (b"/../admin", Refused(400)),
    "encoded-climb-above-root": (b"/%2e%2e/admin", Refused(400)),
    "encoded-slash": (b"/public%2f..%2fadmin", Refused(400)),
    "encoded-slash-lower": (b"/public/..%2fadmin", Refused(400)),
    "encoded-backslash": (b"/public/..%5cadmin", Refused(400)),
    "raw-backslash": (b"/public/..\\admin", Refused(400)),
    "double-slash-to-admin": (b"//admin", Refused(401, "admin")),
    "slashes-around-admin": (b"///admin///", Refused(401, "admin-area")),
    "empty-segment-then-dot-dot": (b"/public//../admin", Refused(401, "admin")),
    "double-slash-in-public": (b"/public//x", Echoed("/open/public/x")),
    "semicolon-param": (b"/admin;x", Refused(401, "admin")),  # a spelling of the protected exact path (Tomcat)
    "extension": (b"/admin.json", Refused(401, "admin")),  # Spring's suffix patterns
    "trailing-dot-in-segment": (b"/admin.", Refused(401, "admin")),  # IIS strips it
    "data-stream": (b"/admin::$DATA", Refused(401, "admin")),  # NTFS
    "other-name": (b"/administrator", Echoed("/open/root/administrator")),
    "dot-dot-semicolon": (b"/public/..;/admin", Refused(400)),
    "encoded-dot-dot-semicolon": (b"/public/%2e%2e;/admin", Refused(400)),
    "dot-dot-inside-segment": (b"/public/..admin", Refused(400)),
    "upper-case": (b"/ADMIN", Echoed("/open/root/ADMIN")),
    "mixed-case-prefix": (b"/Public/x", Echoed("/open/root/Public/x")),
    "encoded-unreserved-letter": (b"/%61dmin", Refused(401, "admin")),
    "encoded-prefix-letter": (b"/%70ublic/x", Echoed("/open/public/x")),
    "trailing-slash-is-the-prefix": (b"/admin/", Refused(401, "admin-area")),
    "trailing-dot": (b"/admin/.", Refused(401, "admin-area")),
    "public-without-slash": (b"/public", Echoed("/open/root/public")),
    "dot-segments-in-rest": (b"/public/a/./b/../c", Echoed("/open/public/a/c")),
    "encoded-nul": (b"/public/x%00", Refused(400)),
    "encoded-nul-after-admin": (b"/admin%00", Refused(400)),
    "overlong-utf8-slash": (b"/public/%c0%af../admin", Refused(400)),
    "overlong-utf8-dots": (b"/public/%c0%ae%c0%ae/admin", Refused(400)),
    "invalid-utf8": (b"/public/%ff", Refused(400)),
    "broken-escape": (b"/public/%zz", Refused(400)),
    "query-holds-dot-dot": (b"/public/x?/../../admin", Echoed("/open/public/x")),
    "fragment-holds-dot-dot": (b"/public/x#/../../admin", Refused(400)),
    "fragment-after-admin": (b"/admin#/public/", Refused(400)),
    "fragment-after-the-query": (b"/public/x?a=1#/../../admin", Refused(400)),
    "empty-fragment": (b"/public/x#", Refused(400)),
    "encoded-question-mark": (b"/public/x%3f/../../admin", Refused(401, "admin")),
    "encoded-hash": (b"/public/x%23/../y", Echoed("/open/public/y")),
    "double-encoded-dots": (b"/public/%252e%252e/admin", Echoed("/open/public/%252e%252e/admin")),
    "encoded-tab": (b"/admin%09", Echoed("/open/root/admin%09")),
    "raw-tab": (b"/ad\tmin", Refused(400, reason="bad_request")),
    "raw-non-ascii": ("/public/café".encode(), Refused(400, reason="bad_request")),
    "absolute-form-to-admin": (b"http://attacker.example/admin", Refused(401, "admin")),
    "absolute-form-dot-dot": (b"http://127.0.0.1/public/../admin", Refused(401, "admin")),
    "absolute-form-public": (b"https://admin/public/x", Echoed("/open/public/x")),
    "absolute-form-without-path": (b"http://attacker.example", Refused(400, reason="bad_request")),
    "asterisk-form": (b"*", Refused(400)),
    "long-path-forwarded-whole": (b"/public/" + LONG.encode(), Echoed("/open/public/" + LONG)),
    "too-long-path": (b"/public/" + b"a" * MAX_PATH_BYTES, Refused(400)),
    "beyond-the-head-limit": (b"/public/" + b"a" * 70_000, Refused(431, reason="headers_too_large")),
}


def _write_policy(directory: Path) -> Path:
    path = directory / "paths.yaml"
    path.write_text(POLICY)
    return path


@pytest.fixture(scope="module")
def paths_sidecar(
    tmp_path_factory: pytest.TempPathFactory, upstream: ThreadServer, issuer_server: tuple[DemoIssuer, ThreadServer]
) -> Iterator[SidecarProcess]:
    config = _write_policy(tmp_path_factory.mktemp("paths"))
    process = SidecarProcess(config, {"ISSUER": issuer_server[1].url, "UPSTREAM": upstream.url}).start()
    yield process
    assert process.stop() == 0


def _check(response: RawResponse, expected: Refused | Echoed) -> None:
    if isinstance(expected, Echoed):
        assert response.status == 200, response.body[:300]
        assert response.json()["path"] == expected.path
        return
    assert response.status == expected.status, response.body[:300]
    problem = response.json()
    assert problem.get("route") == expected.route
    assert problem["reason"] == (expected.reason or {400: "invalid_path", 401: "missing_token"}[expected.status])


@pytest.mark.parametrize(("target", "expected"), CONFUSING.values(), ids=CONFUSING.keys())
def test_a_confusing_path_is_refused_or_forwarded_under_its_own_policy(
    paths_sidecar: SidecarProcess, target: bytes, expected: Refused | Echoed
) -> None:
    response = request(paths_sidecar.proxy, target)
    # Whatever else: without a token, nothing may reach the protected paths of the upstream.
    assert b"/protected" not in response.body
    _check(response, expected)


AUTHORISED = {
    "dot-dot-resolved-before-matching": (b"/public/../admin", "/protected/admin"),
    "dot-segments-in-admin-rest": (b"//admin/./a/../b", "/protected/area/b"),
    "encoded-letters-decoded": (b"/%61dmin/%75sers", "/protected/area/users"),
    "absolute-form-path-only": (b"http://attacker.example/admin/x", "/protected/area/x"),
}


@pytest.mark.parametrize(("target", "forwarded"), AUTHORISED.values(), ids=AUTHORISED.keys())
def test_the_upstream_receives_the_path_that_was_authorised(
    paths_sidecar: SidecarProcess, issuer: DemoIssuer, target: bytes, forwarded: str
) -> None:
    token = issuer.mint(CONTOSO_TENANT, {"aud": "api://trigger-gateway", "sub": "path-tester"})
    response = request(paths_sidecar.proxy, target, headers=[(b"Authorization", b"Bearer " + token.encode())])
    assert response.status == 200, response.body[:300]
    assert response.json()["path"] == forwarded
