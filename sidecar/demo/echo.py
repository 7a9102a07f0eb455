"""A demo echo upstream as a plain ASGI app: it describes each request back, and streams, stalls or fails on demand.

Routes (GET only; every other request is echoed):
- `/stream/bytes/{n}`: n bytes of `stream_pattern(n)` with Content-Length; `/stream/chunked/{n}`: the same, chunked.
- `/status/{code}`: an empty response with that status.
- `/slow/{seconds}`: answers 200 after that long, or never if the client leaves first.
- anything else: 200 JSON with method, raw path, query, headers, and the body's size and sha256.

Bodies are streamed both ways, never held, so it can stand behind the proxy for gigabyte transfers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
from collections.abc import AsyncIterator, Iterator
from typing import Final

from sidecar.edge.asgi import Receive, Scope, Send, lifespan

__all__ = ["CHUNK_SIZE", "MAX_SLOW_SECONDS", "MAX_STREAM_BYTES", "EchoUpstream", "stream_pattern"]


CHUNK_SIZE: Final = 64 * 1024
MAX_STREAM_BYTES: Final = 2 * 1024**3
MAX_SLOW_SECONDS: Final = 300.0

# A prime period that does not divide the chunk size, so a byte lost, doubled or shifted anywhere changes the hash.
_PERIOD: Final = 251
_PATTERN: Final = bytes(range(_PERIOD)) * (CHUNK_SIZE // _PERIOD + 2)

_STREAM = re.compile(r"/stream/(bytes|chunked)/([^/]*)")
_STATUS = re.compile(r"/status/([^/]*)")
_SLOW = re.compile(r"/slow/([^/]*)")
_INTEGER = re.compile(r"[0-9]{1,10}")
_SECONDS = re.compile(r"[0-9]{1,3}(\.[0-9]{1,6})?")  # no exponents, nan or inf to worry about


def stream_pattern(n: int) -> Iterator[bytes]:
    """The n bytes the stream routes send, in CHUNK_SIZE pieces; tests hash it to check a transfer."""
    sent = 0
    while sent < n:
        size = min(CHUNK_SIZE, n - sent)
        offset = sent % _PERIOD
        yield _PATTERN[offset : offset + size]
        sent += size


class EchoUpstream:
    """The ASGI app; stateless, so one instance may serve any number of servers."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
        elif scope["type"] == "http":
            await _http(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1003})


async def _http(scope: Scope, receive: Receive, send: Send) -> None:
    path: str = scope["path"]
    if scope["method"] != "GET":
        await _echo(scope, receive, send)
    elif match := _STREAM.fullmatch(path):
        await _stream(receive, send, match[2], sized=match[1] == "bytes")
    elif match := _STATUS.fullmatch(path):
        await _status(send, match[1])
    elif match := _SLOW.fullmatch(path):
        await _slow(receive, send, match[1])
    else:
        await _echo(scope, receive, send)


async def _echo(scope: Scope, receive: Receive, send: Send) -> None:
    size, digest = 0, hashlib.sha256()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return  # the client left: nobody to answer
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        digest.update(chunk)
        if not message.get("more_body", False):
            break
    description = {
        "method": scope["method"],
        "path": _raw_path(scope),
        "query": scope.get("query_string", b"").decode("latin-1"),
        "headers": _headers(scope),
        "body_bytes": size,
        "body_sha256": digest.hexdigest(),
    }
    await _respond(send, 200, json.dumps(description).encode(), b"application/json")


def _raw_path(scope: Scope) -> str:
    """The path as the client sent it (`%2F` stays `%2F`), without the query string some servers leave on it."""
    raw: bytes | None = scope.get("raw_path")
    if raw is None:
        return str(scope["path"])
    return raw.partition(b"?")[0].decode("latin-1")


def _headers(scope: Scope) -> dict[str, str]:
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


async def _stream(receive: Receive, send: Send, raw_size: str, *, sized: bool) -> None:
    if not _INTEGER.fullmatch(raw_size) or int(raw_size) > MAX_STREAM_BYTES:
        await _bad_request(send, f"size must be an integer from 0 to {MAX_STREAM_BYTES}")
        return
    size = int(raw_size)
    headers = [(b"content-type", b"application/octet-stream")]
    if sized:
        headers.append((b"content-length", str(size).encode()))
    async with _disconnect_watch(receive) as gone:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for chunk in stream_pattern(size):
            # uvicorn silently drops writes after a disconnect; stop rather than generate gigabytes for nobody.
            if gone.is_set():
                return
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            # Let the watcher run: a send that is not backpressured never yields, so it would never see the disconnect.
            await asyncio.sleep(0)
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _status(send: Send, raw_code: str) -> None:
    code = int(raw_code) if _INTEGER.fullmatch(raw_code) else 0
    if not 200 <= code <= 599:
        await _bad_request(send, "status must be an integer from 200 to 599")
        return
    await _respond(send, code, b"", None)


async def _slow(receive: Receive, send: Send, raw_seconds: str) -> None:
    seconds = float(raw_seconds) if _SECONDS.fullmatch(raw_seconds) else -1.0
    if not 0 <= seconds <= MAX_SLOW_SECONDS:
        await _bad_request(send, f"seconds must be a decimal from 0 to {MAX_SLOW_SECONDS:g}")
        return
    async with _disconnect_watch(receive) as gone:
        # The stall is the fault being simulated; end it early if the client (a timed-out proxy) hangs up,
        # so a server shutting down is not kept waiting for an answer nobody reads.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(gone.wait(), timeout=seconds)
            return
    await _respond(send, 200, json.dumps({"slept": seconds}).encode(), b"application/json")


@contextlib.asynccontextmanager
async def _disconnect_watch(receive: Receive) -> AsyncIterator[asyncio.Event]:
    """An event set when the client disconnects; any request body is read and dropped meanwhile."""
    gone = asyncio.Event()

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        gone.set()

    task = asyncio.create_task(watch())
    try:
        yield gone
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _bad_request(send: Send, detail: str) -> None:
    await _respond(send, 400, json.dumps({"error": detail}).encode(), b"application/json")


async def _respond(send: Send, status: int, body: bytes, content_type: bytes | None) -> None:
    headers = [(b"content-type", content_type)] if content_type else []
    # 204 and 304 must not carry Content-Length (RFC 9110 §8.6); every other response states its size.
    if status not in (204, 304):
        headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
