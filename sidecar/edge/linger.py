"""Lingering close (nginx's `lingering_close`): an answer sent while the client may still be sending reaches it.

Closing a socket that holds unread input makes the kernel send a reset (RST) instead of an ordinary end: the reset
can discard the answer before the client has read it, and fails the client's next write, so a client still sending
(a head trickled in, the rest of a refused body) sees "connection reset" instead of its 400/408/413/431. So after
such an answer the connection ends its writing (FIN once the answer is sent), reads and drops what the client still
sends for at most LINGER_SECONDS and LINGER_BYTES, then closes; a client that ends its side first closes it at once.
nginx lingers up to 30 s (`lingering_time`); a refused client is worth less here, and the bounds keep what one can
hold small. A TLS connection cannot end its writing alone (asyncio's TLS transports cannot write EOF): it closes as
before (its close_notify, then the TLS shutdown).

uvicorn closes the connection itself after a response it was told to close (`Connection: close`, or a request we
refused mid-body): it sees the connection through `Closing`, whose `close()` lingers when the protocol says the
client may still be sending, and closes at once otherwise (an idle keep-alive connection, a shutdown).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final

__all__ = ["LINGER_BYTES", "LINGER_SECONDS", "Closing"]

LINGER_SECONDS: Final = 2.0  # the longest a refused connection stays open for the client's leftover input
LINGER_BYTES: Final = 64 * 1024  # the most of it read and dropped; a client sending more is cut off at once


class Closing(asyncio.Transport):
    """The connection's transport, with a lingering close. Everything else is the transport's own."""

    def __init__(
        self,
        transport: asyncio.Transport,
        loop: asyncio.AbstractEventLoop,
        may_send: Callable[[], bool],
        resume_reading: Callable[[], None],
    ) -> None:
        super().__init__()
        self.raw = transport
        self.lingering = False
        self._loop = loop
        self._may_send = may_send  # whether the client may still be sending (then `close()` lingers)
        self._resume_reading = resume_reading  # the protocol's flow control: reading may be paused
        self._left = LINGER_BYTES
        self._timer: asyncio.TimerHandle | None = None

    def linger(self) -> None:
        """Ends writing once the answer is out (FIN), then reads and drops input until the client ends its side
        (its EOF closes the transport) or a bound is reached. Closes at once where it cannot half-close (TLS)."""
        raw = self.raw
        if self.lingering or raw.is_closing() or not raw.can_write_eof():
            self.end()
            return
        self.lingering = True
        raw.write_eof()
        self._resume_reading()
        self._timer = self._loop.call_later(LINGER_SECONDS, self.end)

    def dropped(self, size: int) -> None:
        """Input read while lingering: dropped; past LINGER_BYTES the connection closes."""
        self._left -= size
        if self._left < 0:
            self.end()

    def end(self) -> None:
        """Closes now (input still unread: the kernel resets the connection, as nginx after lingering)."""
        self.forget()
        self.raw.close()

    def forget(self) -> None:
        """The connection is gone: no timer outlives it."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # --- asyncio.Transport ---------------------------------------------------------------------------------------

    def close(self) -> None:
        if self._may_send():
            self.linger()
        else:
            self.end()

    def is_closing(self) -> bool:
        return self.lingering or self.raw.is_closing()

    def abort(self) -> None:
        self.forget()
        self.raw.abort()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.raw.write(data)

    def writelines(self, list_of_data: Any) -> None:
        self.raw.writelines(list_of_data)

    def write_eof(self) -> None:
        self.raw.write_eof()

    def can_write_eof(self) -> bool:
        return self.raw.can_write_eof()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.raw.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self.raw.pause_reading()

    def resume_reading(self) -> None:
        self.raw.resume_reading()

    def is_reading(self) -> bool:
        return self.raw.is_reading()

    def get_write_buffer_size(self) -> int:
        return self.raw.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self.raw.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.raw.set_write_buffer_limits(high, low)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.raw.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.raw.get_protocol()
