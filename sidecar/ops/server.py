"""uvicorn servers on sockets we bind, in one uvloop loop, with our own signal handling and drain.

Two uvicorn servers that each install signal handlers hang on shutdown, so ours install none: a signal sets flags
and the loop does the rest (uvicorn's `handle_exit` pattern, owned here). SIGTERM drains: /readyz turns 503 at once,
the proxy keeps serving for `drain_delay` (so Kubernetes stops sending), then stops accepting and lets in-flight
requests finish within `grace`; the admin listener (and the demo's helpers) stop last.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from sidecar.edge.asgi import ASGIApp
from sidecar.observe.log import logger
from sidecar.options import Address

__all__ = ["Hooks", "Listener", "bind", "run_listeners"]


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # signals are ours (see module docstring)


@dataclass(frozen=True, slots=True)
class Listener:
    name: str
    app: ASGIApp
    sock: socket.socket
    stop_last: bool = False  # admin and helpers: up until the proxy has drained
    http: type[asyncio.Protocol] | None = None  # the connection protocol; None: uvicorn's httptools one
    idle_timeout: float = 75.0  # a kept-alive connection is closed after this long without a request

    @property
    def address(self) -> Address:
        host, port = self.sock.getsockname()[:2]
        return Address(host, port)


@dataclass(slots=True)
class Hooks:
    started: Callable[[], Awaitable[None]] | None = None
    draining: Callable[[], None] | None = None  # SIGTERM/SIGINT received: readiness goes down
    reload: Callable[[], None] | None = None  # SIGHUP
    drain_delay: float = 5.0
    grace: float = 25.0
    _stopping: list[int] = field(default_factory=list)


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


def _config(listener: Listener, grace: float) -> uvicorn.Config:
    settings: dict[str, Any] = {
        "loop": "none",  # the loop is ours (uvloop, created by the caller)
        "http": listener.http or "httptools",
        "ws": "none",
        "lifespan": "off",
        "server_header": False,  # the upstream's own Server/Date pass through unchanged
        "date_header": False,
        "access_log": False,  # the gate writes one structured line per request itself
        "proxy_headers": False,  # never take the client address from X-Forwarded-For: it is the caller's to forge
        "log_config": None,
        "timeout_keep_alive": listener.idle_timeout,
        "timeout_graceful_shutdown": grace,
    }
    return uvicorn.Config(listener.app, **settings)


async def run_listeners(listeners: Sequence[Listener], hooks: Hooks) -> None:
    """Serve every listener until a signal, then drain and shut down in order."""
    servers = [(_Server(_config(listener, hooks.grace)), listener) for listener in listeners]
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(sig: int) -> None:
        if hooks._stopping and sig == signal.SIGINT:  # Ctrl-C again: stop waiting for anything
            for server, _ in servers:
                server.force_exit = server.should_exit = True
        hooks._stopping.append(sig)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    if hooks.reload is not None:
        loop.add_signal_handler(signal.SIGHUP, hooks.reload)
    try:
        tasks = {
            listener.name: asyncio.ensure_future(server.serve(sockets=[listener.sock])) for server, listener in servers
        }
        if await _started([server for server, _ in servers], tasks.values()) and hooks.started is not None:
            await hooks.started()
        await _stop_on(stop, servers, tasks, hooks)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)


async def _started(servers: Sequence[uvicorn.Server], tasks: Any) -> bool:
    while not all(server.started for server in servers):
        if any(task.done() for task in tasks):
            return False
        await asyncio.sleep(0.01)  # uvicorn offers no started event; this bounds start-up only
    return True


async def _stop_on(
    stop: asyncio.Event,
    servers: Sequence[tuple[_Server, Listener]],
    tasks: Mapping[str, asyncio.Future[None]],
    hooks: Hooks,
) -> None:
    done: asyncio.Future[list[None]] = asyncio.ensure_future(asyncio.gather(*tasks.values()))
    waiter: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    await asyncio.wait([done, waiter], return_when=asyncio.FIRST_COMPLETED)
    if done.done():  # a server ended by itself (start-up failure): surface its error
        waiter.cancel()
        await done
        return
    if hooks.draining is not None:
        hooks.draining()
    if hooks._stopping[0] == signal.SIGTERM and hooks.drain_delay > 0:
        logger.info("draining", extra={"fields": {"drain_delay_s": hooks.drain_delay, "grace_s": hooks.grace}})
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(done), hooks.drain_delay)  # keeps serving meanwhile
    logger.info("closing listeners", extra={"fields": {"grace_s": hooks.grace}})
    for stop_last in (False, True):
        group = [tasks[listener.name] for server, listener in servers if listener.stop_last is stop_last]
        for server, listener in servers:
            if listener.stop_last is stop_last:
                server.should_exit = True
        await asyncio.gather(*group)
    await done
