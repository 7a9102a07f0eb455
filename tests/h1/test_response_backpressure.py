"""Backpressure in the upstream response parser (upstream/response.py): reading from the upstream pauses once exactly
512 KiB of the body wait for the client, resumes when the client takes them, and pauses again each time the client
falls behind again; what waits is counted from nothing after each read. The parser fed directly, its connection a
stub that records pauses and resumes."""

from __future__ import annotations

from typing import cast

from sidecar.upstream import response as h1_response
from sidecar.upstream.response import Response
from tests.h1.test_response_properties import Link

_HIGH_WATER = 512 * 1024  # upstream/response.py: response bytes waiting for the client before reading pauses
_BODY = 4 * _HIGH_WATER


class Reading(Link):
    """The connection: whether it reads, and how often it was paused."""

    def __init__(self) -> None:
        super().__init__()
        self.reading = True
        self.pauses = 0

    def pause_reading(self) -> None:
        self.reading, self.pauses = False, self.pauses + 1

    def resume_reading(self) -> None:
        self.reading = True


def started() -> tuple[Response, Reading]:
    link = Reading()
    response = Response(cast(h1_response.Link, link), no_body=False)
    response.feed(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % _BODY)
    return response, link


def take(response: Response) -> bytes:
    """What `read` hands the client now (it has bytes waiting: it does not wait)."""
    reading = response.read(1.0)
    try:
        reading.send(None)
    except StopIteration as done:
        return cast(bytes, done.value)
    reading.close()
    raise AssertionError("read() waited")


def test_reading_pauses_each_time_the_client_falls_behind_again() -> None:
    """A client that reads in bursts: every time 512 KiB wait for it, the upstream is no longer read. Were the
    pause remembered past the read that resumed it, the second burst would buffer the whole body in memory."""
    response, link = started()
    for burst in range(1, 4):
        response.feed(b"b" * _HIGH_WATER)
        assert (link.reading, link.pauses) == (False, burst)
        assert take(response) == b"b" * _HIGH_WATER
        assert link.reading


def test_what_waits_for_the_client_is_counted_afresh_after_each_read() -> None:
    """After a read, one byte short of the bound still reads on; the byte that reaches it pauses."""
    response, link = started()
    response.feed(b"a" * 1000)
    assert take(response) == b"a" * 1000
    response.feed(b"b" * (_HIGH_WATER - 1))
    assert (link.reading, link.pauses) == (True, 0)
    response.feed(b"c")
    assert (link.reading, link.pauses) == (False, 1)
    assert take(response) == b"b" * (_HIGH_WATER - 1) + b"c"
    assert link.reading
