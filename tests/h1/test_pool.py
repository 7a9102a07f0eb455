"""The upstream pool's bounds and its connects, against upstreams on real sockets on 127.0.0.1 through the forwarder:
connections in all and per host (a request waits for one within its timeout, a freed or closed one makes room), a
refused or black-holed address (502 naming the cause, 504 after the route's timeout), names looked up again when
none of their addresses connects. Each test runs on uvloop and on asyncio's own loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sidecar.edge.forward import Forwarder, UpstreamFailure
from sidecar.reasons import Reason, Rejection
from sidecar.upstream.pool import ADDRESS_TIMEOUT_CAP, Pool, address_timeout
from sidecar.upstream.resolver import Resolver
from tests.support.h1upstream import Reader, Upstream, Writer, answer, call, keep_answering, read_request, serving
from tests.support.tls import LocalCA

_DEADLINE = 10.0


@contextlib.asynccontextmanager
async def forwarding(limit: int = 8, per_host: int = 0, resolver: Resolver | None = None) -> AsyncIterator[Forwarder]:
    forwarder = Forwarder(Pool(limit, per_host, 15.0, resolver=resolver))
    try:
        yield forwarder
    finally:
        await forwarder.close()


def unused_port(address: str = "127.0.0.1") -> int:
    """A port nothing listens on (bound, then let go): a connect to it is refused."""
    with socket.socket() as probe:
        probe.bind((address, 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def black_hole(address: str, port: int = 0) -> Iterator[int]:
    """A listener whose accept queue is full (backlog 0, one connection never accepted): Linux drops every further
    SYN, so a connect to it hangs as one to a dead host does. Yields its port."""
    listener = socket.socket()
    filler = socket.socket()
    try:
        listener.bind((address, port))
        listener.listen(0)
        bound = int(listener.getsockname()[1])
        filler.connect((address, bound))  # takes the one place in the queue
        yield bound
    finally:
        filler.close()
        listener.close()


class Names(Resolver):
    """The name `upstream.test` with these addresses, in this order (stands in for DNS only)."""

    def __init__(self, *addresses: str) -> None:
        super().__init__()
        self._addresses = addresses

    async def _ask(self, host: str, port: int, loop: asyncio.AbstractEventLoop) -> list[tuple[str, int]]:
        return [(address, port) for address in self._addresses]


async def test_a_refused_connection_is_a_502_that_names_only_its_cause() -> None:
    """Refused each time, and each time it gives its place back (one connection per host allowed: the second
    attempt is refused too, not left waiting for a place the first still held)."""
    url = f"http://127.0.0.1:{unused_port()}/x?sig=secret"
    async with forwarding(per_host=1) as forwarder:
        for _ in range(2):
            with pytest.raises(UpstreamFailure) as refused:
                await call(forwarder, url, timeout=_DEADLINE)
            assert refused.value.reason is Reason.UPSTREAM_UNREACHABLE
            assert refused.value.detail == "ConnectionRefusedError"  # the access log's upstream_error: no URL
            assert forwarder.pool.open_connections == 0


async def test_an_address_that_never_answers_is_a_504_after_the_routes_timeout() -> None:
    async with asyncio.timeout(_DEADLINE), forwarding() as forwarder:  # a connect without a deadline fails the test
        with black_hole("127.0.0.2") as port, pytest.raises(UpstreamFailure) as refused:
            await call(forwarder, f"http://127.0.0.2:{port}/x", timeout=0.5)
    assert refused.value.reason is Reason.UPSTREAM_TIMEOUT
    assert forwarder.pool.open_connections == 0


@pytest.mark.parametrize(
    ("remaining", "left", "share"),
    [
        (30.0, 2, ADDRESS_TIMEOUT_CAP),  # an equal share would be 15 s: capped
        (3.0, 2, 1.5),
        (8.0, 4, 2.0),
        (9.0, 3, 3.0),
        (30.0, 1, None),  # the last address: the route's timeout bounds it
    ],
)
def test_each_address_but_the_last_gets_an_equal_share_of_the_time_left_at_most_the_cap(
    remaining: float, left: int, share: float | None
) -> None:
    assert address_timeout(remaining, left) == share


async def test_a_black_holed_first_address_does_not_spend_the_routes_whole_timeout() -> None:
    """`upstream.test` is 127.0.0.2 (never answers a SYN) then 127.0.0.1 (the upstream). With a route timeout of
    3 s the first address gets 1.5 s, the second the rest: the request is answered, where trying the first for
    the whole timeout would be a 504."""
    names = Names("127.0.0.2", "127.0.0.1")
    async with serving(keep_answering) as upstream, forwarding(resolver=names) as forwarder:
        port = int(upstream.url.rsplit(":", 1)[1])
        with black_hole("127.0.0.2", port):
            forwarded, body = await call(forwarder, f"http://upstream.test:{port}/x", timeout=3.0)
        assert (forwarded.status, body) == (200, b"you sent ")
        assert (upstream.connections, forwarder.pool.open_connections, names.lookups) == (1, 1, 1)


async def test_a_name_none_of_whose_addresses_connects_is_looked_up_again() -> None:
    """Both addresses refuse: 502 with the last one's cause, and the next connection asks the resolver again (the
    record may have changed). A name one of whose addresses connects stays cached."""
    port = unused_port()
    dead = Names("127.0.0.3", "127.0.0.4")
    async with forwarding(resolver=dead) as forwarder:
        for _ in range(2):
            with pytest.raises(UpstreamFailure) as refused:
                await call(forwarder, f"http://upstream.test:{port}/x")
            assert refused.value.reason is Reason.UPSTREAM_UNREACHABLE
            assert refused.value.detail == "ConnectionRefusedError"
    assert dead.lookups == 2

    async def answers_and_closes(reader: Reader, writer: Writer, upstream: Upstream) -> None:
        await read_request(reader, upstream)
        writer.write(answer(b"ok", b"connection: close"))

    for half in (Names("127.0.0.3", "127.0.0.1"), Names("127.0.0.1", "127.0.0.3")):  # one refuses, one answers
        async with serving(answers_and_closes) as upstream, forwarding(resolver=half) as forwarder:
            port = int(upstream.url.rsplit(":", 1)[1])
            for _ in range(2):
                assert (await call(forwarder, f"http://upstream.test:{port}/x"))[0].status == 200
        assert (upstream.connections, half.lookups) == (2, 1)


@pytest.mark.parametrize(("limit", "per_host"), [(1, 0), (0, 1), (1, 1)], ids=["in-all", "per-host", "both"])
async def test_at_the_bound_a_request_waits_for_the_connection_in_use_and_reuses_it(limit: int, per_host: int) -> None:
    """One connection allowed: a second request waits (well within its timeout) for the first's connection, and
    both go on that one connection; a connection at the bound is kept, not closed."""
    first_read = asyncio.Event()
    go_on = asyncio.Event()

    async def holds_the_first(reader: Reader, writer: Writer, upstream: Upstream) -> None:
        while (request := await read_request(reader, upstream)) is not None:
            if not first_read.is_set():
                first_read.set()
                await go_on.wait()
            writer.write(answer(request.line))

    async with serving(holds_the_first) as upstream, forwarding(limit, per_host) as forwarder:
        first = asyncio.ensure_future(call(forwarder, upstream.url + "/first"))
        await asyncio.wait_for(first_read.wait(), _DEADLINE)
        second = asyncio.ensure_future(call(forwarder, upstream.url + "/second", timeout=0.9))
        while not forwarder.pool._waiters:  # the second waits for a slot
            await asyncio.sleep(0)
        go_on.set()
        answers = [body for _, body in await asyncio.gather(first, second)]
        assert answers == [b"GET /first HTTP/1.1", b"GET /second HTTP/1.1"]
        for _ in range(2):
            await call(forwarder, upstream.url + "/again")
        assert (upstream.connections, forwarder.pool.open_connections) == (1, 1)


async def test_a_connection_the_upstream_closed_frees_its_place_under_the_per_host_bound() -> None:
    """`Connection: close` answers, one connection per host allowed: each closed connection gives its place back
    once, so requests go on one at a time, and never two at once."""

    async def closes_the_first(reader: Reader, writer: Writer, upstream: Upstream) -> None:
        while (request := await read_request(reader, upstream)) is not None:
            if upstream.connections == 1:
                writer.write(answer(request.line, b"connection: close"))
                return
            writer.write(answer(request.line))

    async with serving(closes_the_first) as upstream, forwarding(limit=0, per_host=1) as forwarder:
        assert (await call(forwarder, upstream.url + "/closed"))[0].status == 200
        await asyncio.gather(*(call(forwarder, f"{upstream.url}/n{n}") for n in range(3)))
        assert (upstream.connections, forwarder.pool.open_connections) == (2, 1)


async def test_an_evicted_connection_gives_its_place_back_once() -> None:
    """One connection in all and per host: each new upstream evicts the other's idle connection. Its place is given
    back at the eviction and not again when its socket closes, so the count stays true and the first upstream can
    be called again."""
    async with (
        serving(keep_answering) as first,
        serving(keep_answering) as second,
        forwarding(limit=1, per_host=1) as forwarder,
    ):
        assert (await call(forwarder, first.url + "/a"))[0].status == 200
        (evicted,) = forwarder.pool._connections
        assert (await call(forwarder, second.url + "/b"))[0].status == 200
        await asyncio.wait_for(asyncio.shield(evicted.closed), _DEADLINE)
        assert forwarder.pool.open_connections == 1
        assert (await call(forwarder, first.url + "/c", timeout=2.0))[0].status == 200
        assert forwarder.pool.open_connections == 1
    assert (first.connections, second.connections) == (2, 1)


async def test_a_lowered_per_host_bound_closes_the_idle_connections_over_it() -> None:
    async with serving(keep_answering) as upstream, forwarding() as forwarder:
        await asyncio.gather(*(call(forwarder, f"{upstream.url}/n{n}") for n in range(3)))
        assert forwarder.pool.open_connections == 3
        forwarder.pool.resize(8, 1, 15.0, 0)  # what a policy reload does
        assert forwarder.pool.open_connections == 1
        assert (await call(forwarder, upstream.url + "/after"))[0].status == 200
    assert upstream.connections == 3  # the one kept was reused


async def test_a_route_holds_at_most_its_share_of_the_pool() -> None:
    """A share of two: two exchanges of one route hold two connections; a third of that route waits and, none
    coming back within its timeout, is refused without reaching the upstream (pool_share_full)."""
    held = asyncio.Event()
    reached = 0

    async def holds(reader: Reader, writer: Writer, upstream: Upstream) -> None:
        nonlocal reached
        await read_request(reader, upstream)
        reached += 1
        await held.wait()
        writer.write(answer())

    forwarder = Forwarder(Pool(8, 0, 15.0, per_share=2))
    try:
        async with serving(holds) as upstream:
            holding = [
                asyncio.ensure_future(forwarder.forward("GET", upstream.url, [], *_client(), 5.0, False, [], route="r"))
                for _ in range(2)
            ]
            while reached < 2:
                await asyncio.sleep(0)
            with pytest.raises(Rejection) as refused:
                await forwarder.forward("GET", upstream.url + "/third", [], *_client(), 0.3, False, [], route="r")
            held.set()
            assert [forwarded.status for forwarded in await asyncio.gather(*holding)] == [200, 200]
        assert refused.value.reason is Reason.POOL_SHARE_FULL
        assert (reached, upstream.connections) == (2, 2)
    finally:
        await forwarder.close()


def _client() -> tuple[Callable[[], Awaitable[dict[str, Any]]], Callable[[Any], Awaitable[None]]]:
    """A client that sends no body and stays connected; what it is sent is dropped."""

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: Any) -> None:
        pass

    return receive, send


async def test_a_tls_handshake_refused_is_a_502_that_names_openssls_reason() -> None:
    """An `https` upstream that answers in plain HTTP: the handshake fails, and the access log's cause is the
    error's type and OpenSSL's reason, nothing else."""

    async def plain(reader: Reader, writer: Writer, upstream: Upstream) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")

    async with serving(plain) as upstream, forwarding() as forwarder:
        with pytest.raises(UpstreamFailure) as refused:
            await call(forwarder, upstream.url.replace("http://", "https://") + "/x")
    assert refused.value.reason is Reason.UPSTREAM_UNREACHABLE
    assert refused.value.detail in ("SSLError: WRONG_VERSION_NUMBER", "SSLError: RECORD_LAYER_FAILURE")


async def test_busy_connections_over_a_lowered_per_host_bound_close_when_their_exchange_ends() -> None:
    """A reload lowers `max_per_host` to 1 while three exchanges are in flight: none is cut; as each ends (one at a
    time), a connection over the bound is closed, and the last one is kept."""
    answers = [asyncio.Event() for _ in range(3)]
    reached = 0

    async def holds(reader: Reader, writer: Writer, upstream: Upstream) -> None:
        nonlocal reached
        while (request := await read_request(reader, upstream)) is not None:
            mine = answers[reached] if reached < len(answers) else None
            reached += 1
            if mine is not None:
                await mine.wait()
            writer.write(answer(request.line))

    async with serving(holds) as upstream, forwarding() as forwarder:
        pool = forwarder.pool
        busy = [asyncio.ensure_future(call(forwarder, f"{upstream.url}/n{n}")) for n in range(3)]
        await until(lambda: reached == 3)
        forwarder.pool.resize(8, 1, 15.0, 0)  # a reload while all three are in use: none is cut
        for number, event in enumerate(answers):  # the exchanges end one at a time (in the order they arrived)
            event.set()
            expected = (number + 1, max(1, 2 - number))  # ended exchanges, open connections: two closed, one kept
            await until(lambda expected=expected: (sum(e.done() for e in busy), pool.open_connections) == expected)
        assert [forwarded.status for forwarded, _ in await asyncio.gather(*busy)] == [200, 200, 200]
        assert (await call(forwarder, upstream.url + "/after"))[0].status == 200
        assert forwarder.pool.open_connections == 1
    assert upstream.connections == 3


async def until(condition: Callable[[], bool]) -> None:
    """Until `condition` holds, looking again each time the loop has run (bounded)."""
    deadline = asyncio.get_running_loop().time() + _DEADLINE
    while not condition():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0)


async def test_a_get_sent_again_goes_on_a_new_connection_not_another_idle_one() -> None:
    """The upstream dropped its idle connections (restarted): a GET on one of them is sent again on a fresh
    connection, never on another idle one that is as dead."""

    async def drops_its_idle_ones(reader: Reader, writer: Writer, upstream: Upstream) -> None:
        first = upstream.connections <= 2
        while (request := await read_request(reader, upstream)) is not None:
            if first and len(upstream.requests) > 2:
                return  # read, then closed unanswered
            writer.write(answer(request.line))

    async with serving(drops_its_idle_ones) as upstream, forwarding() as forwarder:
        await asyncio.gather(*(call(forwarder, f"{upstream.url}/n{n}") for n in range(2)))
        assert forwarder.pool.open_connections == 2
        forwarded, body = await call(forwarder, upstream.url + "/again")
        assert (forwarded.status, body) == (200, b"GET /again HTTP/1.1")
    assert upstream.connections == 3


async def test_a_stale_idle_connection_is_passed_over_for_the_next_idle_one() -> None:
    async with serving(keep_answering) as upstream:
        forwarder = Forwarder(Pool(8, 0, 4.0))
        try:
            await asyncio.gather(*(call(forwarder, f"{upstream.url}/n{n}") for n in range(2)))
            (idle,) = forwarder.pool._idle.values()
            idle[-1].idle_since -= 5.0  # the newest, taken first, idle past idle_timeout (aged, not waited for)
            assert (await call(forwarder, upstream.url + "/again"))[0].status == 200
            assert upstream.connections == 2  # the older idle one was taken
        finally:
            await forwarder.close()


async def test_a_get_on_a_new_connection_closed_unanswered_is_not_sent_again() -> None:
    """Only a kept-alive connection may have been closed by an idle timeout racing the request: a new one that the
    upstream closes unanswered is the upstream's failure (502), and the request is not sent twice."""

    async def reads_and_closes(reader: Reader, writer: Writer, upstream: Upstream) -> None:
        await read_request(reader, upstream)

    async with serving(reads_and_closes) as upstream, forwarding() as forwarder:
        with pytest.raises(UpstreamFailure) as refused:
            await call(forwarder, upstream.url + "/once")
    assert refused.value.reason is Reason.UPSTREAM_UNREACHABLE
    assert (upstream.connections, upstream.requests) == (1, [b"GET /once HTTP/1.1"])


