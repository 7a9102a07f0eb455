"""An upstream on a real loopback socket that answers with exactly the bytes a test wrote: what an unusual or hostile
HTTP server sends (a `304` with a length, `Content_Length`, its secret URL in every header), which no ASGI server
would let an app send. Each request is recorded as received (head lines in order, body) for assertions."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RawUpstream", "Received"]


@dataclass(frozen=True)
class Received:
    line: bytes  # the request line, e.g. b"GET /a?b HTTP/1.1"
    headers: list[tuple[bytes, bytes]]  # every header line in order: names lower-cased, values as sent
    body: bytes

    @property
    def target(self) -> bytes:
        return self.line.split(b" ")[1]

    @property
    def path(self) -> str:
        return self.target.partition(b"?")[0].decode("latin-1")

    @property
    def query(self) -> bytes:
        return self.target.partition(b"?")[2]


Answer = Callable[[Received], bytes]


class RawUpstream:
    """Answers each request with `answers[path](request)` (a 404 for a path without one), keeping the connection
    open for the next request until the peer closes it. Every socket wait is bounded; `stop` closes everything."""

    def __init__(self) -> None:
        self.answers: dict[str, Answer] = {}
        self.received: list[Received] = []
        self._changed = threading.Condition()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._connections: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    @property
    def url(self) -> str:
        host, port = self._listener.getsockname()[:2]
        return f"http://{host}:{port}"

    def at(self, path: str, timeout: float = 10.0) -> list[Received]:
        """The requests received for `path` so far, waiting (bounded) until there is at least one."""
        with self._changed:
            self._changed.wait_for(lambda: any(seen.path == path for seen in self.received), timeout)
            return [seen for seen in self.received if seen.path == path]

    def stop(self) -> None:
        # shutdown wakes the thread blocked in accept() (close alone does not, on Linux): no join timeout to wait out
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for connection in list(self._connections):
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            connection.close()
        for thread in [self._accepting, *self._threads]:
            thread.join(timeout=10)

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return  # the listener was closed
            connection.settimeout(30)
            self._connections.append(connection)
            thread = threading.Thread(target=self._serve, args=(connection,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, connection: socket.socket) -> None:
        pending = b""
        try:
            while True:
                while b"\r\n\r\n" not in pending:
                    chunk = connection.recv(65536)
                    if not chunk:
                        return
                    pending += chunk
                head, _, pending = pending.partition(b"\r\n\r\n")
                line, *lines = head.split(b"\r\n")
                fields = (item.partition(b":") for item in lines)
                headers = [(name.strip().lower(), value.strip()) for name, _, value in fields]
                length = int(next((value for name, value in headers if name == b"content-length"), b"0"))
                while len(pending) < length:
                    chunk = connection.recv(65536)
                    if not chunk:
                        return
                    pending += chunk
                request = Received(line, headers, pending[:length])
                pending = pending[length:]
                with self._changed:
                    self.received.append(request)
                    self._changed.notify_all()
                answer = self.answers.get(request.path, _not_found)
                connection.sendall(answer(request))
        except OSError:
            return
        finally:
            connection.close()


def _not_found(_request: Received) -> bytes:
    return b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
