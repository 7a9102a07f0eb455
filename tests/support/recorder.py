"""A recording upstream for limit tests: what reached it, how much body it got, whether the body ended or the
connection was dropped mid-way; `/held/...` requests wait until the test releases them (an event, not a sleep)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Recorder", "Seen"]

Message = MutableMapping[str, Any]


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body_bytes: int = 0
    outcome: str = "receiving"  # then "complete" (the whole body arrived) or "aborted" (the connection dropped)
    answered: bool = False


class Recorder:
    """The ASGI app. Its state is read from the test thread under a condition variable."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self._changed = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._gate: asyncio.Event | None = None

    async def __call__(
        self, scope: Message, receive: Callable[[], Awaitable[Message]], send: Callable[[Message], Awaitable[None]]
    ) -> None:
        if scope["type"] != "http":
            return
        if self._gate is None:
            self._loop, self._gate = asyncio.get_running_loop(), asyncio.Event()
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        seen = Seen(scope["path"], headers)
        with self._changed:
            self.seen.append(seen)
            self._changed.notify_all()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self._note(seen, outcome="aborted")
                return
            self._note(seen, body_bytes=seen.body_bytes + len(message.get("body", b"")))
            if not message.get("more_body", False):
                break
        self._note(seen, outcome="complete")
        if seen.path.startswith("/held/") and not await self._held(receive):
            return
        body = json.dumps({"path": seen.path, "headers": headers, "body_bytes": seen.body_bytes}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})
        self._note(seen, answered=True)

    async def _held(self, receive: Callable[[], Awaitable[Message]]) -> bool:
        """Wait for release(); False if the client (the sidecar) hung up first."""
        assert self._gate is not None
        released = asyncio.ensure_future(self._gate.wait())
        gone = asyncio.ensure_future(receive())
        done, pending = await asyncio.wait({released, gone}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        return released in done

    def release(self) -> None:
        """Let every request held now go on; later ones are held again."""
        loop = self._loop
        if loop is None:
            return

        def swap() -> None:
            assert self._gate is not None
            self._gate.set()
            self._gate = asyncio.Event()

        loop.call_soon_threadsafe(swap)

    def wait(self, predicate: Callable[[list[Seen]], bool], timeout: float = 15.0) -> list[Seen]:
        """Block (bounded) until `predicate(seen)` holds; returns a copy of what was seen."""
        with self._changed:
            assert self._changed.wait_for(lambda: predicate(self.seen), timeout), f"not seen within {timeout}s"
            return list(self.seen)

    def at(self, path: str) -> list[Seen]:
        with self._changed:
            return [seen for seen in self.seen if seen.path == path]

    def _note(self, seen: Seen, **changes: object) -> None:
        """Only the server's loop writes; the test thread reads under the same condition."""
        with self._changed:
            for name, value in changes.items():
                setattr(seen, name, value)
            self._changed.notify_all()
