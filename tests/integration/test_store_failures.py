"""A failing rate-limit store is an operational event, not an outage or a hole: Redis stopped mid-run, hung (accepts,
never answers) or refusing our password. Every request is decided within the store's timeout by on_error (allow:
forwarded; deny: 503 rate_limit_unavailable), the error is counted and the health gauge drops, /readyz stays 200,
and counting resumes without a restart when Redis is back."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from sidecar.demo.issuer import CONTOSO_TENANT, DemoIssuer
from tests.support.metrics import rejections, sample, total
from tests.support.redis import RedisServer, SilentServer, flow_policy, redis_servers
from tests.support.servers import SidecarProcess, ThreadServer, free_closed_port

# Every test here checks an answer within ANSWERED_WITHIN behind a 50 ms store timeout: `make test` runs them alone.
pytestmark = pytest.mark.alone

PASSWORD = "store-password-0c1d"
LIMIT = 3
POLICY = (
    flow_policy(LIMIT, "1h")
    + """\
rate_limit_store:
  url: redis://127.0.0.1:${REDIS_PORT}/0
  password: ${file:PASSWORD_FILE}
  timeout: 50ms
  on_error: ${ON_ERROR}
"""
)
# The store's timeout is 50 ms; without it a request behind a hung store would wait forever. This bound only says
# "answered, and not after waiting on the store", generously (a loaded 2-core machine).
ANSWERED_WITHIN = 2.0
RECOVERY_DEADLINE = 15.0


@pytest.fixture(scope="module")
def store_port() -> int:
    return free_closed_port()


@pytest.fixture(scope="module", params=["allow", "deny"])
def sidecar(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    store_port: int,
    issuer_server: tuple[DemoIssuer, ThreadServer],
    upstream: ThreadServer,
) -> Iterator[SidecarProcess]:
    directory = tmp_path_factory.mktemp("store")
    (directory / "password").write_text(PASSWORD + "\n")  # a mounted Secret's file ends with a newline
    (directory / "policy.yaml").write_text(POLICY.replace("PASSWORD_FILE", str(directory / "password")))
    env = {"ISSUER": issuer_server[1].url, "UPSTREAM": upstream.url, "REDIS_PORT": str(store_port)}
    env["ON_ERROR"] = request.param
    process = SidecarProcess(directory / "policy.yaml", env).start()
    yield process
    assert process.stop() == 0
    assert not [line for line in process.lines if PASSWORD in line or "eyJ" in line]  # never logged


@pytest.fixture()
def healthy(tmp_path: Path, store_port: int) -> Iterator[Callable[[], RedisServer]]:
    """Starts the store the sidecar is configured for (on demand); whatever it started is stopped at the end."""
    with redis_servers(tmp_path, PASSWORD, store_port) as start:
        yield start


def caller(issuer: DemoIssuer, name: str) -> dict[str, str]:
    claims = {"aud": "api://trigger-gateway", "oid": name, "sub": f"{name}-sub"}
    return {"Authorization": f"Bearer {issuer.mint(CONTOSO_TENANT, claims)}"}


def timed_post(client: httpx.Client, headers: dict[str, str]) -> httpx.Response:
    started = time.monotonic()
    answer = client.post("/flows/run", headers=headers)
    assert time.monotonic() - started < ANSWERED_WITHIN
    return answer


def decided_by_on_error(answer: httpx.Response, on_error: str) -> None:
    if on_error == "allow":
        assert answer.status_code == 200  # forwarded: the echo upstream answered
        assert answer.json()["path"] == "/run"
        return
    assert answer.status_code == 503
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["reason"] == "rate_limit_unavailable"
    assert answer.headers.get_list("retry-after") == ["1"]


def wait_recovered(client: httpx.Client, admin: httpx.Client, headers: dict[str, str]) -> None:
    """Requests until the store counts again (the gauge says up, and a request passes with no store error: with
    on_error allow, a pass that met an error was not counted), within a bounded time."""
    deadline = time.monotonic() + RECOVERY_DEADLINE
    while time.monotonic() < deadline:
        errors = total(admin, ERRORS)  # store errors of every kind
        passed = client.post("/flows/run", headers=headers).status_code == 200
        if passed and total(admin, ERRORS) == errors and sample(admin, UP) == 1:
            return
        time.sleep(0.1)  # a poll interval of the condition above; the store is asked again after a second
    raise AssertionError(f"the store was not used again within {RECOVERY_DEADLINE}s")


def counts_again(client: httpx.Client, headers: dict[str, str]) -> None:
    """A new caller's budget is counted in the store again: LIMIT pass, then 429. (A new caller: whether the request
    that found the store back was counted depends on when the store's check ran, and is not what this asserts.)"""
    statuses = [client.post("/flows/run", headers=headers).status_code for _ in range(LIMIT + 1)]
    assert statuses == [200] * LIMIT + [429]


