"""Several replicas behave as one: three sidecar processes of two workers each, in front of one upstream, share one
budget per caller through a real Redis (rate_limit_store); without the store each worker process counts on its own,
as docs/operations.md's "Several replicas" says."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from sidecar.demo.issuer import CONTOSO_TENANT, DemoIssuer
from tests.support.redis import RedisServer, flow_policy
from tests.support.servers import SidecarProcess, ThreadServer, served

REQUESTS, LIMIT, WINDOW = 1_000, 100, 60
REPLICAS, WORKERS = 3, 2
POLICY = flow_policy(LIMIT, f"{WINDOW}s")
# The store never fails here: its timeout only has to be long enough that a busy machine (the process suites run
# several at once) never reads a slow answer as a failure (a 503 where the test wants 200 or 429).
STORE = "rate_limit_store: { url: '${REDIS_URL}', timeout: 5s, on_error: deny }\n"


class CountingUpstream:
    """Answers 200 and counts the requests that reached it (from every replica's workers)."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        with self._lock:
            self.count += 1
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})


@contextmanager
def replicas(tmp_path: Path, policy: str, env: dict[str, str]) -> Iterator[list[SidecarProcess]]:
    """REPLICAS sidecar processes with WORKERS workers each, all ready; stopped (by PID) at the end."""
    (tmp_path / "policy.yaml").write_text(policy)
    with ExitStack() as stack:
        started = []
        for _ in range(REPLICAS):
            process = SidecarProcess(tmp_path / "policy.yaml", env, ("--drain-delay", "0", "--workers", str(WORKERS)))
            started.append(process.start(wait_ready=False))
            stack.callback(process.stop)
        for process in started:
            process.wait_for_logs("ready", WORKERS)
        yield started


@dataclass
class Answer:
    status: int
    retry_after: str | None
    sent: float  # time.time() just before sending, and just after the answer
    received: float


def flood(proxies: list[str], token: str) -> list[Answer]:
    """REQUESTS calls from one caller, round-robin over the replicas, six at a time: six kept-alive connections to
    each replica, which the kernel spreads over its workers."""
    headers = {"Authorization": f"Bearer {token}"}
    local = threading.local()
    clients: list[httpx.Client] = []

    def call(n: int) -> Answer:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(timeout=30, trust_env=False)
            clients.append(client)
        sent = time.time()
        answer = client.post(proxies[n % len(proxies)] + "/flows/run", headers=headers)
        return Answer(answer.status_code, answer.headers.get("retry-after"), sent, time.time())

    try:
        with ThreadPoolExecutor(6) as pool:
            return list(pool.map(call, range(REQUESTS)))
    finally:
        for client in clients:
            client.close()


@pytest.fixture()
def counting_upstream() -> Iterator[tuple[CountingUpstream, ThreadServer]]:
    with served(CountingUpstream()) as pair:
        yield pair


def caller_token(issuer: DemoIssuer) -> str:
    claims = {"aud": "api://trigger-gateway", "oid": "one-caller", "sub": "one-caller-sub"}
    return issuer.mint(CONTOSO_TENANT, claims)


def test_three_replicas_of_two_workers_share_one_budget_through_redis(
    tmp_path: Path,
    issuer_server: tuple[DemoIssuer, ThreadServer],
    counting_upstream: tuple[CountingUpstream, ThreadServer],
) -> None:
    redis = RedisServer(tmp_path).start()
    try:
        env = {"ISSUER": issuer_server[1].url, "UPSTREAM": counting_upstream[1].url, "REDIS_URL": redis.url}
        with replicas(tmp_path, POLICY + STORE, env) as processes:
            answers = flood([process.proxy for process in processes], caller_token(issuer_server[0]))
    finally:
        redis.stop()
    allowed = [answer for answer in answers if answer.status == 200]
    refused = [answer for answer in answers if answer.status != 200]
    assert LIMIT <= len(allowed) <= LIMIT + 5, len(allowed)
    assert counting_upstream[0].count == len(allowed)  # only what was allowed reached the upstream
    assert {answer.status for answer in refused} == {429}
    # The first allowed request leaves the window WINDOW seconds after it was counted (between the flood's start
    # and its answer): each 429 says to retry then, in whole seconds rounded up.
    start, first_counted = answers[0].sent, min(answer.received for answer in allowed)
    for answer in refused:
        assert answer.retry_after is not None
        earliest = math.floor(WINDOW - (answer.received - start))
        latest = math.ceil(WINDOW - (answer.sent - first_counted))
        assert earliest <= int(answer.retry_after) <= latest, (answer, earliest, latest)


def test_without_the_store_each_worker_process_counts_on_its_own(
    tmp_path: Path,
    issuer_server: tuple[DemoIssuer, ThreadServer],
    counting_upstream: tuple[CountingUpstream, ThreadServer],
) -> None:
    """docs/operations.md: without rate_limit_store a caller gets up to replicas x workers x requests per window. Each
    replica here takes a third of the calls (more than LIMIT), so each allows at least LIMIT of them."""
    env = {"ISSUER": issuer_server[1].url, "UPSTREAM": counting_upstream[1].url}
    with replicas(tmp_path, POLICY, env) as processes:
        answers = flood([process.proxy for process in processes], caller_token(issuer_server[0]))
    allowed = sum(1 for answer in answers if answer.status == 200)
    assert REPLICAS * LIMIT <= allowed <= REPLICAS * WORKERS * LIMIT
    assert counting_upstream[0].count == allowed
    assert {answer.status for answer in answers} == {200, 429}


def test_a_reload_that_adds_the_store_makes_two_replicas_share_budgets(
    tmp_path: Path,
    issuer_server: tuple[DemoIssuer, ThreadServer],
    counting_upstream: tuple[CountingUpstream, ThreadServer],
) -> None:
    issuer, small = issuer_server[0], POLICY.replace(f"requests: {LIMIT},", "requests: 2,")
    redis = RedisServer(tmp_path).start()
    env = {"ISSUER": issuer_server[1].url, "UPSTREAM": counting_upstream[1].url, "REDIS_URL": redis.url}
    (tmp_path / "policy.yaml").write_text(small)
    args = ("--drain-delay", "0", "--reload-interval", "0.1")
    pair = [SidecarProcess(tmp_path / "policy.yaml", env, args) for _ in range(2)]
    try:
        for process in pair:
            process.start()

        def statuses(who: str) -> list[int]:
            headers = {
                "Authorization": f"Bearer {issuer.mint(CONTOSO_TENANT, {'aud': 'api://trigger-gateway', 'oid': who})}"
            }
            return [httpx.post(p.proxy + "/flows/run", headers=headers, timeout=30).status_code for p in (*pair, *pair)]

        assert statuses("before") == [200, 200, 200, 200]  # each replica: its own budget of 2
        (tmp_path / "policy.yaml").write_text(small + STORE)
        for process in pair:
            process.wait_for_log("policy reloaded")
        assert statuses("after") == [200, 200, 429, 429]  # one budget of 2 for both
    finally:
        for process in pair:
            process.stop()
        redis.stop()
