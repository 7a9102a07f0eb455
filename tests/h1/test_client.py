"""The upstream HTTP/1.1 client through the forwarder, against scripted upstreams on real sockets on 127.0.0.1:
keep-alive and the pool, every response framing, refusal of what HTTP/1.1 does not allow (no desync: an answer is
never read as the next request's), early answers and full-duplex streams, TLS verified against the trust store.
Each test runs on uvloop (what `sidecar serve` uses) and on asyncio's own loop."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import pytest

from sidecar.edge.forward import ClientGone, Forwarder, UpstreamBroken, UpstreamFailure
from sidecar.reasons import Reason
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
from tests.support.tls import LegacyCA, LocalCA


async def test_sequential_requests_share_one_kept_alive_connection(forwarder: Forwarder) -> None:
    async with serving(keep_answering) as upstream:
        for number in range(5):
            forwarded, body = await call(forwarder, upstream.url + "/n", "POST", [b"%d" % number])
            assert (forwarded.status, body) == (200, b"you sent %d" % number)
    assert upstream.connections == 1


async def test_a_get_on_a_kept_alive_connection_the_upstream_closed_is_sent_again(forwarder: Forwarder) -> None:
    async def closes_after_one(reader: Reader, writer: Writer, upstream: Upstream) -> None:
        await read_request(reader, upstream)
        writer.write(answer(b"first"))
        if upstream.connections == 1:
            await read_request(reader, upstream)  # read, then closed unanswered: as an idle timeout racing a request
            return
        await keep_answering(reader, writer, upstream)

    async with serving(closes_after_one) as upstream:
        assert (await call(forwarder, upstream.url + "/a"))[1] == b"first"
        assert (await call(forwarder, upstream.url + "/b"))[1] == b"first"
    assert upstream.connections == 2
    assert upstream.requests == [b"GET /a HTTP/1.1", b"GET /b HTTP/1.1", b"GET /b HTTP/1.1"]


async def test_a_post_is_never_sent_twice(forwarder: Forwarder) -> None:
    async def closes_after_one(reader: Reader, writer: Writer, upstream: Upstream) -> None:
        await read_request(reader, upstream)
        writer.write(answer())
        await read_request(reader, upstream)

    async with serving(closes_after_one) as upstream:
        await call(forwarder, upstream.url + "/a", "POST", [b"1"])
        with pytest.raises(UpstreamFailure) as refused:
            await call(forwarder, upstream.url + "/b", "POST", [b"2"])
    assert refused.value.reason is Reason.UPSTREAM_UNREACHABLE
    assert upstream.requests == [b"POST /a HTTP/1.1", b"POST /b HTTP/1.1"]


FRAMINGS = {
    "content-length": (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", b"hello", True),
    "chunked": (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n", b"hello", True
    ),
    "until-close": (b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nhello", b"hello", False),
    "http-1.0": (b"HTTP/1.0 200 OK\r\n\r\nhello", b"hello", False),
    "no-content": (b"HTTP/1.1 204 No Content\r\n\r\n", b"", True),
    "continue-then-final": (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", b"hello", True
    ),
    "early-hints-then-final": (
        b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        b"ok",
        True,
    ),
}  # fmt: skip


@pytest.mark.parametrize(("response", "body", "reused"), FRAMINGS.values(), ids=FRAMINGS.keys())
async def test_every_response_framing_is_read_to_its_end(
    response: bytes, body: bytes, reused: bool, forwarder: Forwarder
) -> None:
    async def script(reader: Reader, writer: Writer, upstream: Upstream) -> None:
        while await read_request(reader, upstream) is not None:
            writer.write(response)
            if not reused:
                return

    async with serving(script) as upstream:
        for _ in range(2):
            forwarded, got = await call(forwarder, upstream.url + "/f")
            assert (forwarded.status in (200, 204), got) == (True, body)
    assert upstream.connections == (1 if reused else 2)


async def test_the_answer_to_head_has_no_body_and_the_connection_goes_on(forwarder: Forwarder) -> None:
    async def script(reader: Reader, writer: Writer, upstream: Upstream) -> None:
        while (request := await read_request(reader, upstream)) is not None:
            writer.write(
                answer(b"") if request.line.startswith(b"GET") else b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n"
            )

    async with serving(script) as upstream:
        assert (await call(forwarder, upstream.url + "/h", "HEAD"))[1] == b""
        assert (await call(forwarder, upstream.url + "/g", "GET"))[0].status == 200
    assert upstream.connections == 1


BROKEN_BEFORE_HEAD = {
    "not-http": b"SSH-2.0-OpenSSH_9.2\r\n",
    "closed-unanswered": b"",
    "length-and-chunked": b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
    "two-lengths": b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabcd",
    "bare-cr-in-header": b"HTTP/1.1 200 OK\r\nx-a: 1\rx-b: 2\r\ncontent-length: 0\r\n\r\n",
    "nul-in-header": b"HTTP/1.1 200 OK\r\nx-a: 1\x002\r\ncontent-length: 0\r\n\r\n",
    "head-over-64-kib": b"HTTP/1.1 200 OK\r\n" + b"x-big: " + b"a" * 70_000 + b"\r\n\r\n",
    "over-256-headers": b"HTTP/1.1 200 OK\r\n" + b"x-h: 1\r\n" * 300 + b"content-length: 0\r\n\r\n",
    "switching-protocols": b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
}


@pytest.mark.parametrize("response", BROKEN_BEFORE_HEAD.values(), ids=BROKEN_BEFORE_HEAD.keys())
async def test_what_http_does_not_allow_is_a_502(response: bytes, forwarder: Forwarder) -> None:
    async def script(reader: Reader, writer: Writer, upstream: Upstream) -> None:
        await read_request(reader, upstream)
        writer.write(response)

    async with serving(script) as upstream:
        with pytest.raises(UpstreamFailure) as refused:
            await call(forwarder, upstream.url + "/x", "POST", [b"body"])
    assert refused.value.reason is Reason.UPSTREAM_UNREACHABLE


async def test_a_response_cut_short_breaks_the_client_connection(forwarder: Forwarder) -> None:
    async def script(reader: Reader, writer: Writer, upstream: Upstream) -> None:
        await read_request(reader, upstream)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten..")

    async with serving(script) as upstream:
        with pytest.raises(UpstreamBroken):
            await call(forwarder, upstream.url + "/cut")


async def test_bytes_after_an_answer_are_never_read_as_the_next_answer(forwarder: Forwarder) -> None:
    """Response splitting / desync: an upstream (or whatever it echoes) sends a second response unasked."""
    smuggled = b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nsmuggled"

    async def script(reader: Reader, writer: Writer, upstream: Upstream) -> None:
        while (request := await read_request(reader, upstream)) is not None:
            writer.write(answer(request.line) + (smuggled if upstream.connections == 1 else b""))

    async with serving(script) as upstream:
        assert (await call(forwarder, upstream.url + "/one"))[1] == b"GET /one HTTP/1.1"
        assert (await call(forwarder, upstream.url + "/two"))[1] == b"GET /two HTTP/1.1"
    assert upstream.connections == 2


async def test_an_early_answer_to_a_streamed_upload_is_relayed(forwarder: Forwarder) -> None:
    async def refuses_at_once(reader: Reader, writer: Writer, upstream: Upstream) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 4\r\nconnection: close\r\n\r\nbig!")
        await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        while await reader.read(65536):  # read what keeps coming, as nginx's lingering close does
            pass

    async with serving(refuses_at_once) as upstream:
        forwarded, body = await call(forwarder, upstream.url + "/up", "PUT", [b"x" * 65536] * 64)
    assert (forwarded.status, body) == (413, b"big!")


async def test_a_full_duplex_upstream_streams_both_ways_at_once(forwarder: Forwarder) -> None:
    """An upstream that answers each piece as it reads it: 16 MiB each way, far over every buffer, no deadlock."""
    pieces = [bytes([n]) * 262_144 for n in range(64)]
    async with serving(echoes_as_it_reads) as upstream:
        forwarded, body = await call(forwarder, upstream.url + "/echo", "POST", pieces)
    assert forwarded.status == 200
    assert hashlib.sha256(body).digest() == hashlib.sha256(b"".join(pieces)).digest()


async def echoes_as_it_reads(reader: Reader, writer: Writer, upstream: Upstream) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
    async for piece in read_chunks(reader):
        writer.write(b"%x\r\n%b\r\n" % (len(piece), piece))
        await writer.drain()
    writer.write(b"0\r\n\r\n")


LATE_FAILURES = {
    # past max_body once the answer streams: no 413 can be sent any more, the client connection is broken
    "over-max-body": ({"type": "http.request", "body": b"c" * 65536, "more_body": True}, UpstreamBroken),
    "client-gone": ({"type": "http.disconnect"}, ClientGone),
}


@pytest.mark.parametrize(("late", "raised"), LATE_FAILURES.values(), ids=LATE_FAILURES.keys())
async def test_a_body_failing_while_its_answer_streams_ends_both_sides(
    late: dict[str, Any], raised: type[Exception], forwarder: Forwarder
) -> None:
    answering = asyncio.Event()
    messages = [{"type": "http.request", "body": bytes([n]) * 65536, "more_body": True} for n in range(2)] + [late]

    async def receive() -> dict[str, Any]:
        if len(messages) == 1:
            await answering.wait()  # the last message only once the response has started
        return messages.pop(0)

    async def send(message: Any) -> None:
        if message["type"] == "http.response.start":
            answering.set()

    async with serving(echoes_as_it_reads) as upstream:
        with pytest.raises(raised):
            # A timeout longer than serving()'s bound: the exchange must end at once, not when the upstream times out.
            await forwarder.forward("POST", upstream.url + "/late", [], receive, send, 60.0, True, [], max_body=150_000)


async def test_a_host_name_is_looked_up_once_for_many_new_connections(forwarder: Forwarder) -> None:
    """An upstream that closes after each answer, called five times in turn and five at once: ten connections to
    `localhost`, one name lookup (in Kubernetes, CoreDNS is spared a query burst per connection)."""

    async def answers_and_closes(reader: Reader, writer: Writer, upstream: Upstream) -> None:
        await read_request(reader, upstream)
        writer.write(answer(b"ok", b"connection: close"))

    async with serving(answers_and_closes) as upstream:
        url = upstream.url.replace("127.0.0.1", "localhost")
        in_turn = [await call(forwarder, f"{url}/turn{n}") for n in range(5)]
        at_once = await asyncio.gather(*(call(forwarder, f"{url}/once{n}") for n in range(5)))
    assert [forwarded.status for forwarded, _ in in_turn + at_once] == [200] * 10
    assert upstream.connections == 10
    assert forwarder.pool.name_lookups == 1


async def test_a_connection_idle_past_idle_timeout_is_closed_not_reused() -> None:
    forwarder = Forwarder.create(idle_timeout=4.0)
    try:
        async with serving(keep_answering) as upstream:
            await call(forwarder, upstream.url + "/a")
            for idle in forwarder.pool._idle.values():  # aged by 5 s rather than waited for
                for connection in idle:
                    connection.idle_since -= 5.0
            await call(forwarder, upstream.url + "/b")
        assert upstream.connections == 2
    finally:
        await forwarder.close()


async def test_the_number_of_open_connections_is_reported_as_it_changes() -> None:
    counts: list[int] = []
    forwarder = Forwarder.create(on_count=counts.append)
    try:
        async with serving(keep_answering) as upstream:
            await asyncio.gather(*(call(forwarder, f"{upstream.url}/n{n}") for n in range(3)))
            await call(forwarder, upstream.url + "/again")  # a kept-alive connection: no change
            assert counts == [1, 2, 3]
    finally:
        await forwarder.close()
    assert counts[-1] == 0  # closed by the upstream's end or by close(): counted down to nothing


async def test_a_pool_made_smaller_closes_idle_connections_over_its_new_bound() -> None:
    counts: list[int] = []
    forwarder = Forwarder.create(pool_limit=3, on_count=counts.append)
    try:
        async with serving(keep_answering) as upstream:
            await asyncio.gather(*(call(forwarder, f"{upstream.url}/n{n}") for n in range(3)))
            forwarder.pool.resize(1, 0, 15.0, 0)  # what a policy reload does
            assert counts[-1] == 1
            assert (await call(forwarder, upstream.url + "/after"))[0].status == 200
        assert upstream.connections == 3  # the one kept was reused
    finally:
        await forwarder.close()


async def test_a_full_pool_closes_an_idle_connection_to_another_upstream() -> None:
    forwarder = Forwarder.create(pool_limit=1)
    try:
        async with serving(keep_answering) as first, serving(keep_answering) as second:
            assert (await call(forwarder, first.url + "/a"))[0].status == 200
            assert (await call(forwarder, second.url + "/b"))[0].status == 200
            assert (await call(forwarder, first.url + "/c"))[0].status == 200
        assert (first.connections, second.connections) == (2, 1)
    finally:
        await forwarder.close()


@pytest.mark.parametrize(
    ("make_ca", "names", "cause"),
    [
        (LocalCA, ("127.0.0.1",), None),
        (LocalCA, ("other.test",), "SSLCertVerificationError: IP address mismatch"),
        # Python 3.13's default, applied on every Python: the same private CA works or fails on all of them.
        (LegacyCA, ("127.0.0.1",), "SSLCertVerificationError: Missing Authority Key Identifier"),
    ],
    ids=["conforming-ca", "wrong-host", "ca-not-x509-strict"],
)
async def test_https_upstreams_are_verified_against_the_trust_store(
    make_ca: type[LocalCA] | type[LegacyCA],
    names: tuple[str, ...],
    cause: str | None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ca = make_ca(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.ca_file))  # the way an operator adds a CA: OpenSSL's default paths
    forwarder = Forwarder.create()
    try:
        async with serving(keep_answering, tls=ca.server_context(*names)) as upstream:
            if cause is None:
                forwarded, body = await call(forwarder, upstream.url + "/tls", "POST", [b"secret"])
                assert (forwarded.status, body) == (200, b"you sent secret")
            else:
                with pytest.raises(UpstreamFailure) as refused:
                    await call(forwarder, upstream.url + "/tls")
                assert refused.value.reason is Reason.UPSTREAM_UNREACHABLE
                assert str(refused.value.__cause__).startswith(cause)
    finally:
        await forwarder.close()
