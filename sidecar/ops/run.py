"""The sidecar's run loop: the proxy and admin listeners on bound sockets, the key fetches and the policy
reloader, until a signal has drained them. One process's whole life; `serve`, the workers and the demo run it."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from sidecar.edge.conncap import ConnectionCap
from sidecar.edge.forward_auth import ForwardAuth
from sidecar.edge.gate import Gate
from sidecar.edge.protocol import Guard, protocol_for
from sidecar.edge.runtime import Runtime
from sidecar.edge.tls import ListenerTls, tls_protocol_for
from sidecar.observe import log
from sidecar.observe.metrics import Metrics
from sidecar.ops.admin import admin_app
from sidecar.ops.admin_guard import ADMIN_IDLE_TIMEOUT, AdminGuard
from sidecar.ops.reload import PolicyReloader
from sidecar.ops.server import Hooks, Listener, run_listeners
from sidecar.ops.tls_watch import CertificateWatcher
from sidecar.options import ServeOptions
from sidecar.policy.model import Policy

__all__ = ["run_sidecar", "single_process_exposition"]


def single_process_exposition(registry: CollectorRegistry) -> Callable[[], tuple[bytes, str]]:
    return lambda: (generate_latest(registry), CONTENT_TYPE_LATEST)


async def run_sidecar(
    policy: Policy,
    digest: str,
    proxy: socket.socket,
    admin: socket.socket,
    options: ServeOptions,
    *,
    reload_from: str | None = None,
    before: Sequence[Listener] = (),
    on_ready: Callable[[], None] | None = None,
    exposition: Callable[[CollectorRegistry], Callable[[], tuple[bytes, str]]] = single_process_exposition,
) -> None:
    """Run the proxy and admin listeners (and `before`, e.g. the demo's issuer) until a signal has drained them."""
    registry = CollectorRegistry()
    runtime = Runtime.create(policy, digest, Metrics(registry))
    runtime.audit_all = options.audit
    forward_auth = ForwardAuth.configured(runtime, options)
    # HTTPS on the proxy listener only: probes and Prometheus reach the admin listener, on its own port, in plain HTTP.
    watcher = (
        CertificateWatcher(options.tls, options.reload_interval, options.reload_settle)
        if options.tls is not None
        else None
    )
    tls = watcher.serving(ListenerTls(options.tls, runtime.metrics)) if watcher and options.tls is not None else None
    proxy_protocol = protocol_for(Guard(runtime, ConnectionCap(options.max_connections, runtime.metrics)))
    listeners = [
        *before,
        Listener(
            "proxy",
            Gate(runtime, forward_auth),
            proxy,
            http=tls_protocol_for(proxy_protocol, tls) if tls is not None else proxy_protocol,
        ),
        Listener(
            "admin",
            admin_app(runtime, exposition(registry), runtime.metrics.admin_refused),
            admin,
            stop_last=True,
            http=protocol_for(AdminGuard(runtime)),  # limits of its own: no token is needed to send to it
            idle_timeout=ADMIN_IDLE_TIMEOUT,
        ),
    ]
    reloader = (
        PolicyReloader(runtime, reload_from, os.environ, options.reload_interval, options.reload_settle)
        if reload_from
        else None
    )
    background: list[asyncio.Future[Any]] = []

    async def started() -> None:
        https = {"proxy"} if tls is not None else set()
        fields = {item.name: f"{'https' if item.name in https else 'http'}://{item.address}" for item in listeners}
        fields.update(policy=policy.source, hash=digest, routes=str(len(policy.routes)))
        log.logger.info("listening", extra={"fields": fields})
        runtime.fetch_keys(on_ready)
        if reloader is not None:
            background.append(asyncio.ensure_future(reloader.watch()))
        if watcher is not None:
            background.append(asyncio.ensure_future(watcher.watch()))

    def reload() -> None:
        if reloader is not None:
            background.append(asyncio.ensure_future(reloader.reload("sighup")))
        if tls is not None:
            tls.reload("sighup")

    def draining() -> None:
        runtime.draining = True

    hooks = Hooks(started, draining, reload, options.drain_delay, options.grace)
    try:
        await run_listeners(listeners, hooks)
    finally:
        for task in background:
            task.cancel()
        await runtime.close()
        log.flush()  # the buffered access lines, before a worker's os._exit
    log.logger.info("stopped")
