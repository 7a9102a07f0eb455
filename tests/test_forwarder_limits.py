"""The forwarder's limits against a real upstream on 127.0.0.1: a body past max_body or silent past body_timeout
aborts the upstream request, and the connection pool is bounded (a request waits for a connection at most its
route's timeout, then 504)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from sidecar.decision import Reason, Rejection
from sidecar.metrics import Metrics
from sidecar.policy.load import parse_policy
from sidecar.proxy import Forwarder
from sidecar.runtime import Runtime
from tests.support.recorder import Recorder, Seen
from tests.support.servers import ThreadServer


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


async def test_the_pool_bounds_upstream_connections(upstream: tuple[Recorder, str]) -> None:
    recorder, url = upstream
    forwarder = Forwarder.create(pool_limit=1)
    try:
        held = asyncio.ensure_future(forwarder.forward("GET", url + "/held/pool", [], _body(), _sink, 30.0, False, []))
        await asyncio.to_thread(recorder.wait, lambda seen: any(s.path == "/held/pool" for s in seen))
        with pytest.raises(Rejection) as waited:  # the one connection is busy: no second one is opened
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
