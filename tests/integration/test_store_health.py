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
from tests.support.redis import RedisServer, flow_policy
from tests.support.servers import SidecarProcess, ThreadServer, free_closed_port

PASSWORD = "store-password-5e7a"
POLICY = (
    flow_policy(3, "1h")
    + """\
rate_limit_store:
  url: redis://127.0.0.1:${REDIS_PORT}/0
  password: ${file:PASSWORD_FILE}
  timeout: 200ms
  on_error: allow
"""
)
UP = "sidecar_ratelimit_store_up"
# Checks run every 5 s in each worker (sidecar.sharedstore.CHECK_INTERVAL): a change shows within one interval and
# a timeout; this deadline is generous for a loaded 2-core machine.
DEADLINE = 30.0


def write_policy(directory: Path, port: int) -> Path:
    (directory / "password").write_text(PASSWORD + "\n")
    policy = POLICY.replace("PASSWORD_FILE", str(directory / "password")).replace("${REDIS_PORT}", str(port))
    (directory / "policy.yaml").write_text(policy)
    return directory / "policy.yaml"


def start_sidecar(
    directory: Path, port: int, issuer: ThreadServer, upstream: ThreadServer, workers: int = 2
) -> SidecarProcess:
    env = {"ISSUER": issuer.url, "UPSTREAM": upstream.url}
    args = ("--drain-delay", "0", "--workers", str(workers))
    return SidecarProcess(write_policy(directory, port), env, args=args).start()


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
def redis_servers(tmp_path: Path, store_port: int) -> Iterator[Callable[[], RedisServer]]:
    servers: list[RedisServer] = []

    def start() -> RedisServer:
        servers.append(RedisServer(tmp_path, PASSWORD, port=store_port).start())
        return servers[-1]

    yield start
    for server in servers:
        if server.running:
            server.send_signal(signal.SIGCONT)  # a hung server ends only once it runs again
        server.stop()


def test_the_gauge_follows_redis_hung_and_stopped_without_traffic(
    tmp_path: Path,
    store_port: int,
    redis_servers: Callable[[], RedisServer],
    issuer_server: tuple[DemoIssuer, ThreadServer],
    upstream: ThreadServer,
) -> None:
    redis = redis_servers()
    sidecar = start_sidecar(tmp_path, store_port, issuer_server[1], upstream)
    try:
        with httpx.Client(base_url=sidecar.admin, timeout=30, trust_env=False) as admin:
            wait_gauge(admin, 1)
            redis.send_signal(signal.SIGSTOP)  # hung: connections open, no answer
            wait_gauge(admin, 0)
            warning = sidecar.wait_for_log("rate-limit store failing", error="timeout")
            assert warning["store"] == f"127.0.0.1:{store_port}"  # where, never the URL's credentials
            redis.send_signal(signal.SIGCONT)
            wait_gauge(admin, 1)  # every worker answered again, although none served a request
            sidecar.wait_for_log("rate-limit store answers again", store=f"127.0.0.1:{store_port}")
            failing = log_count(sidecar, "rate-limit store failing")
            assert 1 <= failing <= 2  # one per worker and change, not one per check

            redis.stop()  # stopped, then started again on the same address
            wait_gauge(admin, 0)
            sidecar.wait_for_log("rate-limit store failing", error="unreachable")
            redis_servers()
            wait_gauge(admin, 1)
    finally:
        assert sidecar.stop() == 0


def test_a_store_down_at_start_reads_0_before_any_request(
    tmp_path: Path,
    store_port: int,
    issuer_server: tuple[DemoIssuer, ThreadServer],
    upstream: ThreadServer,
) -> None:
    sidecar = start_sidecar(tmp_path, store_port, issuer_server[1], upstream)  # nothing listens on store_port
    try:
        with httpx.Client(base_url=sidecar.admin, timeout=30, trust_env=False) as admin:
            wait_gauge(admin, 0)
            assert admin.get("/readyz").status_code == 200  # Redis never makes the sidecar unready
        warnings = sidecar.wait_for_logs("rate-limit store failing", count=2)  # one per worker (maybe before "ready")
        assert [(w["error"], w["store"]) for w in warnings] == [("unreachable", f"127.0.0.1:{store_port}")] * 2
    finally:
        assert sidecar.stop() == 0


def test_a_reload_to_another_store_reads_that_stores_health_at_once(
    tmp_path: Path,
    store_port: int,
    redis_servers: Callable[[], RedisServer],
    issuer_server: tuple[DemoIssuer, ThreadServer],
    upstream: ThreadServer,
) -> None:
    """The gauge read 0 for a store that is down; a reload to a store that answers reads 1 without a request."""
    down = free_closed_port()
    sidecar = start_sidecar(tmp_path, down, issuer_server[1], upstream, workers=1)
    try:
        with httpx.Client(base_url=sidecar.admin, timeout=30, trust_env=False) as admin:
            wait_gauge(admin, 0)
            redis_servers()  # on store_port
            write_policy(tmp_path, store_port)
            sidecar.send_signal(signal.SIGHUP)
            sidecar.wait_for_log("policy reloaded")
            wait_gauge(admin, 1)
    finally:
        assert sidecar.stop() == 0
