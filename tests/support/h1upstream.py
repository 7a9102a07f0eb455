"""Scripted upstreams on real sockets on 127.0.0.1 for the upstream client's tests: each connection runs a script
(any behaviour an HTTP/1.1 server, or a hostile one, can show), and `call` makes one exchange as the gate does."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

from sidecar.edge.forward import Forwarded, Forwarder

__all__ = [
    "Reader",
    "Request",
    "Script",
    "Upstream",
    "Writer",
    "answer",
    "call",
    "keep_answering",
    "read_chunks",
    "read_request",
    "serving",
]

Reader, Writer = asyncio.StreamReader, asyncio.StreamWriter


@dataclass
class Upstream:
    url: str
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)  # request lines, in the order read


@dataclass
class Request:
    line: bytes
    headers: dict[bytes, bytes]
    body: bytes


async def read_request(reader: Reader, upstream: Upstream) -> Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    line, *lines = head[:-4].split(b"\r\n")
    headers = {name.lower(): value for name, _, value in (item.partition(b": ") for item in lines)}
    upstream.requests.append(line)
    if b"content-length" in headers:
        body = await reader.readexactly(int(headers[b"content-length"]))
    elif headers.get(b"transfer-encoding") == b"chunked":
        body = b"".join([piece async for piece in read_chunks(reader)])
    else:
        body = b""
    return Request(line, headers, body)


async def read_chunks(reader: Reader) -> AsyncIterator[bytes]:
    while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
        yield (await reader.readexactly(size + 2))[:-2]
    await reader.readuntil(b"\r\n")


def answer(body: bytes = b"ok", *extra: bytes) -> bytes:
    head = [b"HTTP/1.1 200 OK", b"content-length: %d" % len(body), *extra]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


Script = Callable[[Reader, Writer, Upstream], Awaitable[None]]


@contextlib.asynccontextmanager
async def serving(script: Script, tls: Any = None) -> AsyncIterator[Upstream]:
    """The script runs once per connection; at the end every connection is closed and every script has ended."""
    upstream = Upstream("")
    scripts: set[asyncio.Task[Any]] = set()
    writers: list[Writer] = []

    async def connected(reader: Reader, writer: Writer) -> None:
        upstream.connections += 1
        scripts.add(cast(asyncio.Task[Any], asyncio.current_task()))
        writers.append(writer)
        with contextlib.suppress(ConnectionError):
            await script(reader, writer, upstream)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(connected, "127.0.0.1", 0, ssl=tls)
    upstream.url = f"{'https' if tls else 'http'}://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        async with asyncio.timeout(20):
            yield upstream
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await server.wait_closed()
        if scripts:
            await asyncio.wait(scripts, timeout=5)


async def keep_answering(reader: Reader, writer: Writer, upstream: Upstream) -> None:
    while (request := await read_request(reader, upstream)) is not None:
        writer.write(answer(b"you sent " + request.body))


async def call(
    forwarder: Forwarder, url: str, method: str = "GET", pieces: list[bytes] | None = None, timeout: float = 5.0
) -> tuple[Forwarded, bytes]:
    """One exchange as the gate makes it: the body in these pieces, then a client that stays connected; `timeout`
    is the route's."""
    pending = list(pieces or [])
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if pending:
            return {"type": "http.request", "body": pending.pop(0), "more_body": bool(pending)}
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: Any) -> None:
        sent.append(message)

    forwarded = await forwarder.forward(method, url, [], receive, send, timeout, bool(pieces), [])
    return forwarded, b"".join(message.get("body", b"") for message in sent[1:])
