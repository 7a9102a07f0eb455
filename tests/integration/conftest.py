"""One real sidecar process for the integration suite, in front of a real issuer and echo upstream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sidecar.demo.issuer import DemoIssuer
from tests.support.limited import Limited, limited_sidecar
from tests.support.servers import SidecarProcess, ThreadServer, free_closed_port

POLICY = Path(__file__).with_name("policy.yaml")
LOOKUP_SIG = "lookup-secret-signature-5d41402abc4b2a76"
PAYROLL_SIG = "payroll-secret-signature-7d793037a0760186"


# Tests that need the machine to themselves (`make test` runs the tests marked `alone` after the rest, one at a
# time), marked here rather than in their module. test_admin_attacks: the `..._the_proxy_unaffected` tests hold the
# proxy's latency under PROXY_P99_BOUND while the admin listener is attacked, and a scrape right after a flood of
# scrapes must be answered within 5 s; a neighbour's load would break both.
ALONE = {
    "test_admin_attacks.py": (
        "test_a_head_trickled_into_the_admin_port_is_408_and_the_proxy_unaffected",
        "test_a_header_without_end_sent_to_the_admin_port_is_cut_off_and_the_proxy_unaffected",
        "test_hundreds_of_silent_admin_connections_are_closed_and_the_proxy_unaffected",
        "test_scrapes_whose_clients_leave_at_once_neither_pile_up_nor_hold_back_later_scrapes",
    )
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        names = ALONE.get(item.path.name, ()) if item.path.parent == Path(__file__).parent else ()
        if item.name in names:
            item.add_marker(pytest.mark.alone)


@pytest.fixture(scope="session")
def sidecar_env(upstream: ThreadServer, issuer_server: tuple[DemoIssuer, ThreadServer]) -> dict[str, str]:
    return {
        "ISSUER": issuer_server[1].url,
        "UPSTREAM": upstream.url,
        "LOOKUP_SIG": LOOKUP_SIG,
        "PAYROLL_SIG": PAYROLL_SIG,
        "DEAD_PORT": str(free_closed_port()),
    }


@pytest.fixture(scope="session")
def sidecar(sidecar_env: dict[str, str]) -> Iterator[SidecarProcess]:
    process = SidecarProcess(
        POLICY, sidecar_env, ("--drain-delay", "0", "--forward-auth-path", "/_auth", "--forward-auth-ingress", "nginx")
    ).start()
    yield process
    assert process.stop() == 0
    # The canary: no line the sidecar wrote holds a token (every JWT starts with "eyJ") or an upstream secret.
    leaked = [line for line in process.lines if "eyJ" in line or LOOKUP_SIG in line or PAYROLL_SIG in line]
    assert not leaked, leaked[:3]


@pytest.fixture()
def client(sidecar: SidecarProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sidecar.proxy, timeout=30, trust_env=False) as http:
        yield http


@pytest.fixture()
def admin(sidecar: SidecarProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sidecar.admin, timeout=30, trust_env=False) as http:
        yield http


@pytest.fixture(scope="module")
def limited(sidecar_env: dict[str, str]) -> Iterator[Limited]:
    """A module's own sidecar on tests/integration/limits.yaml, in front of a recording upstream."""
    with limited_sidecar(sidecar_env) as servers:
        yield servers