async def test_an_https_upstream_named_by_host_is_checked_against_that_name_not_its_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`https://upstream.test` at 127.0.0.1: the certificate must name `upstream.test` (TLS SNI and the hostname
    check use the URL's host, not the address it resolved to)."""
    ca = LocalCA(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.ca_file))
    async with (
        serving(keep_answering, tls=ca.server_context("upstream.test")) as upstream,
        forwarding(resolver=Names("127.0.0.1")) as forwarder,
    ):
        port = int(upstream.url.rsplit(":", 1)[1])
        forwarded, body = await call(forwarder, f"https://upstream.test:{port}/tls", "POST", [b"secret"])
    assert (forwarded.status, body) == (200, b"you sent secret")


async def test_a_closed_pool_waits_at_most_its_grace_and_closes_what_comes_back() -> None:
    """Shutdown: `close` returns within its grace though an exchange still runs; that exchange's connection, once
    released, is closed rather than kept; a pool made without a share lets one route hold several connections."""
    go_on = asyncio.Event()
    reached = 0

    async def holds(reader: Reader, writer: Writer, upstream: Upstream) -> None:
        nonlocal reached
        while (request := await read_request(reader, upstream)) is not None:
            reached += 1
            await go_on.wait()
            writer.write(answer(request.line))

    async with serving(holds) as upstream:
        forwarder = Forwarder(Pool(8, 0, 15.0))
        busy = [
            asyncio.ensure_future(forwarder.forward("GET", upstream.url, [], *_client(), 5.0, False, [], route="r"))
            for _ in range(2)
        ]
        await until(lambda: reached == 2)  # both of route r at once: no share bound by default
        await asyncio.wait_for(forwarder.close(), _DEADLINE)  # a grace of 1 s, not until the exchanges end
        go_on.set()
        assert [forwarded.status for forwarded in await asyncio.gather(*busy)] == [200, 200]
        assert not any(forwarder.pool._idle.values())
        await until(lambda: forwarder.pool.open_connections == 0)
