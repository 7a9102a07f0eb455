"""The three rules that keep one exchange from leaking into the next, against hostile upstreams on real sockets on
127.0.0.1: a connection answered before its request body was all sent is never reused; bytes an idle connection
receives unasked close it; a client that does not read pauses reading from the upstream, so memory stays bounded.
Each test runs on uvloop and on asyncio's own loop."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from typing import Any

import pytest

from sidecar.edge.forward import Forwarder, UpstreamBroken, UpstreamFailure
from sidecar.reasons import Reason
from sidecar.upstream.connection import State
from sidecar.upstream.pool import Connection
from tests.support.h1upstream import (
    Reader,
    Script,
    Upstream,
    Writer,
    answer,
    call,
    keep_answering,
    read_chunks,
    serving,
)

_DEADLINE = 10.0  # the longest wait for a condition; met at once when the rule holds
_HIGH_WATER = 512 * 1024  # h1_response's bound on response bytes waiting for the client


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait (bounded) until `condition` holds, looking again each time the loop has run other work."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _DEADLINE
    while not condition():
        assert loop.time() < deadline, f"not within {_DEADLINE}s: {what}"
        await asyncio.sleep(0.005)


def on_first_connection(script: Script) -> Script:
    """`script` on the first connection; every later one answers each request normally."""

    async def run(reader: Reader, writer: Writer, upstream: Upstream) -> None:
        if upstream.connections > 1:
            await keep_answering(reader, writer, upstream)
        else:
            await script(reader, writer, upstream)

    return run


def _only_connection(forwarder: Forwarder) -> Connection:
    (connection,) = forwarder.pool._connections
    return connection


async def test_a_connection_answered_before_its_body_was_sent_is_never_reused(forwarder: Forwarder) -> None:
    """An upstream that answers a streamed upload at once (keep-alive, no `Connection: close`) is still reading
    the body: put back in the pool, the next request would be read as the rest of that body (desync). The
    connection is closed instead, and the next request goes on a new one."""
    after_answer: list[bytes] = []  # what the first connection read after its early answer, until it ended

    async def answers_early(reader: Reader, writer: Writer, upstream: Upstream) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer(b"early"))
        try:
            async for piece in read_chunks(reader):
                after_answer.append(piece)
        except ValueError:  # not a chunk: another request's bytes, read as this body
            after_answer.append(b"<desync>")
        except (asyncio.IncompleteReadError, ConnectionError):
            after_answer.append(b"<closed>")

    first_piece_taken = asyncio.Event()

    async def stalled_body() -> dict[str, Any]:
        if not first_piece_taken.is_set():
            first_piece_taken.set()
            return {"type": "http.request", "body": b"first piece", "more_body": True}
        await asyncio.Event().wait()  # the rest of the body never comes while the answer is relayed
        raise AssertionError("unreachable")

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async with serving(on_first_connection(answers_early)) as upstream:
        forwarded = await forwarder.forward("PUT", upstream.url + "/up", [], stalled_body, send, 5.0, True, [])
        assert (forwarded.status, b"".join(m.get("body", b"") for m in sent[1:])) == (200, b"early")
        second, body = await call(forwarder, upstream.url + "/next", "POST", [b"2"])
        assert (second.status, body) == (200, b"you sent 2")
        await until(lambda: bool(after_answer), "the first connection ended")
    assert after_answer == [b"first piece", b"<closed>"]
    assert upstream.connections == 2
    assert upstream.requests == [b"POST /next HTTP/1.1"]


async def test_bytes_received_on_an_idle_connection_close_it(forwarder: Forwarder) -> None:
    """An upstream that sends a response nobody asked for while its connection waits in the pool: were it kept, the
    next request on it would take those bytes as its answer. It is closed, and the next request gets its own."""
    stray_sent = asyncio.Event()
    unasked = b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nsmuggled"

    async def sends_unasked(reader: Reader, writer: Writer, upstream: Upstream) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer(b"asked"))
        await stray_sent.wait()
        writer.write(unasked)
        await writer.drain()
        await reader.read()  # until the sidecar closes it

    async with serving(on_first_connection(sends_unasked)) as upstream:
        assert (await call(forwarder, upstream.url + "/one"))[1] == b"asked"
        idle = _only_connection(forwarder)
        assert idle.state is State.IDLE  # in the pool, waiting
        stray_sent.set()
        await asyncio.wait_for(asyncio.shield(idle.closed), _DEADLINE)
        assert forwarder.pool.open_connections == 0
        forwarded, body = await call(forwarder, upstream.url + "/two")
        assert (forwarded.status, body) == (200, b"you sent ")
    assert upstream.connections == 2


async def test_a_client_that_does_not_read_pauses_reading_from_the_upstream(forwarder: Forwarder) -> None:
    """A 32 MiB download to a client that stops reading: the sidecar holds at most its high-water mark (plus one
    read) and stops reading the upstream, so the upstream waits rather than the sidecar's memory growing; once the
    client reads again, the whole body arrives intact."""
    total = 32 * 1024 * 1024
    piece = bytes(range(256)) * 256  # 64 KiB
    written = 0

    async def sends_a_large_body(reader: Reader, writer: Writer, upstream: Upstream) -> None:
        nonlocal written
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % total)
        while written < total:
            writer.write(piece)
            written += len(piece)
            await writer.drain()

    reading = asyncio.Event()
    received = hashlib.sha256()
    size = 0

    async def slow_client(message: dict[str, Any]) -> None:
        nonlocal size
        if message["type"] == "http.response.body":
            await reading.wait()  # the client reads nothing until the test lets it
            received.update(message["body"])
            size += len(message["body"])

    async def never_disconnects() -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async with serving(sends_a_large_body) as upstream:
        exchange = asyncio.ensure_future(
            forwarder.forward("GET", upstream.url + "/big", [], never_disconnects, slow_client, 30.0, False, [])
        )
        await until(lambda: len(forwarder.pool._connections) == 1, "connected")
        connection = _only_connection(forwarder)
        transport = connection._transport
        assert transport is not None
        await until(lambda: not transport.is_reading() or written >= total, "reading paused")
        response = connection.response
        assert response is not None
        assert not transport.is_reading(), "the upstream was read to its end for a client that reads nothing"
        assert _HIGH_WATER <= response._buffered <= 2 * _HIGH_WATER  # what waits in the sidecar: bounded
        assert written < total  # the upstream is held back
        reading.set()
        forwarded = await asyncio.wait_for(exchange, 30.0)
    assert (forwarded.status, forwarded.bytes_out, size) == (200, total, total)
    expected = hashlib.sha256()
    for _ in range(total // len(piece)):
        expected.update(piece)
    assert received.digest() == expected.digest()


async def test_an_upstream_that_stops_reading_a_body_holds_the_client_back_then_times_out(
    forwarder: Forwarder,
) -> None:
    """A 64 MiB upload to an upstream that reads the head and then nothing: the sidecar takes from the client only
    what the socket buffers hold (it waits for the upstream to drain, never buffers the rest), and after `timeout`
    of no progress it gives up with 504."""
    piece = b"u" * (1024 * 1024)
    offered = 64
    taken = 0
    stop = asyncio.Event()

    async def stops_reading(reader: Reader, writer: Writer, upstream: Upstream) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await stop.wait()

    async def large_body() -> dict[str, Any]:
        nonlocal taken
        taken += 1
        return {"type": "http.request", "body": piece, "more_body": taken < offered}

    async def send(message: dict[str, Any]) -> None:
        raise AssertionError("no answer was expected")

    async with serving(stops_reading) as upstream:
        try:
            with pytest.raises(UpstreamFailure) as refused:
                await forwarder.forward("PUT", upstream.url + "/up", [], large_body, send, 1.0, True, [])
        finally:
            stop.set()
    assert refused.value.reason is Reason.UPSTREAM_TIMEOUT
    assert taken <= offered // 2  # at most the socket buffers' worth: the rest stayed with the client


async def test_an_upstream_silent_before_its_answer_is_a_504_after_the_timeout(forwarder: Forwarder) -> None:
    silent = asyncio.Event()

    async def never_answers(reader: Reader, writer: Writer, upstream: Upstream) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await silent.wait()

    async with serving(never_answers) as upstream:
        try:
            with pytest.raises(UpstreamFailure) as refused:
                await call(forwarder, upstream.url + "/slow", timeout=0.5)
        finally:
            silent.set()
    assert refused.value.reason is Reason.UPSTREAM_TIMEOUT


async def test_an_upstream_silent_mid_body_breaks_the_exchange_after_the_timeout(forwarder: Forwarder) -> None:
    silent = asyncio.Event()

    async def stops_mid_body(reader: Reader, writer: Writer, upstream: Upstream) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf.")
        await silent.wait()

    async with serving(stops_mid_body) as upstream:
        try:
            with pytest.raises(UpstreamBroken):
                await call(forwarder, upstream.url + "/slow", timeout=0.5)
        finally:
            silent.set()
