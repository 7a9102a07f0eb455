"""A download upstream for stall tests: every GET is answered with `size` bytes (or, for a path ending in a number,
that many), written as fast as the connection takes them. Per connection it records the bytes written and how it
ended (idle after a whole response, or dropped by the sidecar). It runs on its own event loop in a thread; the test
thread reads its state under a condition variable."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Download", "Served"]

_CHUNK = b"d" * 65536


@dataclass
class Served:
    """One upstream connection."""

    written: int = 0  # body bytes handed to the kernel so far (the last exchange on the connection)
    exchanges: int = 0
    state: str = "streaming"  # then "idle" (a response complete, waiting for the next request) or "dropped"


class Download:
    def __init__(self, size: int) -> None:
        self.size = size
        self.served: list[Served] = []
        self._changed = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self._thread.start()
        assert started.wait(10), "the download upstream did not start"

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def wait(self, predicate: Callable[[list[Served]], bool], timeout: float = 30.0) -> list[Served]:
        """Block (bounded) until `predicate(served)` holds; returns a copy of every connection's record."""
        with self._changed:
            assert self._changed.wait_for(lambda: predicate(self.served), timeout), f"not seen within {timeout}s"
            return [Served(s.written, s.exchanges, s.state) for s in self.served]

    def stop(self) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._connected, "127.0.0.1", 0))
        started.set()
        self._loop.run_forever()
        self._loop.close()

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        served = Served()
        with self._changed:
            self.served.append(served)
            self._changed.notify_all()
        try:
            while await self._answer(reader, writer, served):
                self._note(served, state="idle")
        except (ConnectionError, asyncio.IncompleteReadError):
            self._note(served, state="dropped")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, served: Served) -> bool:
        """One exchange; False when the sidecar closed the connection between requests."""
        try:
            request = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise
            return False
        self._note(served, state="streaming", written=0, exchanges=served.exchanges + 1)
        last = request.split(b" ", 2)[1].rsplit(b"/", 1)[-1]
        size = int(last) if last.isdigit() else self.size
        head = b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: %d\r\n\r\n" % size
        writer.write(head)
        left = size
        while left:
            piece = _CHUNK[: min(left, len(_CHUNK))]
            writer.write(piece)
            await writer.drain()  # raises ConnectionResetError once the sidecar drops the connection
            left -= len(piece)
            self._note(served, written=served.written + len(piece))
        return True

    def _note(self, served: Served, **changes: object) -> None:
        with self._changed:
            for name, value in changes.items():
                setattr(served, name, value)
            self._changed.notify_all()
