"""Each transition of an upstream connection's `State` (upstream/connection.py), against scripted upstreams on real
sockets on 127.0.0.1: the pool and one connection driven as the forwarder drives them, and the forwarder itself where
the client's side matters (cancellation). A connection goes back to the pool only from DONE: the request all
written, its answer whole, keep-alive, and nothing received after it. Each test runs on uvloop and asyncio's loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sidecar.edge.forward import Forwarder
from sidecar.upstream.connection import Connection, State
from sidecar.upstream.pool import Broken, Pool, Response, split_url
from tests.support.h1upstream import (
    Reader,
    Upstream,
    Writer,
    answer,
    call,
    keep_answering,
    read_chunks,
    read_request,
    serving,
)

_DEADLINE = 10.0  # the longest wait for an event; met at once when the rule holds
_HIGH_WATER = 512 * 1024  # upstream/response.py: response bytes waiting for the client before reading pauses
GET = b"GET /x HTTP/1.1\r\nhost: upstream\r\n\r\n"
CHUNKED_PUT = b"PUT /up HTTP/1.1\r\nhost: upstream\r\ntransfer-encoding: chunked\r\n\r\n"


@contextlib.asynccontextmanager
async def a_pool() -> AsyncIterator[Pool]:
    pool = Pool(limit=8, per_host=0, idle_timeout=15.0)
    try:
        yield pool
    finally:
        await pool.close()


async def taken(pool: Pool, url: str) -> Connection:
    origin, _ = split_url(url)
    return await pool.acquire(origin, _DEADLINE)


async def head(response: Response) -> None:
    """Until the answer's head is in (as edge/forward.py waits for it once the request is sent)."""
    while not response.head_done:
        if response.error is not None:
            raise response.error
        await response.wait(_DEADLINE)


async def read_all(response: Response) -> bytes:
    await head(response)
    return b"".join([piece async for piece in pieces(response)])


async def pieces(response: Response) -> AsyncIterator[bytes]:
    while piece := await response.read(_DEADLINE):
        yield piece


async def ended(connection: Connection) -> None:
    await asyncio.wait_for(asyncio.shield(connection.closed), _DEADLINE)


async def got(pool: Pool, url: str, body: bytes) -> Connection:
    """A GET on a pooled connection, its answer read to the end (and checked); the connection not yet released."""
    connection = await taken(pool, url)
    response = connection.start(no_body=False)
    connection.write(GET, end=True)
    assert await read_all(response) == body
    return connection


async def test_a_connection_goes_idle_sending_receiving_done_and_back_to_the_pool_idle() -> None:
    async with serving(keep_answering) as upstream, a_pool() as pool:
        connection = await taken(pool, upstream.url)
        assert connection.state is State.IDLE  # connected, no exchange yet
        response = connection.start(no_body=False)
        assert connection.state is State.SENDING
        connection.write(b"POST /x HTTP/1.1\r\nhost: upstream\r\ncontent-length: 5\r\n\r\nhel")
        assert connection.state is State.SENDING  # more of the request to come
        connection.write(b"lo", end=True)
        assert connection.state is State.RECEIVING
        assert await read_all(response) == b"you sent hello"
        assert connection.state is State.DONE
        pool.release(connection)
        assert connection.state is State.IDLE
        again = await taken(pool, upstream.url)
        assert (again is connection, again.reused) == (True, True)
        again.start(no_body=False)
        again.write(GET, end=True)
        assert await read_all(again.response or Response(again, False)) == b"you sent "
        pool.release(again)
    assert upstream.connections == 1


def test_a_new_connection_is_connecting_until_its_handshake_is_done() -> None:
    loop = asyncio.new_event_loop()
    try:
        origin, _ = split_url("http://127.0.0.1:1/")
        assert Connection(origin, loop, lambda connection: None).state is State.CONNECTING
    finally:
        loop.close()


async def test_an_exchange_is_refused_on_a_connection_that_is_not_idle() -> None:
    """The transitions are a table: an exchange started on a busy connection is a bug, refused loudly."""
    async with serving(keep_answering) as upstream, a_pool() as pool:
        connection = await taken(pool, upstream.url)
        connection.start(no_body=False)
        with pytest.raises(RuntimeError, match="SENDING to SENDING"):
            connection.start(no_body=False)
        connection.write(GET, end=True)
        with pytest.raises(Broken):  # the request is all written: nothing more may follow it
            connection.write(b"more")
        pool.release(connection)


