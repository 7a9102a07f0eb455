"""Drive an ASGI app in-process as a server would: one scope, a receive that hands out the body in pieces (then
waits, or says the client left), and a send that records every message. No server, no socket on the client side."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Answer", "call"]

Message = MutableMapping[str, Any]
App = Callable[[Message, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]


@dataclass
class Answer:
    """What the app sent: the status, every header in order (names as sent), and the body's pieces."""

    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    pieces: list[bytes] = field(default_factory=list)
    ended: bool = False  # the last body message (more_body false) was sent

    @property
    def body(self) -> bytes:
        return b"".join(self.pieces)

    def values(self, name: str) -> list[bytes]:
        """Every value of header `name` (case-insensitive), in order: a list, so duplicates show."""
        wanted = name.lower().encode("latin-1")
        return [value for key, value in self.headers if key.lower() == wanted]


async def call(
    app: App,
    method: str,
    target: str | bytes,
    headers: Sequence[tuple[str, str]] = (),
    body: Sequence[bytes] = (),
    *,
    client: tuple[str, int] = ("127.0.0.1", 50000),
    disconnect: asyncio.Event | None = None,
    body_ends: bool = True,
    extensions: dict[str, Any] | None = None,
    into: Answer | None = None,
) -> Answer:
    """One request. `target` is the raw request target (path and query, as on the wire). `body` pieces arrive one
    per receive (the last one ends the body unless `body_ends` is false: the client is still sending); then receive
    waits until `disconnect` is set (the client leaving), as a server's does. The answer's pieces are kept as sent,
    in `into` when given (to see what was sent before the app raised)."""
    raw = target.encode("latin-1") if isinstance(target, str) else target
    raw_path, _, query = raw.partition(b"?")
    scope: Message = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": raw_path.decode("latin-1"),
        "raw_path": raw_path,
        "query_string": query,
        "root_path": "",
        "headers": [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers],
        "client": client,
        "server": ("127.0.0.1", 8080),
        "extensions": extensions or {},
    }
    pieces = list(body) or [b""]  # no body: one empty message, as servers send
    left = disconnect or asyncio.Event()

    async def receive() -> Message:
        if pieces:
            piece = pieces.pop(0)
            return {"type": "http.request", "body": piece, "more_body": bool(pieces) or not body_ends}
        await left.wait()
        return {"type": "http.disconnect"}

    answer = into if into is not None else Answer()

    async def send(message: Message) -> None:
        assert not answer.ended, f"sent after the end: {message['type']}"
        if message["type"] == "http.response.start":
            assert answer.status == 0, "a second response start"
            answer.status, answer.headers = message["status"], list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            assert answer.status, "a body before the response start"
            answer.pieces.append(bytes(message.get("body", b"")))
            answer.ended = not message.get("more_body", False)

    await app(scope, receive, send)
    return answer
