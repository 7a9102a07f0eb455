"""Property tests of the upstream response parser (`h1_response.Response`): a valid response of any framing (a length,
chunks with extensions and trailers, the close), after any interim 1xx responses, cut into any pieces, parses to
exactly the status, headers and body it was made of (no body for HEAD); bytes after a complete response, a second
response included, never change it and leave the connection unfit for reuse.

Examples are derandomised (the same every run) and no database is written, so a run is reproducible in CI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.upstream import response as h1_response
from sidecar.upstream.response import Response
from tests.support.examples import examples

SETTINGS = settings(max_examples=examples(250), deadline=None, derandomize=True, database=None)
Headers = list[tuple[bytes, bytes]]

# Names that frame the message or the connection are the framing's own business, added below.
_FRAMING = {b"content-length", b"transfer-encoding", b"connection", b"proxy-connection", b"upgrade", b"keep-alive"}
_TCHAR = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
names = st.text(_TCHAR, min_size=1, max_size=12).map(str.encode).filter(lambda name: name.lower() not in _FRAMING)
# Visible ASCII, obs-text, inner spaces and tabs (field-content, RFC 9110 §5.5): no whitespace at either end.
values = st.binary(max_size=24).map(lambda raw: bytes(b for b in raw if b > 31 and b != 127 or b == 9).strip(b" \t"))
header_lists = st.lists(st.tuples(names, values), max_size=5)
reasons = st.sampled_from([b"", b" ", b" OK", b" Early Hints", b" Not Found", b" \xc3\xa9t\xc3\xa9"])


class Link:
    """The connection under a Response: told only to pause, resume or abort."""

    def __init__(self) -> None:
        self.aborted = False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def abort(self) -> None:
        self.aborted = True


@dataclass(frozen=True)
class Made:
    wire: bytes
    status: int
    headers: Headers
    body: bytes  # what a reader gets: nothing for HEAD
    head: bool
    until_close: bool  # the body ends when the upstream closes


def head_bytes(status: int, reason: bytes, headers: Headers, version: bytes = b"HTTP/1.1") -> bytes:
    lines = [b"%s %d%s" % (version, status, reason), *(name + b": " + value for name, value in headers)]
    return b"\r\n".join(lines) + b"\r\n\r\n"


@st.composite
def chunked(draw: st.DrawFn, body: bytes) -> bytes:
    """The body in chunks: sizes in either case of hex, some with extensions, then the last chunk and trailers."""
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=4)))
    wire = []
    for start, end in zip([0, *cuts], [*cuts, len(body)], strict=True):
        if start == end:
            continue
        size = draw(st.sampled_from([b"%x", b"%X", b"00%x"])) % (end - start)
        extension = draw(st.sampled_from([b"", b";a=b", b';name="a \\" b";flag']))
        wire.append(size + extension + b"\r\n" + body[start:end] + b"\r\n")
    trailers = draw(header_lists)  # trailer fields are not header fields: never in `headers`
    return b"".join(wire) + b"0\r\n" + b"".join(name + b": " + value + b"\r\n" for name, value in trailers) + b"\r\n"


@st.composite
def responses(draw: st.DrawFn) -> Made:
    head = draw(st.booleans())
    interim = b"".join(
        head_bytes(status, reason, headers)
        for status, reason, headers in draw(
            st.lists(st.tuples(st.sampled_from([100, 102, 103]), reasons, header_lists), max_size=2)
        )
    )
    framing = draw(st.sampled_from(["length", "chunked", "close", "none"]))
    status = draw(st.sampled_from([204, 304]) if framing == "none" else st.integers(200, 599).filter(_has_body))
    body = b"" if framing == "none" else draw(st.binary(max_size=200))
    headers = draw(header_lists)
    if framing == "length" or (framing == "none" and status == 304 and draw(st.booleans())):
        headers.insert(draw(st.integers(0, len(headers))), (b"Content-Length", b"%d" % len(body)))
    elif framing == "chunked":
        headers.append((b"transfer-encoding", draw(st.sampled_from([b"chunked", b"Chunked", b"CHUNKED"]))))
    sent = b"" if head else draw(chunked(body)) if framing == "chunked" else body
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"])) if framing == "close" else b"HTTP/1.1"
    wire = interim + head_bytes(status, draw(reasons), headers, version) + sent
    return Made(wire, status, headers, b"" if head else body, head, framing == "close")


def _has_body(status: int) -> bool:
    return status not in (204, 304)


def read_all(response: Response) -> bytes:
    """Every piece `Response.read` hands out; with the whole response fed, it never has to wait."""
    pieces = []
    while True:
        reading = response.read(1.0)
        try:
            reading.send(None)
        except StopIteration as done:
            piece = cast(bytes, done.value)
        else:
            reading.close()
            raise AssertionError("read() waited on a response that was whole")
        if not piece:
            return b"".join(pieces)
        pieces.append(piece)


def fed(made: Made, cuts: list[int]) -> tuple[Response, Link]:
    link = Link()
    response = Response(cast(h1_response.Link, link), no_body=made.head)
    for start, end in zip([0, *sorted(cuts)], [*sorted(cuts), len(made.wire)], strict=True):
        response.feed(made.wire[start:end])
    if made.until_close and not made.head:
        response.ended()
    return response, link


cut_points = st.lists(st.integers(0, 2000), max_size=8)
# What an upstream may send after its answer: another response of each framing, an interim one first, or noise.
seconds = st.sampled_from(
    [
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nsmugg",
        b"HTTP/1.1 204 No Content\r\nx-second: 1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nx-trailer: 1\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 302 Found\r\nlocation: /elsewhere\r\ncontent-length: 0\r\n\r\n",
        b"HTTP/1.0 200 OK\r\n\r\nuntil the close",
        b"0\r\n\r\n",
        b"\r\nnot a response at all",
    ]
)


@SETTINGS
@given(responses(), cut_points)
def test_a_valid_response_in_any_pieces_parses_to_what_was_sent(made: Made, cuts: list[int]) -> None:
    response, link = fed(made, [cut % (len(made.wire) + 1) for cut in cuts])
    assert response.error is None and not link.aborted
    assert (response.status, response.headers) == (made.status, made.headers)
    assert read_all(response) == made.body
    assert response.complete and response.finished
    assert response.keep_alive is not made.until_close


@SETTINGS
@given(responses(), cut_points, seconds)
def test_bytes_after_a_complete_response_never_change_it(made: Made, cuts: list[int], second: bytes) -> None:
    response, _ = fed(made, [cut % (len(made.wire) + 1) for cut in cuts])
    body = read_all(response)
    response.feed(second)
    assert (response.status, response.headers) == (made.status, made.headers)
    assert body + read_all(response) == made.body
    assert response.complete and not response.keep_alive
    assert response.error is None  # the answer stands; only the connection is not reused