async def test_an_answer_whole_before_the_request_ends_leaves_the_connection_unfit_for_reuse() -> None:
    """An upstream that answers a streamed upload at once (keep-alive) and goes on reading the body: the answer is
    whole while the request is still SENDING, so the connection is not DONE; released so, it is closed and the
    upstream sees the body cut short (the next request would otherwise be read as the rest of the body)."""
    seen_after_answer: list[bytes] = []

    async def answers_early(reader: Reader, writer: Writer, upstream: Upstream) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer(b"early"))
        try:
            async for piece in read_chunks(reader):
                seen_after_answer.append(piece)
        except (asyncio.IncompleteReadError, ConnectionError):
            seen_after_answer.append(b"<closed>")

    async with serving(answers_early) as upstream, a_pool() as pool:
        connection = await taken(pool, upstream.url)
        response = connection.start(no_body=False)
        connection.write(CHUNKED_PUT + b"5\r\nfirst\r\n")
        assert await read_all(response) == b"early"
        assert (response.complete, response.keep_alive, connection.state) == (True, True, State.SENDING)
        pool.release(connection)  # the rest of the body never came (the client's upload failed or was cancelled)
        assert connection.state is State.CLOSED
        assert pool.open_connections <= 1
        await ended(connection)
        assert pool.open_connections == 0
    assert seen_after_answer == [b"first", b"<closed>"]


async def test_an_early_answer_and_then_the_whole_request_is_a_done_exchange() -> None:
    """Full duplex to its end: the answer came first, then the request's last byte was written. Both sides are
    complete, so the connection is DONE and reused (HTTP/1.1 allows it; httpcore's rule: both sides DONE)."""

    bodies: list[bytes] = []

    async def answers_early_then_reads_on(reader: Reader, writer: Writer, upstream: Upstream) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer(b"early"))
        bodies.append(b"".join([piece async for piece in read_chunks(reader)]))
        await keep_answering(reader, writer, upstream)

    async with serving(answers_early_then_reads_on) as upstream, a_pool() as pool:
        connection = await taken(pool, upstream.url)
        response = connection.start(no_body=False)
        connection.write(CHUNKED_PUT + b"5\r\nfirst\r\n")
        assert await read_all(response) == b"early"
        assert connection.state is State.SENDING
        connection.write(b"0\r\n\r\n", end=True)
        assert connection.state is State.DONE
        pool.release(connection)
        assert connection.state is State.IDLE
        again = await taken(pool, upstream.url)
        second = again.start(no_body=False)
        again.write(GET, end=True)
        assert (again is connection, await read_all(second)) == (True, b"you sent ")
        pool.release(again)
    assert (upstream.connections, bodies, upstream.requests) == (1, [b"first"], [b"GET /x HTTP/1.1"])


# The answer, and how the upstream sees the sidecar end the connection: a graceful close (b""), or not checked (None:
# the upstream closes it itself, or the bytes after the answer may come in a later read, which resets it).
ENDS_THE_CONNECTION = {
    "connection-close": (answer(b"bye", b"connection: close"), b""),
    "http-1.0": (b"HTTP/1.0 200 OK\r\ncontent-length: 3\r\n\r\nbye", b""),
    "until-close": (b"HTTP/1.1 200 OK\r\n\r\nbye", None),
    "a-second-answer-in-the-same-read": (answer(b"bye") + answer(b"smuggled"), None),
}


@pytest.mark.parametrize(("wire", "end"), ENDS_THE_CONNECTION.values(), ids=ENDS_THE_CONNECTION.keys())
async def test_an_answer_that_does_not_keep_the_connection_alive_never_makes_it_done(
    wire: bytes, end: bytes | None
) -> None:
    """Whole, but not to be reused: released, the connection is closed gracefully (its answer was complete)."""
    seen: list[bytes] = []

    async def script(reader: Reader, writer: Writer, upstream: Upstream) -> None:
        if await read_request(reader, upstream) is not None:
            writer.write(wire)
            if b"content-length" not in wire:
                return  # the end of the body is the end of the connection
            try:
                seen.append(await reader.read())  # held open: only the sidecar's decision closes it
            except ConnectionResetError:
                seen.append(b"<reset>")

    async with serving(script) as upstream, a_pool() as pool:
        connection = await got(pool, upstream.url, b"bye")
        assert connection.state in (State.RECEIVING, State.CLOSED)  # whole, but not to be reused
        pool.release(connection)
        assert connection.state is State.CLOSED
        await ended(connection)
        assert pool.open_connections == 0
        second = await taken(pool, upstream.url)
        assert second is not connection
        pool.release(second)
    if end is not None:
        assert seen == [end]


