"""The forwarder's limits against a real upstream on 127.0.0.1: a body past max_body or silent past body_timeout
aborts the upstream request, and the connection pool is bounded (a request waits for a connection at most its
route's timeout, then 504)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from sidecar.edge.forward import Forwarder, UpstreamFailure
from sidecar.edge.runtime import Runtime
from sidecar.observe.metrics import Metrics
from sidecar.policy.limits import ServerLimits
from sidecar.policy.load import parse_policy
from sidecar.reasons import Reason, Rejection
from tests.support.recorder import Recorder, Seen
from tests.support.servers import ThreadServer, free_closed_port


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[Recorder, str]]:
    recorder = Recorder()
    server = ThreadServer(lambda _url: recorder)
    yield recorder, server.url
    recorder.release()
    server.stop()


def _body(*chunks: bytes, stall: bool = False) -> Any:
    """An ASGI receive: these chunks, then the end of the body, or (stall) nothing ever again."""
    pending = list(chunks)

    async def receive() -> dict[str, Any]:
        if pending:
            return {"type": "http.request", "body": pending.pop(0), "more_body": True}
        if stall:
            await asyncio.Event().wait()
        return {"type": "http.request", "body": b"", "more_body": False}

    return receive


async def _sink(message: Any) -> None:
    pass


async def _finished(recorder: Recorder, path: str) -> Seen:
    seen = await asyncio.to_thread(
        recorder.wait, lambda all_: any(s.path == path and s.outcome != "receiving" for s in all_)
    )
    return next(s for s in seen if s.path == path)


@pytest.mark.parametrize(
    ("receive", "limits", "reason"),
    [
        # A new receive for each run: the same test may run again in one process (make mutate).
        (lambda: _body(b"a" * 600, b"b" * 600, b"c" * 600), {"max_body": 1024}, Reason.BODY_TOO_LARGE),
        (lambda: _body(b"a" * 10, stall=True), {"body_timeout": 0.2}, Reason.BODY_TIMEOUT),
    ],
    ids=["over-max-body", "stalled"],
)
async def test_a_refused_body_aborts_the_upstream_request(
    receive: Any, limits: dict[str, Any], reason: Reason, upstream: tuple[Recorder, str], request: pytest.FixtureRequest
) -> None:
    recorder, url = upstream
    path = "/small/" + request.node.callspec.id
    forwarder = Forwarder.create()
    try:
        with pytest.raises(Rejection) as refused:
            await forwarder.forward("POST", url + path, [], receive(), _sink, 5.0, True, [], **limits)
    finally:
        await forwarder.close()
    assert refused.value.reason is reason
    seen = await _finished(recorder, path)
    assert seen.outcome == "aborted" and not seen.answered
    assert seen.body_bytes <= 1024


def _paced(piece: bytes, interval: float, count: int | None = None) -> Any:
    """An ASGI receive for a client that sends `piece` every `interval` seconds (`count` times, or without end):
    the pace is the subject of the test, not a synchronisation."""
    sent = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if count is not None and sent >= count:
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.sleep(interval)
        sent += 1
        return {"type": "http.request", "body": piece, "more_body": True}

    return receive


async def test_a_body_below_the_minimum_rate_aborts_the_upstream_request(upstream: tuple[Recorder, str]) -> None:
    """One byte every 50 ms (20 bytes/s) never stalls for body_timeout, but averages far below 1000 bytes/s: cut
    after the 0.3 s grace, as a stalled body is."""
    recorder, url = upstream
    forwarder = Forwarder.create()
    forwarder.apply(ServerLimits(min_body_rate=1000, min_body_rate_grace=0.3))
    try:
        with pytest.raises(Rejection) as refused:
            await forwarder.forward("POST", url + "/small/trickled", [], _paced(b"x", 0.05), _sink, 5.0, True, [])
    finally:
        await forwarder.close()
    assert refused.value.reason is Reason.BODY_TIMEOUT
    seen = await _finished(recorder, "/small/trickled")
    assert seen.outcome == "aborted" and not seen.answered


@pytest.mark.parametrize(
    ("piece", "rate", "path"),
    [(b"y" * 1000, 1000, "/small/steady"), (b"x", 0, "/small/no-minimum")],
    ids=["above-the-minimum", "minimum-off"],
)
async def test_a_body_at_a_fine_rate_or_without_a_minimum_is_never_cut(
    piece: bytes, rate: int, path: str, upstream: tuple[Recorder, str]
) -> None:
    """20 pieces 50 ms apart (1 s, over three times the grace): 20 kB/s against 1000 bytes/s, or a trickle with
    `min_body_rate: 0`, arrives whole."""
    recorder, url = upstream
    forwarder = Forwarder.create()
    forwarder.apply(ServerLimits(min_body_rate=rate, min_body_rate_grace=0.3))
    try:
        forwarded = await forwarder.forward("POST", url + path, [], _paced(piece, 0.05, 20), _sink, 5.0, True, [])
    finally:
        await forwarder.close()
    assert (forwarded.status, forwarded.bytes_in) == (200, len(piece) * 20)
    seen = await _finished(recorder, path)
    assert (seen.outcome, seen.body_bytes) == ("complete", len(piece) * 20)


async def test_the_pool_bounds_upstream_connections(upstream: tuple[Recorder, str]) -> None:
    recorder, url = upstream
    forwarder = Forwarder.create(pool_limit=1)
    try:
        held = asyncio.ensure_future(forwarder.forward("GET", url + "/held/pool", [], _body(), _sink, 30.0, False, []))
        await asyncio.to_thread(recorder.wait, lambda seen: any(s.path == "/held/pool" for s in seen))
        with pytest.raises(UpstreamFailure) as waited:  # the one connection is busy: no second one is opened
            await forwarder.forward("GET", url + "/small/pool", [], _body(), _sink, 0.3, False, [])
        assert waited.value.reason is Reason.UPSTREAM_TIMEOUT
        assert recorder.at("/small/pool") == []
        recorder.release()
        assert (await held).status == 200
    finally:
        recorder.release()
        await forwarder.close()


async def test_the_pool_is_sized_by_the_policy() -> None:
    text = (
        "version: 1\nupstream_pool: {max_connections: 7, max_per_host: 3, idle_timeout: 4s}\n"
        "routes: [{name: a, match: {path: /a}, upstream: 'http://127.0.0.1:1/a', allow: anyone}]\n"
    )
    runtime = Runtime.create(parse_policy(text, "p.yaml", {}), "hash", Metrics(CollectorRegistry()))
    try:
        pool = runtime.forwarder.pool
        assert (pool.limit, pool.per_host, pool.idle_timeout) == (7, 3, 4.0)
    finally:
        await runtime.close()


async def test_a_reload_resizes_the_pool() -> None:
    head = "version: 1\nroutes: [{name: a, match: {path: /a}, upstream: 'http://127.0.0.1:1/a', allow: anyone}]\n"
    runtime = Runtime.create(parse_policy(head, "p.yaml", {}), "one", Metrics(CollectorRegistry()))
    try:
        bigger = "upstream_pool: {max_connections: 9, max_per_host: 4, idle_timeout: 2s}\n"
        await runtime.swap(parse_policy(head + bigger, "p.yaml", {}), "two")
        pool = runtime.forwarder.pool
        assert (pool.limit, pool.per_host, pool.idle_timeout) == (9, 4, 2.0)
    finally:
        await runtime.close()


async def test_the_minimum_body_rate_follows_the_policy_and_its_reloads() -> None:
    head = "version: 1\nroutes: [{name: a, match: {path: /a}, upstream: 'http://127.0.0.1:1/a', allow: anyone}]\n"
    runtime = Runtime.create(parse_policy(head, "p.yaml", {}), "one", Metrics(CollectorRegistry()))
    try:
        limits = runtime.forwarder.limits
        assert (limits.min_body_rate, limits.min_body_rate_grace) == (240, 5.0)
        faster = "limits: {min_body_rate: 4KiB, min_body_rate_grace: 2s}\n"
        await runtime.swap(parse_policy(head + faster, "p.yaml", {}), "two")
        limits = runtime.forwarder.limits
        assert (limits.min_body_rate, limits.min_body_rate_grace) == (4096, 2.0)
    finally:
        await runtime.close()


async def test_a_route_holds_at_most_its_share_of_the_pool(upstream: tuple[Recorder, str]) -> None:
    """One route's exchanges hold at most `per_route` connections; past it a request of that route waits for one
    of them within its timeout (then 503 pool_share_full, never reaching the upstream), while other routes go on."""
    recorder, url = upstream
    forwarder = Forwarder.create(pool_limit=4, per_route=1)
    try:
        held = asyncio.ensure_future(
            forwarder.forward("GET", url + "/held/share", [], _body(), _sink, 30.0, False, [], route="a")
        )
        await asyncio.to_thread(recorder.wait, lambda seen: any(s.path == "/held/share" for s in seen))
        other = await forwarder.forward(
            "GET", url + "/small/other-route", [], _body(), _sink, 5.0, False, [], route="b"
        )
        assert other.status == 200
        with pytest.raises(Rejection) as waited:
            await forwarder.forward("GET", url + "/small/share-full", [], _body(), _sink, 0.3, False, [], route="a")
        assert waited.value.reason is Reason.POOL_SHARE_FULL
        assert recorder.at("/small/share-full") == []
        waiting = asyncio.ensure_future(
            forwarder.forward("GET", url + "/small/share-next", [], _body(), _sink, 30.0, False, [], route="a")
        )
        recorder.release()  # the held exchange ends: its connection goes to the request waiting for it
        assert [(await held).status, (await waiting).status] == [200, 200]
    finally:
        recorder.release()
        await forwarder.close()


async def test_a_failed_connect_gives_the_share_back() -> None:
    """Every way an exchange ends returns its connection to the route's share: here, the upstream refusing it."""
    forwarder = Forwarder.create(pool_limit=4, per_route=1)
    url = f"http://127.0.0.1:{free_closed_port()}/dead"
    try:
        for _ in range(3):
            with pytest.raises(UpstreamFailure) as refused:
                await forwarder.forward("GET", url, [], _body(), _sink, 5.0, False, [], route="a")
            assert refused.value.reason is Reason.UPSTREAM_UNREACHABLE  # never pool_share_full
    finally:
        await forwarder.close()


SHARES = {
    "default-pool": ("", 128),
    "small-pool": ("upstream_pool: {max_connections: 8}\n", 4),
    "pool-of-one": ("upstream_pool: {max_connections: 1}\n", 1),
    "set": ("upstream_pool: {max_connections: 8, max_per_route: 8}\n", 8),
}


@pytest.mark.parametrize(("pool", "share"), SHARES.values(), ids=SHARES.keys())
async def test_the_route_share_is_half_the_pool_unless_set(pool: str, share: int) -> None:
    head = "version: 1\nroutes: [{name: a, match: {path: /a}, upstream: 'http://127.0.0.1:1/a', allow: anyone}]\n"
    runtime = Runtime.create(parse_policy(head + pool, "p.yaml", {}), "hash", Metrics(CollectorRegistry()))
    try:
        assert runtime.forwarder.pool.per_share == share
        await runtime.swap(parse_policy(head + "upstream_pool: {max_connections: 6}\n", "p.yaml", {}), "two")
        assert runtime.forwarder.pool.per_share == 3  # a reload resizes the share with the pool
    finally:
        await runtime.close()
