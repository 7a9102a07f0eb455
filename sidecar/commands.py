"""`serve` and `check`: load the policy, report errors as FILE:LINE, bind, and run the sidecar."""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable, Mapping, Sequence

import uvloop
from prometheus_client import CollectorRegistry

from sidecar import log
from sidecar.app import Gate, admin_app
from sidecar.metrics import Metrics
from sidecar.options import Address, ServeOptions
from sidecar.policy.load import PolicyError, load_policy
from sidecar.policy.model import Anyone, Policy
from sidecar.runtime import Runtime
from sidecar.server import Listener, bind, run_listeners

__all__ = ["check_command", "run_sidecar", "serve_command"]


def check_command(config: str | None) -> int:
    if not config:
        print("sidecar check: no policy file: pass --config FILE or set SIDECAR_CONFIG", file=sys.stderr)
        return 1
    policy = _load(config)
    if policy is None:
        return 1
    for warning in policy.warnings:
        print(warning, file=sys.stderr)
    print(f"{config}: OK: {_summary(policy)}")
    return 0


def _summary(policy: Policy) -> str:
    anyone = sum(1 for route in policy.routes if isinstance(route.allow, Anyone))
    providers = len(policy.providers)
    routes = len(policy.routes)
    return (
        f"{providers} provider{'s' * (providers != 1)}, {routes} route{'s' * (routes != 1)} "
        f"({routes - anyone} authenticated, {anyone} open to anyone), {len(policy.warnings)} warnings"
    )


def _load(config: str) -> Policy | None:
    try:
        return load_policy(config)
    except PolicyError as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        return None


def serve_command(
    config: str | None, listen: str | None, admin_listen: str | None, log_level: str, environ: Mapping[str, str]
) -> int:
    try:
        options = ServeOptions.resolve(config, listen, admin_listen, log_level, environ)
    except ValueError as exc:
        print(f"sidecar serve: {exc}", file=sys.stderr)
        return 2
    log.configure(options.log_level)
    policy = _load(options.config)
    if policy is None:
        return 1
    sockets = _bind_all([options.listen, options.admin_listen])
    if sockets is None:
        return 2
    uvloop.run(run_sidecar(policy, sockets[0], sockets[1]))
    return 0


def _bind_all(addresses: Sequence[Address]) -> list[socket.socket] | None:
    bound: list[socket.socket] = []
    for address in addresses:
        try:
            bound.append(bind(address))
        except OSError as exc:
            print(f"sidecar: cannot listen on {address}: {exc.strerror}", file=sys.stderr)
            for sock in bound:
                sock.close()
            return None
    return bound


async def run_sidecar(
    policy: Policy,
    proxy: socket.socket,
    admin: socket.socket,
    before: Sequence[Listener] = (),
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Run the proxy and admin listeners (and `before`, e.g. the demo's issuer) until a signal arrives."""
    runtime = Runtime.create(policy, Metrics(CollectorRegistry()))
    listeners = [*before, Listener("proxy", Gate(runtime), proxy), Listener("admin", admin_app(runtime), admin)]

    async def started() -> None:
        fields = {listener.name: f"http://{listener.address}" for listener in listeners}
        log.logger.info(
            "listening", extra={"fields": {**fields, "policy": policy.source, "routes": len(policy.routes)}}
        )
        runtime.fetch_keys(on_ready)

    try:
        await run_listeners(listeners, started)
    finally:
        await runtime.close()
    log.logger.info("stopped")