async def test_bytes_after_a_done_answer_close_the_connection_before_it_is_released() -> None:
    more = asyncio.Event()

    async def sends_more(reader: Reader, writer: Writer, upstream: Upstream) -> None:
        await read_request(reader, upstream)
        writer.write(answer(b"asked"))
        await more.wait()
        writer.write(answer(b"smuggled"))
        await reader.read()

    async with serving(sends_more) as upstream, a_pool() as pool:
        connection = await got(pool, upstream.url, b"asked")
        assert connection.state is State.DONE
        more.set()
        await ended(connection)
        assert connection.state is State.CLOSED
        pool.release(connection)
        assert pool.open_connections == 0


IDLE_ENDINGS = {
    "bytes-unasked": answer(b"smuggled"),
    "the-upstream-closes": b"",
}


@pytest.mark.parametrize("unasked", IDLE_ENDINGS.values(), ids=IDLE_ENDINGS.keys())
async def test_an_idle_connection_the_upstream_writes_to_or_closes_leaves_the_pool(unasked: bytes) -> None:
    now = asyncio.Event()

    async def script(reader: Reader, writer: Writer, upstream: Upstream) -> None:
        await read_request(reader, upstream)
        writer.write(answer(b"asked"))
        await now.wait()
        if unasked:
            writer.write(unasked)
            await reader.read()

    async with serving(script) as upstream, a_pool() as pool:
        connection = await got(pool, upstream.url, b"asked")
        pool.release(connection)
        assert (connection.state, pool.open_connections) == (State.IDLE, 1)
        now.set()
        await ended(connection)
        assert (connection.state, pool.open_connections) == (State.CLOSED, 0)
        assert not any(pool._idle.values())
        assert not pool._connections  # nothing of it is kept


async def test_an_answer_http_does_not_allow_closes_the_connection_at_once() -> None:
    async def not_http(reader: Reader, writer: Writer, upstream: Upstream) -> None:
        await read_request(reader, upstream)
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n")
        await reader.read()

    async with serving(not_http) as upstream, a_pool() as pool:
        connection = await taken(pool, upstream.url)
        response = connection.start(no_body=False)
        connection.write(GET, end=True)
        with pytest.raises(Broken):
            await head(response)
        assert connection.state is State.CLOSED
        pool.release(connection)
        await ended(connection)
        assert pool.open_connections == 0


async def test_an_answer_that_fills_the_buffer_pauses_reading_and_the_idle_connection_reads_again() -> None:
    """Backpressure: an answer of exactly the high-water mark, not read by the client, pauses reading from the
    upstream at its last byte; whole, the exchange is DONE. Back in the pool the connection must read again, or it
    would never see the upstream close it or send bytes unasked (then reused, it would take them as an answer)."""
    unasked = asyncio.Event()

    async def big_then_unasked(reader: Reader, writer: Writer, upstream: Upstream) -> None:
        await read_request(reader, upstream)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % _HIGH_WATER + b"b" * _HIGH_WATER)
        await unasked.wait()
        writer.write(answer(b"smuggled"))
        await reader.read()

    async with serving(big_then_unasked) as upstream, a_pool() as pool:
        connection = await taken(pool, upstream.url)
        transport = connection._transport
        assert transport is not None
        response = connection.start(no_body=False)
        connection.write(GET, end=True)
        await head(response)
        while not response.complete:  # the client takes nothing
            await response.wait(_DEADLINE)
        assert (connection.state, transport.is_reading()) == (State.DONE, False)
        pool.release(connection)  # the client went away without the body
        assert (connection.state, transport.is_reading()) == (State.IDLE, True)
        unasked.set()
        await ended(connection)
        assert pool.open_connections == 0


