"""An upstream's transfer codings: the sidecar takes the body apart and frames it again for the client, so it relays
`chunked` alone. Any other coding (`gzip, chunked`) would be lost in the re-framing, the client getting the coded bytes
as the content; such a response is refused 502 `upstream_unreachable`, as the other framings HTTP/1.1 does not
allow. In-process gate in front of a raw-socket upstream that sends exactly these bytes."""

from __future__ import annotations

import json
from typing import Final

import pytest

from tests.edge.conftest import Edge
from tests.support.asgi import call
from tests.support.rawupstream import RawUpstream

CHUNKED_OK: Final = b"2\r\nok\r\n0\r\n\r\n"

# The Transfer-Encoding header lines of the upstream's answer -> whether the body reaches the client (else 502).
CODINGS = {
    "chunked": ([b"chunked"], True),
    "chunked-in-upper-case": ([b"Chunked"], True),
    "gzip-then-chunked": ([b"gzip, chunked"], False),
    "deflate-then-chunked": ([b"deflate,chunked"], False),
    "gzip-and-chunked-in-two-lines": ([b"gzip", b"chunked"], False),
    "chunked-twice": ([b"chunked, chunked"], False),
    "chunked-with-a-parameter": ([b"chunked;q=1"], False),
}


@pytest.mark.parametrize(("lines", "relayed"), CODINGS.values(), ids=CODINGS.keys())
async def test_only_chunked_alone_is_relayed(edge: Edge, raw: RawUpstream, lines: list[bytes], relayed: bool) -> None:
    path = "/codings/" + "-".join(line.decode().replace(" ", "") for line in lines)
    head = b"HTTP/1.1 200 OK\r\n" + b"".join(b"Transfer-Encoding: " + line + b"\r\n" for line in lines)
    raw.answers["/app" + path] = lambda _r: head + b"\r\n" + CHUNKED_OK

    answer = await call(edge.app, "GET", "/raw" + path)

    if relayed:
        assert (answer.status, answer.body, answer.ended) == (200, b"ok", True)
        return
    assert answer.status == 502
    assert json.loads(answer.body)["reason"] == "upstream_unreachable"
    assert b"ok" not in answer.body
    assert edge.sample("sidecar_upstream_errors_total", route="raw", error="upstream_unreachable") == 1


async def test_a_coding_without_chunked_is_refused_before_its_body(edge: Edge, raw: RawUpstream) -> None:
    """`Transfer-Encoding: gzip` alone frames the body by the connection's end (RFC 9112 §6.3): the client would get
    gzip bytes as the content. Refused at the head, without waiting for that end (this upstream keeps it open)."""
    raw.answers["/app/codings/gzip-alone"] = lambda _r: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n\x1f\x8b"

    answer = await call(edge.app, "GET", "/raw/codings/gzip-alone")

    assert (answer.status, json.loads(answer.body)["reason"]) == (502, "upstream_unreachable")
