"""The admin app as an ASGI callable: /readyz in each state a probe can find the sidecar in, and its imports; the
admin listener's limits against the proxy's."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from types import SimpleNamespace
from typing import cast

import pytest

from sidecar.edge.asgi import Message
from sidecar.edge.runtime import Runtime
from sidecar.ops.admin import METRICS_MAX_WAIT, AdminApp, Pacer, admin_app
from sidecar.ops.admin_guard import ADMIN_LIMITS, AdminGuard
from sidecar.policy.limits import ServerLimits

TEXT = (b"content-type", b"text/plain; charset=utf-8")


@dataclass
class _Runtime:
    draining: bool
    keys_in: bool

    def ready(self) -> bool:
        return not self.draining and self.keys_in


async def _call(runtime: _Runtime, method: str, path: str) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    app = admin_app(runtime, lambda: (b"", "text/plain"))
    await app({"type": "http", "method": method, "path": path, "headers": []}, receive, send)
    return sent


READINESS = {
    "ready": (False, True, 200, b"ready\n"),
    "keys-not-fetched-yet": (False, False, 503, b"not ready: provider keys not fetched yet\n"),
    "draining": (True, True, 503, b"not ready: draining\n"),
    "draining-before-keys": (True, False, 503, b"not ready: draining\n"),
}


@pytest.mark.parametrize(("draining", "keys_in", "status", "body"), list(READINESS.values()), ids=list(READINESS))
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_readyz_says_why_it_is_not_ready(draining: bool, keys_in: bool, status: int, body: bytes, method: str) -> None:
    start, end = asyncio.run(_call(_Runtime(draining, keys_in), method, "/readyz"))
    assert start["status"] == status
    assert sorted(start["headers"]) == [(b"content-length", str(len(body)).encode()), TEXT]
    assert end == {"type": "http.response.body", "body": body if method == "GET" else b"", "more_body": False}


def test_healthz_stays_up_while_draining() -> None:
    start, end = asyncio.run(_call(_Runtime(draining=True, keys_in=False), "GET", "/healthz"))
    assert (start["status"], end["body"]) == (200, b"ok\n")


def test_lifespan_is_answered() -> None:
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    app = admin_app(_Runtime(False, True), lambda: (b"", "text/plain"))
    asyncio.run(app({"type": "lifespan"}, receive, send))
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


def _admin_limits(proxy: ServerLimits) -> ServerLimits:
    policy = SimpleNamespace(limits=proxy, realm="r")
    runtime = SimpleNamespace(current=SimpleNamespace(policy=policy))
    return AdminGuard(cast(Runtime, runtime)).limits


ADMIN_LIMITS_CASES = {
    "proxy-defaults": (ServerLimits(), ADMIN_LIMITS),
    "proxy-stricter-on-some": (
        ServerLimits(max_header_bytes=4096, max_headers=100, header_timeout=1.0, body_timeout=30.0),
        ServerLimits(max_header_bytes=4096, max_headers=32, header_timeout=1.0, body_timeout=5.0),
    ),
}


@pytest.mark.parametrize(("proxy", "admin"), ADMIN_LIMITS_CASES.values(), ids=ADMIN_LIMITS_CASES.keys())
def test_the_admin_listener_takes_the_stricter_of_its_limits_and_the_proxys(
    proxy: ServerLimits, admin: ServerLimits
) -> None:
    assert _admin_limits(proxy) == admin
    assert ADMIN_LIMITS == ServerLimits(max_header_bytes=8192, max_headers=32, header_timeout=5.0, body_timeout=5.0)


def test_the_pacer_lets_a_burst_through_then_spaces_calls_at_the_rate() -> None:
    now = [100.0]
    pacer = Pacer(10.0, 10, clock=lambda: now[0])
    assert [round(pacer.wait() or 0.0, 6) for _ in range(12)] == [0.0] * 10 + [0.1, 0.2]
    now[0] += 1.2  # the two waiting calls have gone ahead; the budget refills from then on
    assert [round(pacer.wait() or 0.0, 6) for _ in range(11)] == [0.0] * 10 + [0.1]


def test_the_pacer_refuses_a_wait_past_its_bound_without_taking_a_turn() -> None:
    pacer = Pacer(10.0, 1, clock=lambda: 0.0)
    waits = [pacer.wait(0.25) for _ in range(5)]
    assert [None if wait is None else round(wait, 6) for wait in waits] == [0.0, 0.1, 0.2, None, None]
    pacer.give_back()  # the 0.2 s turn, unused
    assert round(pacer.wait(0.25) or 0.0, 6) == 0.2


async def test_a_scrape_whose_client_leaves_while_it_waits_is_dropped_and_gives_its_turn_back() -> None:
    pacer = Pacer(10.0, 1, clock=lambda: 0.0)
    counted: list[str] = []
    app = AdminApp(_Runtime(False, True), lambda: (b"m 1\n", "text/plain"), pacer, counted.append)
    incoming = [{"type": "http.request", "body": b"", "more_body": False}, {"type": "http.disconnect"}]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0) if incoming else await asyncio.Future()  # nothing more after the disconnect

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/metrics", "headers": [], "client": ("127.0.0.1", 1)}
    await app(scope, receive, send)
    assert [m["status"] for m in sent if "status" in m] == [200]  # the burst
    await app(scope, receive, send)  # waits 0.1 s, but its client left at once: nothing sent, nothing counted
    assert len(sent) == 2 and counted == []
    assert pacer.wait() == pytest.approx(0.1)  # the dropped scrape's turn was given back


async def test_a_scrape_past_the_waiting_bound_is_503_metrics_busy_with_retry_after() -> None:
    pacer = Pacer(10.0, 1, clock=lambda: 0.0)
    counted: list[str] = []
    app = AdminApp(_Runtime(False, True), lambda: (b"m 1\n", "text/plain"), pacer, counted.append)
    while pacer.wait(METRICS_MAX_WAIT) is not None:  # every turn within the bound taken
        pass
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    await app({"type": "http", "method": "GET", "path": "/metrics", "headers": []}, receive, send)
    start, end = sent
    assert start["status"] == 503
    headers = start["headers"]
    assert [value for name, value in headers if name == b"retry-after"] == [b"1"]
    assert [value for name, value in headers if name == b"content-type"] == [b"application/problem+json"]
    assert [value for name, value in headers if name == b"content-length"] == [str(len(end["body"])).encode()]
    assert json.loads(end["body"])["reason"] == "metrics_busy"
    assert counted == ["metrics_busy"]