def stalled_body(first: bytes) -> tuple[asyncio.Event, Any]:
    """A client body: `first`, then nothing (the client keeps the request open); the event is set once it is taken."""
    taken_first = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if not taken_first.is_set():
            taken_first.set()
            return {"type": "http.request", "body": first, "more_body": True}
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    return taken_first, receive


@pytest.mark.parametrize("when", ["sending", "receiving"])
async def test_an_exchange_cancelled_midway_closes_its_connection(when: str, forwarder: Forwarder) -> None:
    """The gate's task cancelled (the client went away, the server shut down) while the request body is still
    going up, or while the answer is awaited: the connection is closed, never put back, and the next request gets
    a new one."""
    request_read = asyncio.Event()
    after_cancel: list[bytes] = []

    async def reads_then_waits(reader: Reader, writer: Writer, upstream: Upstream) -> None:
        if upstream.connections > 1:
            await keep_answering(reader, writer, upstream)
            return
        await reader.readuntil(b"\r\n\r\n")
        request_read.set()
        try:
            after_cancel.append(await reader.read())
        except ConnectionError:
            after_cancel.append(b"<reset>")

    async def ignored(message: Any) -> None:
        pass

    async with serving(reads_then_waits) as upstream:
        if when == "sending":
            _, receive = stalled_body(b"part")
            exchange = asyncio.ensure_future(
                forwarder.forward("PUT", upstream.url + "/up", [], receive, ignored, 30.0, True, [])
            )
        else:
            exchange = asyncio.ensure_future(call(forwarder, upstream.url + "/slow", timeout=30.0))
        await asyncio.wait_for(request_read.wait(), _DEADLINE)
        (connection,) = forwarder.pool._connections
        assert connection.state is (State.SENDING if when == "sending" else State.RECEIVING)
        exchange.cancel()
        with pytest.raises(asyncio.CancelledError):
            await exchange
        assert connection.state is State.CLOSED
        await ended(connection)
        assert forwarder.pool.open_connections == 0
        forwarded, body = await call(forwarder, upstream.url + "/next")
        assert (forwarded.status, body) == (200, b"you sent ")
    assert after_cancel in ([b""], [b"<reset>"], [b"4\r\npart\r\n"])
    assert upstream.connections == 2


async def test_a_connection_the_upstream_closed_refuses_the_exchange_and_says_why() -> None:
    """A connection lost while idle is CLOSED: an exchange may be started on it (the pool checks just before), but
    writing to it or waiting for it to drain is Broken with words the access log shows as `upstream_error`."""

    async def closes_at_once(reader: Reader, writer: Writer, upstream: Upstream) -> None:
        pass

    async with serving(closes_at_once) as upstream, a_pool() as pool:
        connection = await taken(pool, upstream.url)
        await ended(connection)
        assert (connection.state, pool.open_connections) == (State.CLOSED, 0)
        connection.start(no_body=False)
        assert connection.state is State.CLOSED
        with pytest.raises(Broken, match="^the upstream closed the connection$"):
            connection.write(GET, end=True)
        with pytest.raises(Broken, match="^the upstream closed the connection$"):
            await connection.drain(_DEADLINE)
        pool.release(connection)
        assert pool.open_connections == 0


async def test_a_connection_lost_while_the_request_waits_to_drain_is_broken_at_once() -> None:
    """The upstream stops reading a large request and then drops the connection: the wait for it to drain ends
    with Broken at once (502 `upstream_unreachable`), not after the route's timeout (504)."""
    drop = asyncio.Event()

    async def stops_reading_then_drops(reader: Reader, writer: Writer, upstream: Upstream) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await drop.wait()
        writer.transport.abort()

    async with serving(stops_reading_then_drops) as upstream, a_pool() as pool:
        connection = await taken(pool, upstream.url)
        connection.start(no_body=False)
        connection.write(b"PUT /up HTTP/1.1\r\nhost: upstream\r\ncontent-length: 99999999\r\n\r\n")
        connection.write(b"u" * (16 * 1024 * 1024))  # far over every buffer: writing pauses
        draining = asyncio.ensure_future(connection.drain(60.0))
        drop.set()
        with pytest.raises(Broken):
            await asyncio.wait_for(draining, _DEADLINE)
        assert connection.state is State.CLOSED
        pool.release(connection)
