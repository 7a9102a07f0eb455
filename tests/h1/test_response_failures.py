"""How the upstream response parser (upstream/response.py) fails: an upstream that fails before answering is named
in the access log's `upstream_error` by its first failure (the operator reads why, not only that the connection
then closed), and an answer already complete stays whole whatever happens to its connection afterwards. Scripted
upstreams on real sockets on 127.0.0.1, or the parser fed directly; each async test runs on uvloop and asyncio."""

from __future__ import annotations

from typing import cast

import pytest

from sidecar.edge.forward import Forwarder, UpstreamFailure
from sidecar.reasons import Reason
from sidecar.upstream import response as h1_response
from sidecar.upstream.response import Broken, Response
from tests.h1.test_response_backpressure import take
from tests.h1.test_response_properties import Link
from tests.support.h1upstream import Reader, Upstream, Writer, call, read_request, serving

# What the upstream sends after reading the request, then whether it keeps the connection open (the sidecar
# closes it) -> the access log's upstream_error.
FAILURES = {
    "closed-mid-head": (b"HTTP/1.1 200 OK\r\ncontent-", False, "the upstream closed the connection mid-response"),
    "closed-mid-head-after-a-100": (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n",
        False,
        "the upstream closed the connection mid-response",
    ),
    "not-http": (b"SSH-2.0-OpenSSH_9.2\r\n", True, "invalid response: HttpParserError"),
    # one header that never ends: bounded as it arrives, not when it is whole
    "head-too-large-unfinished": (
        b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * 70_000,
        True,
        "the response head or trailers are too large",
    ),
    "switching-protocols": (
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
        True,
        "the upstream switched protocols unasked",
    ),
}


@pytest.mark.parametrize(("wire", "held", "detail"), FAILURES.values(), ids=FAILURES.keys())
async def test_why_an_upstream_failed_before_answering_is_what_the_access_log_says(
    wire: bytes, held: bool, detail: str, forwarder: Forwarder
) -> None:
    """The first failure is the one named: a response HTTP does not allow makes the sidecar reset the connection,
    and that connection's end must not replace the reason with "closed mid-response"."""

    async def script(reader: Reader, writer: Writer, upstream: Upstream) -> None:
        await read_request(reader, upstream)
        writer.write(wire)
        if held:
            await reader.read()

    async with serving(script) as upstream:
        with pytest.raises(UpstreamFailure) as failed:
            await call(forwarder, upstream.url + "/x")
    assert (failed.value.reason, failed.value.detail) == (Reason.UPSTREAM_UNREACHABLE, detail)
    assert forwarder.pool.open_connections == 0


def test_a_complete_answer_stays_whole_when_its_connection_fails_afterwards() -> None:
    """The answer arrived whole, then the connection failed (a TLS error at its close, say): the client still gets
    the whole body and its end, not a broken stream; only the connection is not reused."""
    link = Link()
    response = Response(cast(h1_response.Link, link), no_body=False)
    response.feed(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nwhole")
    response.fail(Broken("TLS ended: SSLError: late"))
    assert (response.error, response.keep_alive, link.aborted) == (None, False, True)
    assert response.finished is False  # the body is still to be read
    assert take(response) == b"whole"
    assert take(response) == b""
    assert response.finished


def test_the_first_failure_of_a_response_is_the_one_kept() -> None:
    link = Link()
    response = Response(cast(h1_response.Link, link), no_body=False)
    response.feed(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nwh")
    first = Broken("the first")
    response.fail(first)
    response.ended()  # the reset connection's end
    assert response.error is first
