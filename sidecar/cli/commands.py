"""`serve` and `check`: load the policy, report errors as FILE:LINE, bind, and run the sidecar."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import uvloop

from sidecar.edge.runtime import policy_hash
from sidecar.edge.tls import TlsFilesError, server_context
from sidecar.edge.upstream_tls import tls_errors
from sidecar.observe import log
from sidecar.ops.run import run_sidecar
from sidecar.ops.server import bind
from sidecar.options import Address, ServeOptions
from sidecar.policy.load import PolicyError, read_policy
from sidecar.policy.model import Anyone, Policy

__all__ = ["check_command", "explain_command", "serve_command", "test_command"]


def check_command(config: str | None) -> int:
    if not config:
        print("sidecar check: no policy file: pass --config FILE or set SIDECAR_CONFIG", file=sys.stderr)
        return 1
    loaded = _load(config)
    if loaded is None:
        return 1
    policy = loaded[0]
    for warning in policy.warnings:
        print(warning, file=sys.stderr)
    print(f"{config}: OK: {_summary(policy)}")
    return 0


def explain_command(config: str | None, args: Any) -> int:
    from sidecar.cli.explain import explain, render

    policy = _policy("explain", config)
    if policy is None:
        return 2
    token = sys.stdin.readline().strip() if args.token == "-" else args.token
    try:
        claims = json.loads(args.claims) if args.claims is not None else None
    except ValueError:
        claims = None
    if args.claims is not None and not isinstance(claims, dict):
        print("sidecar explain: --claims must be a JSON object", file=sys.stderr)
        return 2
    path = args.path.split("?", 1)[0].encode("utf-8")
    result = asyncio.run(explain(policy, args.method, path, token, claims))
    print(render(result, args.json))
    return 0 if result.decision != "reject" else 1


def test_command(config: str | None, cases_file: str) -> int:
    """Exit 0: every case passed; 1: a case got another decision; 2: the policy or the cases file is not usable."""
    from sidecar.cli.policytest import load_cases, render, run_cases

    policy = _policy("test", config)
    if policy is None:
        return 2
    cases, errors = load_cases(cases_file, policy, os.environ)
    for error in errors:
        print(error, file=sys.stderr)
    if errors:
        return 2
    outcomes = asyncio.run(run_cases(policy, cases))
    print(render(outcomes, cases_file))
    return 1 if any(result.mismatches for result in outcomes) else 0


def _policy(command: str, config: str | None) -> Policy | None:
    """The policy for a command that decides requests (its errors printed), or None."""
    if not config:
        print(f"sidecar {command}: no policy file: pass --config FILE or set SIDECAR_CONFIG", file=sys.stderr)
        return None
    loaded = _load(config)
    return loaded[0] if loaded is not None else None


def _summary(policy: Policy) -> str:
    anyone = sum(1 for route in policy.routes if isinstance(route.allow, Anyone))
    providers = len(policy.providers)
    routes = len(policy.routes)
    warnings = len(policy.warnings)
    return (
        f"{providers} provider{'s' * (providers != 1)}, {routes} route{'s' * (routes != 1)} "
        f"({routes - anyone} authenticated, {anyone} open to anyone), {warnings} warning{'s' * (warnings != 1)}"
    )


def _load(config: str) -> tuple[Policy, str] | None:
    try:
        policy, text = read_policy(config)
    except PolicyError as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        return None
    errors = tls_errors(policy)  # the `tls:` files read and paired, as serving will (FILE:LINE)
    for error in errors:
        print(error, file=sys.stderr)
    return (policy, policy_hash(text)) if not errors else None


def serve_command(flags: Mapping[str, Any], environ: Mapping[str, str]) -> int:
    try:
        options = ServeOptions.resolve(flags, environ)
    except ValueError as exc:
        print(f"sidecar serve: {exc}", file=sys.stderr)
        return 2
    log.configure(options.log_level, options.log_format)
    loaded = _load(options.config)
    if loaded is None:
        return 1
    if options.tls is not None:
        try:
            server_context(options.tls)  # before binding or forking: a certificate that does not load stops here
        except TlsFilesError as exc:
            print(f"sidecar serve: {exc}", file=sys.stderr)
            return 2
    sockets = _bind_all([options.listen, options.admin_listen])
    if sockets is None:
        return 2
    _settle_gc()
    if options.workers > 1:
        from sidecar.ops.workers import supervise

        return supervise(options, sockets, loaded)
    uvloop.run(run_sidecar(*loaded, sockets[0], sockets[1], options, reload_from=options.config))
    return 0


def _settle_gc() -> None:
    """Start-up's objects (modules, the policy) leave the collector's view: collections scan only what requests
    make. Before a fork, so workers share these pages rather than copy them; no collection first (measured: no
    less memory). The collector's thresholds stay CPython's: a request leaves no reference cycles, and raising
    them (50,000 once helped while aiohttp left garbage) measured no better (BENCHMARKS.md, changes 11 and 15)."""
    gc.freeze()


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
