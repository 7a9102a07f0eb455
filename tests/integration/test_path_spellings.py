"""The attack found: policy `/public/` open (a prefix) and `/public/admin` protected (an exact path). Without a token,
`/public/admin/`, `/public/admin/.`, `/public/admin.`, `%20`, `%2e`, `::$DATA` and `.json` reached the open prefix,
and Express, ASP.NET Core, Spring or IIS serve them as `/public/admin`. Against a real sidecar process in proxy and
forward-auth mode: each spelling is now decided (and forwarded) as the protected path itself."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar.demo.issuer import DemoIssuer
from tests.support.people import LISA, TOM, bearer
from tests.support.rawsock import head, send_raw
from tests.support.servers import SidecarProcess

POLICY = Path(__file__).with_name("spellings.yaml")
SPELLINGS = [
    "/public/admin",
    "/public/admin/",
    "/public/admin/.",
    "/public/admin.",
    "/public/admin%20",
    "/public/admin%2e",
    "/public/admin::$DATA",
    "/public/admin.json",
    "/public/admin;x",
]


@pytest.fixture(scope="module")
def spellings(sidecar_env: dict[str, str]) -> Iterator[SidecarProcess]:
    args = ("--drain-delay", "0", "--forward-auth-path", "/_auth", "--forward-auth-ingress", "nginx")
    process = SidecarProcess(POLICY, sidecar_env, args).start()
    yield process
    assert process.stop() == 0


@pytest.mark.parametrize("path", SPELLINGS)
def test_a_spelling_of_the_protected_path_needs_its_token_in_proxy_mode(
    path: str, spellings: SidecarProcess, issuer: DemoIssuer
) -> None:
    anonymous = send_raw(spellings.proxy, head("GET", path, [("Connection", "close")]))
    assert (anonymous.status, anonymous.json()["reason"]) == (401, "missing_token")
    other = send_raw(spellings.proxy, head("GET", path, [*bearer(issuer, TOM), ("Connection", "close")]))
    assert (other.status, other.json()["route"]) == (403, "padmin")
    allowed = send_raw(spellings.proxy, head("GET", path, [*bearer(issuer, LISA), ("Connection", "close")]))
    assert allowed.status == 200, allowed.body
    assert allowed.json()["path"] == "/admin-app"  # the protected route's upstream, as for the path itself


@pytest.mark.parametrize("path", SPELLINGS)
def test_a_spelling_of_the_protected_path_needs_its_token_in_forward_auth_mode(
    path: str, spellings: SidecarProcess
) -> None:
    asked = [("X-Original-URI", path), ("X-Original-Method", "GET"), ("Connection", "close")]
    answer = send_raw(spellings.proxy, head("GET", "/_auth", asked))
    assert (answer.status, answer.json()["reason"]) == (401, "missing_token")


@pytest.mark.parametrize("path", ["/public/admin/x", "/public/administrator", "/public/index.html"])
def test_other_paths_under_the_open_prefix_stay_open(path: str, spellings: SidecarProcess) -> None:
    reply = send_raw(spellings.proxy, head("GET", path, [("Connection", "close")]))
    assert reply.status == 200, reply.body
    assert reply.json()["path"] == "/static" + path[len("/public") :]
