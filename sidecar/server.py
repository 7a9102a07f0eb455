"""uvicorn servers on sockets we bind, in one uvloop loop, with our own signal handling.

Two uvicorn servers that each install signal handlers hang on shutdown, so ours install none: SIGTERM and
SIGINT set a flag on every server and the loop does the rest (uvicorn's `handle_exit` pattern, owned here).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

import uvicorn

from sidecar.options import Address

__all__ = ["Listener", "bind", "run_listeners"]

ASGIApp = Callable[..., Awaitable[None]]


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # signals are ours (see module docstring)


@dataclass(frozen=True, slots=True)
class Listener:
    name: str
    app: ASGIApp
    sock: socket.socket

    @property
    def address(self) -> Address:
        host, port = self.sock.getsockname()[:2]
        return Address(host, port)


def bind(address: Address) -> socket.socket:
    """Bind before serving, so port 0 works (tests) and a taken port fails before anything starts."""
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address.host, address.port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _config(app: ASGIApp, **overrides: Any) -> uvicorn.Config:
    settings: dict[str, Any] = {
        "loop": "none",  # the loop is ours (uvloop, created in run_listeners' caller)
        "http": "httptools",
        "ws": "none",
        "lifespan": "off",
        "server_header": False,  # the upstream's own Server/Date pass through unchanged
        "date_header": False,
        "access_log": False,  # the gate writes one structured line per request itself
        "proxy_headers": False,  # never take the client address from X-Forwarded-For: it is the caller's to forge
        "log_config": None,
        "timeout_keep_alive": 75,
        "timeout_graceful_shutdown": 30,
    }
    settings.update(overrides)
    return uvicorn.Config(app, **settings)


async def run_listeners(listeners: Sequence[Listener], on_started: Callable[[], Awaitable[None]] | None = None) -> None:
    """Serve every listener until SIGTERM/SIGINT (or `stop()` from the loop), then shut all down together."""
    servers = [_Server(_config(listener.app)) for listener in listeners]
    loop = asyncio.get_running_loop()

    def stop() -> None:
        for server in servers:
            server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    try:
        tasks = [
            asyncio.ensure_future(server.serve(sockets=[listener.sock]))
            for server, listener in zip(servers, listeners, strict=True)
        ]
        while not all(server.started for server in servers):
            if any(task.done() for task in tasks):
                break
            await asyncio.sleep(0.01)  # uvicorn offers no started event; this bounds start-up only
        if on_started is not None and all(server.started for server in servers):
            await on_started()
        await asyncio.gather(*tasks)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
