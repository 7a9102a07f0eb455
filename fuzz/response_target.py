"""Fuzz target `upstream_response`: the upstream client's response parsing (upstream/response.py) fed an upstream's
bytes in fuzzer-chosen pieces. Registered in fuzz/targets.py; the same rules as its targets."""

from __future__ import annotations

from typing import cast

from sidecar.upstream import response as h1_response

__all__ = ["split_response_input", "upstream_response"]

Headers = list[tuple[bytes, bytes]]


class _Link:
    """The connection under a Response: it is only told to pause, resume or abort."""

    def __init__(self) -> None:
        self.paused = False
        self.aborted = False

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def abort(self) -> None:
        self.aborted = True


def split_response_input(data: bytes) -> tuple[bool, bool, list[bytes]]:
    """The first byte: bit 0 the request was HEAD, bit 1 the upstream closes after the last piece, bits 2-7 how many
    of the input's last bytes are piece lengths (taken from the end, as libFuzzer's FuzzedDataProvider takes its
    integers, so the response bytes come first): a byte under 0xF0 is that many bytes, 0xF0 and up 1 KiB << (b - 0xF0)
    (a head can be cut past its 64 KiB limit). The response bytes are fed in those pieces, then the rest."""
    flags, stream = (data[0], data[1:]) if data else (0, b"")
    lengths = stream[max(len(stream) - (flags >> 2), 0) :] if flags >> 2 else b""
    stream = stream[: len(stream) - len(lengths)]
    pieces = []
    for length in lengths:
        size = length if length < 0xF0 else 1024 << (length - 0xF0)
        pieces.append(stream[:size])
        stream = stream[size:]
    return bool(flags & 1), bool(flags & 2), [*pieces, stream]


def _read_now(response: h1_response.Response) -> bytes:
    """`Response.read` up to its first wait: it returns the pieces that have arrived without one."""
    reading = response.read(1.0)
    try:
        reading.send(None)
    except StopIteration as done:
        return cast(bytes, done.value)
    reading.close()
    raise AssertionError("read() waited with body pieces in hand")


def _content_length(headers: Headers) -> int | None:
    """The length the upstream declared, read as RFC 9110 does (optional whitespace around the digits)."""
    values = [value.strip(b" \t") for name, value in headers if name.lower() == b"content-length"]
    return int(values[0]) if values and values[0].isdigit() else None


class _Response(h1_response.Response):
    """A Response that also notes what it held when its final head was done: the proxy sends that head on, and a
    response arriving in one piece is already whole by the time the fuzzer looks."""

    final_head: tuple[int, Headers] | None = None
    early_body = 0  # body bytes held when the final head was done

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self.head_done and self.final_head is None:
            self.final_head, self.early_body = (self.status, list(self.headers)), self._buffered


class _Watch:
    """What a Response has shown so far, and the invariants between one look and the next."""

    def __init__(self, response: _Response, link: _Link, no_body: bool) -> None:
        self.response, self.link, self.no_body = response, link, no_body
        self.body = b""
        self.before_head = 0  # bytes fed while the head was not yet done
        self.whole: tuple[int, Headers, bytes] | None = None

    def feed(self, piece: bytes) -> None:
        counted, done = self.before_head, self.response.head_done
        if not done:
            self.before_head += len(piece)
        self.response.feed(piece)  # whatever escapes feed() is a finding
        if self.response.error is None and not self.response.head_done and self.before_head > h1_response._MAX_HEAD:
            raise AssertionError("a response head grew past the limit without failing")
        if self.response.head_done and not done and counted > h1_response._MAX_HEAD:
            raise AssertionError("a response head past the limit was accepted")
        self.look()

    def look(self) -> None:
        response = self.response
        if response.error is not None and (response.keep_alive or not self.link.aborted):
            raise AssertionError("a failed response left its connection open for reuse")
        if response._pieces:
            self.body += _read_now(response)
        if response.final_head is not None:
            self._head(response.final_head, response.early_body, (response.status, response.headers))
        if self.no_body and self.body:
            raise AssertionError("the answer to HEAD has a body")
        if response.complete and response.error is None and response.final_head is not None:
            self._whole(response.status, response.headers, response.final_head[1])

    def _head(self, head: tuple[int, Headers], early_body: int, now: tuple[int, Headers]) -> None:
        status, headers = head
        if not 200 <= status <= 599:
            raise AssertionError(f"final status {status} outside 200-599")
        if len(headers) > h1_response._MAX_HEADERS:
            raise AssertionError("more headers than the limit")
        if early_body:
            raise AssertionError("body bytes arrived before the final head (an interim response's body)")
        if now != head:
            raise AssertionError("the head changed after it was done (a trailer or a second response)")

    def _whole(self, status: int, headers: Headers, head: Headers) -> None:
        if self.whole is None:
            self.whole = (status, list(headers), self.body)
            length = None if self.no_body or status in (204, 304) else _content_length(head)
            if length is not None and len(self.body) != length:
                raise AssertionError(f"a complete body of {len(self.body)} bytes under Content-Length {length}")
        elif self.whole != (status, headers, self.body):
            raise AssertionError("bytes after a complete response changed it (a second response accepted)")


def upstream_response(data: bytes) -> None:
    """`h1_response.Response` fed an upstream's bytes in fuzzer-chosen pieces (see `split_response_input`), then
    maybe the upstream's close: nothing escapes `feed()`/`ended()`; a final head has a 2xx-5xx status, at most 256
    headers and 64 KiB, and never changes; HEAD gets no body; a complete response keeps its Content-Length and is never
    changed by later bytes; a failure is never kept alive; a close never ends a body framed by length or chunks.
    As over a real transport, nothing arrives after an abort but the close."""
    no_body, close, pieces = split_response_input(data)
    link = _Link()
    response = _Response(cast(h1_response.Link, link), no_body)
    watch = _Watch(response, link, no_body)
    for piece in pieces:
        if link.aborted:  # a transport delivers nothing after abort(), then reports the connection lost
            break
        watch.feed(piece)
    if close or link.aborted:
        framed = response.head_done and not response.complete and response.keep_alive  # llhttp needs no close
        response.ended()
        watch.look()
        if framed and response.complete and response.error is None:
            raise AssertionError("the upstream's close ended a body framed by length or chunks (cut short)")