UP = "sidecar_ratelimit_store_up"
ERRORS = "sidecar_ratelimit_store_errors_total"


def on_error(sidecar: SidecarProcess) -> str:
    return str(sidecar.env["ON_ERROR"])


@pytest.fixture()
def clients(sidecar: SidecarProcess) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    with (
        httpx.Client(base_url=sidecar.proxy, timeout=30, trust_env=False) as client,
        httpx.Client(base_url=sidecar.admin, timeout=30, trust_env=False) as admin,
    ):
        yield client, admin


def fault_stopped(_port: int, _directory: Path) -> Callable[[], None]:
    return lambda: None  # nothing listens: connections are refused


def fault_hung(port: int, _directory: Path) -> Callable[[], None]:
    return SilentServer(port).stop


def fault_wrong_password(port: int, directory: Path) -> Callable[[], None]:
    return RedisServer(directory, "another-password", port=port).start().stop


Fault = Callable[[int, Path], Callable[[], None]]
FAULTS: dict[str, tuple[Fault, str]] = {
    "redis-stopped-mid-run": (fault_stopped, "unreachable"),
    "redis-hung": (fault_hung, "timeout"),
    "wrong-password": (fault_wrong_password, "auth"),
}


@pytest.mark.parametrize(("fault", "error"), FAULTS.values(), ids=FAULTS.keys())
def test_a_failing_store_is_decided_by_on_error_within_its_timeout_and_recovers(
    sidecar: SidecarProcess,
    clients: tuple[httpx.Client, httpx.Client],
    healthy: Callable[[], RedisServer],
    store_port: int,
    tmp_path: Path,
    issuer: DemoIssuer,
    fault: Fault,
    error: str,
    request: pytest.FixtureRequest,
) -> None:
    client, admin = clients
    who = caller(issuer, request.node.name)  # a budget of its own
    first = healthy()
    wait_recovered(client, admin, who)  # the store counts (this request spent one slot) ...
    first.stop()  # ... then fails mid-run
    errors_before = sample(admin, ERRORS, error=error)
    refused_before = rejections(admin, "flow", "rate_limit_unavailable")
    end_fault = fault(store_port, tmp_path)
    try:
        # The first request finds the pooled connection closed (unreachable); the store then rests for a second,
        # and the next request meets the fault itself. Every one is decided by on_error meanwhile.
        sent, deadline = 0, time.monotonic() + RECOVERY_DEADLINE
        while sample(admin, ERRORS, error=error) == errors_before:
            assert time.monotonic() < deadline, f"no {error} error counted within {RECOVERY_DEADLINE}s"
            decided_by_on_error(timed_post(client, who), on_error(sidecar))
            sent += 1
            time.sleep(0.1)  # a poll interval of the condition above
        for _ in range(LIMIT + 2):  # past the budget: on_error decides every one of them
            decided_by_on_error(timed_post(client, who), on_error(sidecar))
            sent += 1
        assert sample(admin, UP) == 0
        assert admin.get("/readyz").status_code == 200  # Redis never makes the sidecar unready (no flapping)
        refused = rejections(admin, "flow", "rate_limit_unavailable") - refused_before
        assert refused == (sent if on_error(sidecar) == "deny" else 0)
    finally:
        end_fault()
    healthy()  # Redis is back (empty: no persistence), on the same address: no restart of the sidecar
    wait_recovered(client, admin, who)
    counts_again(client, caller(issuer, f"{request.node.name}-after"))
