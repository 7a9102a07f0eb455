"""How the pool lets go of connections (upstream/pool.py, upstream/connection.py), against scripted upstreams on real
sockets on 127.0.0.1: a connection closed after a complete answer is closed gracefully (what was written of the
request still reaches the upstream), shutdown waits for the connections still in use, and a connection that waited
for the upstream to read (`drain`) still gives its place back when it is lost. Each test runs on uvloop and asyncio's
loop. These are the behaviours mutation testing found unchecked (MUTATION.md)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from sidecar.edge.forward import Forwarder
from sidecar.upstream.connection import State
from sidecar.upstream.pool import Pool, Response, split_url
from tests.support.h1upstream import Reader, Upstream, Writer, answer, call, read_request, serving

_DEADLINE = 10.0  # the longest wait for an event; met at once when the rule holds
# Far more than loopback's socket buffers hold (about 4 MiB on both ends): most of it waits in the client's own
# buffer (asyncio's or uvloop's) while the upstream does not read.
_LARGE = 16 * 1024 * 1024


async def read_all(response: Response) -> bytes:
    while not response.head_done:
        if response.error is not None:
            raise response.error
        await response.wait(_DEADLINE)
    return b"".join([piece async for piece in _pieces(response)])


async def _pieces(response: Response) -> AsyncIterator[bytes]:
    while piece := await response.read(_DEADLINE):
        yield piece


async def test_an_upload_answered_with_connection_close_before_it_was_read_still_reaches_the_upstream() -> None:
    """An upstream that answers a POST from its head (`connection: close`) and reads the body afterwards, as servers
    that answer early and then drain the request do. The answer is complete, so the sidecar closes the connection
    gracefully: the whole body it was given is delivered, then the end of the stream (b""). A reset instead would
    throw away what still waited in the sidecar's send buffer: the upstream would get the body cut short."""
    released, read = asyncio.Event(), asyncio.Event()
    seen: list[object] = []

    async def answers_then_reads(reader: Reader, writer: Writer, upstream: Upstream) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        writer.write(answer(b"taken", b"connection: close"))
        await released.wait()  # the sidecar has released the connection: only now is the body read
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        try:
            body = await reader.readexactly(length)
            seen.extend([len(body), body == b"u" * _LARGE, await reader.read()])
        except asyncio.IncompleteReadError as exc:
            seen.append(f"cut short after {len(exc.partial)} bytes")
        except ConnectionResetError:
            seen.append("reset")
        read.set()

    forwarder = Forwarder(Pool(8, 0, 15.0))
    try:
        async with serving(answers_then_reads) as upstream:
            forwarded, body = await call(forwarder, upstream.url + "/upload", "POST", [b"u" * _LARGE])
            assert (forwarded.status, body) == (200, b"taken")
            released.set()
            await asyncio.wait_for(read.wait(), _DEADLINE)
            assert forwarder.pool.open_connections <= 1
    finally:
        await forwarder.close()
    assert seen == [_LARGE, True, b""]


async def test_shutdown_waits_for_the_connections_still_in_use_to_close() -> None:
    """`Pool.close` at shutdown: an exchange still running when it starts may end within the grace; close returns
    only once that exchange's connection is closed (the process does not exit under a response still streaming)."""
    go_on = asyncio.Event()

    async def head_then_body(reader: Reader, writer: Writer, upstream: Upstream) -> None:
        await read_request(reader, upstream)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n")
        await go_on.wait()
        writer.write(b"body")
        await reader.read()

    pool = Pool(limit=8, per_host=0, idle_timeout=15.0)
    async with serving(head_then_body) as upstream:
        origin, _ = split_url(upstream.url)
        connection = await pool.acquire(origin, _DEADLINE)
        response = connection.start(no_body=False)
        connection.write(b"GET /x HTTP/1.1\r\nhost: upstream\r\n\r\n", end=True)
        while not response.head_done:
            await response.wait(_DEADLINE)

        async def shutting_down() -> bool:
            await pool.close(grace=_DEADLINE)
            return connection.closed.done()

        shutdown = asyncio.ensure_future(shutting_down())
        go_on.set()  # the exchange ends while the shutdown waits
        assert await read_all(response) == b"body"
        pool.release(connection)  # closed, not kept: the pool is shutting down
        assert connection.state is State.CLOSED
        assert await asyncio.wait_for(shutdown, _DEADLINE) is True
        assert pool.open_connections == 0


async def test_a_connection_that_waited_to_drain_gives_its_place_back_when_the_upstream_closes_it() -> None:
    """A large upload the upstream reads slowly makes the request wait (`drain`) until the upstream catches up.
    Afterwards the connection is like any other: reused while idle, and when the upstream closes it, its place in
    the pool is given back (the open-connections gauge goes to 0, the next request opens a new one)."""
    read_now = asyncio.Event()
    close_now = asyncio.Event()

    async def reads_late_then_closes(reader: Reader, writer: Writer, upstream: Upstream) -> None:
        await read_now.wait()
        request = await read_request(reader, upstream)
        assert request is not None
        writer.write(answer(b"got %d" % len(request.body)))
        await close_now.wait()

    pool = Pool(limit=8, per_host=0, idle_timeout=15.0)
    try:
        async with serving(reads_late_then_closes) as upstream:
            origin, _ = split_url(upstream.url)
            connection = await pool.acquire(origin, _DEADLINE)
            response = connection.start(no_body=False)
            connection.write(b"PUT /up HTTP/1.1\r\nhost: upstream\r\ncontent-length: %d\r\n\r\n" % _LARGE)
            connection.write(b"u" * _LARGE, end=True)
            assert connection._write_paused  # the upstream reads nothing yet: the request waits for it
            draining = asyncio.ensure_future(connection.drain(_DEADLINE))
            read_now.set()
            await asyncio.wait_for(draining, _DEADLINE)
            assert await read_all(response) == b"got %d" % _LARGE
            pool.release(connection)
            assert (connection.state, pool.open_connections) == (State.IDLE, 1)
            close_now.set()
            await asyncio.wait_for(asyncio.shield(connection.closed), _DEADLINE)
            assert (connection.state, pool.open_connections) == (State.CLOSED, 0)
            assert not any(pool._idle.values())
    finally:
        await pool.close()
