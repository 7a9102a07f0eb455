"""sidecar_ratelimit_store_up tells the store's health of every worker, also without traffic: each worker checks
the store in the background, so the gauge (the lowest of all workers) drops when Redis hangs or stops and comes
back to 1 when Redis is back, with one log line per worker and change (never the password), and a store that is
down at start reads 0 before any request."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from sidecar.demo.issuer import DemoIssuer
from tests.support.metrics import sample
from tests.support.redis import RedisServer, flow_policy, redis_servers
from tests.support.servers import SidecarProcess, ThreadServer, free_closed_port

PASSWORD = "store-password-5e7a"
POLICY = (
    flow_policy(3, "1h")
    + """\
rate_limit_store:
  url: redis://127.0.0.1:${REDIS_PORT}/0
  password: ${file:PASSWORD_FILE}
  timeout: 2s
  on_error: allow
"""
)
UP = "sidecar_ratelimit_store_up"
# Checks run every 5 s in each worker (redis_store.CHECK_INTERVAL): a change shows within one interval and
# a timeout; this deadline is generous for a loaded 2-core machine. The store's timeout (2 s, not 200 ms) finds the hung
# store well within it, tells "timeout" from "unreachable" (a worker whose loop a loaded machine held up longer than
# it at start took a refused connection for a timeout), and no healthy store's answer on a busy machine takes it.
DEADLINE = 30.0


def write_policy(directory: Path, port: int) -> Path:
    (directory / "password").write_text(PASSWORD + "\n")
    policy = POLICY.replace("PASSWORD_FILE", str(directory / "password")).replace("${REDIS_PORT}", str(port))
    (directory / "policy.yaml").write_text(policy)
    return directory / "policy.yaml"


def wait_gauge(admin: httpx.Client, wanted: float) -> None:
    """Polls /metrics (no request goes to the proxy) until the gauge reads `wanted`, within DEADLINE."""
    deadline = time.monotonic() + DEADLINE
    while sample(admin, UP) != wanted:
        assert time.monotonic() < deadline, f"{UP} did not read {wanted} within {DEADLINE}s without traffic"
        time.sleep(0.2)  # a poll interval of the condition above


def log_count(process: SidecarProcess, message: str) -> int:
    return sum(1 for line in process.lines if f'"{message}"' in line)


@pytest.fixture()
def store_port() -> int:
    return free_closed_port()


@pytest.fixture()
def redis(tmp_path: Path, store_port: int) -> Iterator[Callable[[], RedisServer]]:
    with redis_servers(tmp_path, PASSWORD, store_port) as start:
        yield start


Launch = Callable[[int, int], tuple[SidecarProcess, httpx.Client]]


@pytest.fixture()
def launch(tmp_path: Path, issuer_server: tuple[DemoIssuer, ThreadServer], upstream: ThreadServer) -> Iterator[Launch]:
    """Starts a sidecar counting in the Redis on a port, with some workers; its admin client. Both end at the end."""
    started: list[tuple[SidecarProcess, httpx.Client]] = []

    def start(port: int, workers: int) -> tuple[SidecarProcess, httpx.Client]:
        env = {"ISSUER": issuer_server[1].url, "UPSTREAM": upstream.url}
        args = ("--drain-delay", "0", "--workers", str(workers))
        sidecar = SidecarProcess(write_policy(tmp_path, port), env, args=args).start()
        started.append((sidecar, httpx.Client(base_url=sidecar.admin, timeout=30, trust_env=False)))
        return started[-1]

    yield start
    for sidecar, admin in started:
        admin.close()
        assert sidecar.stop() == 0


def test_the_gauge_follows_redis_hung_and_stopped_without_traffic(
    store_port: int, redis: Callable[[], RedisServer], launch: Launch
) -> None:
    server = redis()
    sidecar, admin = launch(store_port, 2)
    wait_gauge(admin, 1)
    server.send_signal(signal.SIGSTOP)  # hung: connections open, no answer
    wait_gauge(admin, 0)
    warning = sidecar.wait_for_log("rate-limit store failing", error="timeout")
    assert warning["store"] == f"127.0.0.1:{store_port}"  # where, never the URL's credentials
    server.send_signal(signal.SIGCONT)
    wait_gauge(admin, 1)  # every worker answered again, although none served a request
    sidecar.wait_for_log("rate-limit store answers again", store=f"127.0.0.1:{store_port}")
    assert 1 <= log_count(sidecar, "rate-limit store failing") <= 2  # one per worker and change, not per check

    # Killed, then started again on the same address: its port refuses at once. (Stopped with SIGTERM, a Redis that
    # a loaded machine kept from finishing its shutdown for longer than the store's timeout still held a PING
    # unanswered: "timeout", not "unreachable".)
    server.send_signal(signal.SIGKILL)
    server.stop()
    wait_gauge(admin, 0)
    sidecar.wait_for_log("rate-limit store failing", error="unreachable")
    redis()
    wait_gauge(admin, 1)


def test_a_store_down_at_start_reads_0_before_any_request(store_port: int, launch: Launch) -> None:
    sidecar, admin = launch(store_port, 2)  # nothing listens on store_port
    wait_gauge(admin, 0)
    assert admin.get("/readyz").status_code == 200  # Redis never makes the sidecar unready
    warnings = sidecar.wait_for_logs("rate-limit store failing", count=2)  # one per worker (maybe before "ready")
    assert [(w["error"], w["store"]) for w in warnings] == [("unreachable", f"127.0.0.1:{store_port}")] * 2


def test_a_reload_to_another_store_reads_that_stores_health_at_once(
    tmp_path: Path, store_port: int, redis: Callable[[], RedisServer], launch: Launch
) -> None:
    """The gauge read 0 for a store that is down; a reload to a store that answers reads 1 without a request."""
    sidecar, admin = launch(free_closed_port(), 1)
    wait_gauge(admin, 0)
    redis()  # on store_port
    write_policy(tmp_path, store_port)
    sidecar.send_signal(signal.SIGHUP)
    sidecar.wait_for_log("policy reloaded")
    wait_gauge(admin, 1)
