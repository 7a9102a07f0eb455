"""The upstream response parser's documented bounds and framing (docs/forwarding.md, "What HTTP/1.1 does not allow
is 502"), at their edges: a head of at most 64 KiB and 256 headers, a status of 100 to 599, trailers bounded apart
from the head, `chunked` found as the last of several transfer codings (so a chunked body cut short is never passed
on as complete), and a GET whose answer began is not sent again. The parser fed directly (its connection a stub),
and the forwarder against scripted upstreams on 127.0.0.1 (on uvloop and asyncio)."""

from __future__ import annotations

from typing import cast

import pytest

from sidecar.edge.forward import Forwarder, UpstreamFailure
from sidecar.reasons import Reason
from sidecar.upstream import response as h1_response
from sidecar.upstream.response import Broken, Response
from tests.h1.test_response_properties import Link
from tests.support.h1upstream import Reader, Upstream, Writer, answer, call, read_request, serving

_KIB = 1024


def parsed(*pieces: bytes) -> tuple[Response, Link]:
    link = Link()
    response = Response(cast(h1_response.Link, link), no_body=False)
    for piece in pieces:
        response.feed(piece)
    return response, link


def head(count: int, total: int, status: bytes = b"200 OK") -> bytes:
    """A head of `count` headers (the last one `content-length: 0`) and `total` bytes on the wire."""
    top = b"HTTP/1.1 " + status + b"\r\n"
    last = b"content-length: 0\r\n"
    fixed = len(top) + len(last) + 2 + (count - 1) * len(b"x-0000: \r\n")
    sizes = [(total - fixed) // (count - 1)] * (count - 1)
    sizes[0] += (total - fixed) % (count - 1)
    fields = b"".join(b"x-%04d: %s\r\n" % (number, b"v" * size) for number, size in enumerate(sizes))
    made = top + fields + last + b"\r\n"
    assert len(made) == total
    return made


HEADS = {
    # head -> accepted (passed on) or refused (502)
    "256-headers": (head(256, 8 * _KIB), True),
    "257-headers": (head(257, 8 * _KIB), False),
    "just-under-64-kib-in-250-headers": (head(250, 64 * _KIB - 136), True),
    "just-over-64-kib-in-250-headers": (head(250, 64 * _KIB + 500), False),
    "over-64-kib-in-many-small-headers": (head(200, 80 * _KIB), False),
    "status-599": (head(2, 100, b"599 Custom"), True),
    "status-600": (head(2, 100, b"600 Custom"), False),
    "status-100-only-is-no-answer-yet": (b"HTTP/1.1 100 Continue\r\n\r\n", None),
}


@pytest.mark.parametrize(("wire", "accepted"), HEADS.values(), ids=HEADS.keys())
def test_a_head_within_the_documented_bounds_is_passed_on_and_one_beyond_them_is_refused(
    wire: bytes, accepted: bool | None
) -> None:
    response, link = parsed(wire)
    if accepted is None:
        assert (response.head_done, response.error, link.aborted) == (False, None, False)
    elif accepted:
        assert (response.head_done, response.error, link.aborted) == (True, None, False)
        assert len(response.headers) == wire.count(b"\r\n") - 2
        assert response.status == int(wire[9:12])
    else:
        assert (response.head_done, isinstance(response.error, Broken), link.aborted) == (False, True, True)


def test_trailers_are_bounded_apart_from_the_head() -> None:
    """A head just under 64 KiB, then a few KiB of trailers: each within its bound, the answer is whole. (Were the
    head's bytes counted on into the trailers, together they would pass 64 KiB and the answer be refused.)"""
    top = head(250, 62 * _KIB).replace(b"content-length: 0", b"transfer-encoding: chunked")
    response, link = parsed(top, b"0\r\nx-trailer: " + b"t" * 4 * _KIB + b"\r\n")
    assert (response.error, response.complete) == (None, False)
    response.feed(b"\r\n")
    assert (response.error, response.complete, link.aborted) == (None, True, False)
    assert len(response.headers) == 250  # the trailer is not one of them


@pytest.mark.parametrize("where", ["head", "trailers"])
def test_an_unfinished_head_or_trailer_is_waited_for_up_to_64_kib_and_refused_past_it(where: str) -> None:
    """Bytes that do not finish a head (or, after the body, the trailers) are bounded as they arrive: exactly
    64 KiB is still waited for, the next byte is too much."""
    if where == "head":
        before, line = [], b"HTTP/1.1 200 OK\r\nx-big: "
    else:
        before, line = [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"], b"x-big: "
    unfinished = line + b"a" * (64 * _KIB - len(line))
    response, link = parsed(*before, unfinished)
    assert (response.error, link.aborted) == (None, False)
    response.feed(b"a")
    assert (isinstance(response.error, Broken), link.aborted) == (True, True)
    assert str(response.error) == "the response head or trailers are too large"


# Spellings of `chunked` alone: another coding beside it is refused at the head (tests/edge/test_transfer_codings.py).
CODINGS = ["chunked", "Chunked", " chunked ", "CHUNKED"]


@pytest.mark.parametrize("coding", CODINGS)
def test_a_chunked_body_cut_short_is_broken_however_chunked_is_spelled(coding: str) -> None:
    """`chunked` frames the body by chunks (RFC 9112 §6.3): the upstream closing before the last chunk cut the answer
    short (502 / a broken stream), it did not end it."""
    wire = b"HTTP/1.1 200 OK\r\ntransfer-encoding: " + coding.encode() + b"\r\n\r\n5\r\nhello\r\n"
    cut, _ = parsed(wire)
    cut.ended()
    assert (cut.complete, isinstance(cut.error, Broken)) == (False, True)
    whole, _ = parsed(wire + b"0\r\n\r\n")
    assert (whole.complete, whole.error) == (True, None)


async def test_a_get_whose_answer_began_is_not_sent_again(forwarder: Forwarder) -> None:
    """Only a kept-alive connection the upstream closed before answering at all is tried again (the upstream never
    saw the request). Once the upstream started answering, it had the request: the failure is the client's 502."""

    async def breaks_the_second_answer(reader: Reader, writer: Writer, upstream: Upstream) -> None:
        await read_request(reader, upstream)
        writer.write(answer(b"first"))
        if await read_request(reader, upstream) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-")  # begun, then the connection ends

    async with serving(breaks_the_second_answer) as upstream:
        assert (await call(forwarder, upstream.url + "/a"))[1] == b"first"
        with pytest.raises(UpstreamFailure) as failed:
            await call(forwarder, upstream.url + "/b")
    assert failed.value.reason is Reason.UPSTREAM_UNREACHABLE
    assert (upstream.connections, upstream.requests) == (1, [b"GET /a HTTP/1.1", b"GET /b HTTP/1.1"])


# The Transfer-Encoding lines of an answer -> whether it is read as chunked (the body whole) or refused (Broken).
FRAMINGS = {
    "chunked-after-an-empty-list-element": ([b", chunked"], True),  # RFC 9110 §5.6.1: empty elements are ignored
    "gzip-then-chunked-on-two-lines": ([b"gzip", b"chunked"], False),  # the codings of every line count
}


@pytest.mark.parametrize(("lines", "relayed"), FRAMINGS.values(), ids=FRAMINGS.keys())
def test_the_transfer_codings_of_every_line_decide_the_framing(lines: list[bytes], relayed: bool) -> None:
    head = b"HTTP/1.1 200 OK\r\n" + b"".join(b"transfer-encoding: " + line + b"\r\n" for line in lines) + b"\r\n"
    response, _ = parsed(head + b"5\r\nhello\r\n0\r\n\r\n")
    if relayed:
        assert (response.complete, response.error) == (True, None)
    else:
        assert isinstance(response.error, Broken)


def test_only_content_length_gives_the_length_whatever_other_headers_hold_digits() -> None:
    response, _ = parsed(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-count: 3\r\n\r\nhello")
    assert (response.content_length, response.complete, response.error) == (5, True, None)
