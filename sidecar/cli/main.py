"""The `sidecar` command: argparse to options to a call, and nothing else."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from sidecar import __version__
from sidecar.options import FORWARD_AUTH_INGRESSES

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sidecar",
        description="Authentication sidecar: verifies OAuth 2.0 bearer tokens per route, streams allowed calls.",
    )
    parser.add_argument("--version", action="version", version=f"sidecar {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the proxy and the admin listener")
    serve.add_argument("--config", help="policy file (env SIDECAR_CONFIG)")
    serve.add_argument("--listen", help="proxy HOST:PORT (env SIDECAR_LISTEN, default 0.0.0.0:8080)")
    serve.add_argument(
        "--admin-listen",
        help="admin HOST:PORT for /metrics /healthz /readyz (env SIDECAR_ADMIN_LISTEN, default 0.0.0.0:9901)",
    )
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="default info")
    serve.add_argument("--log-format", choices=["json", "text"], help="one JSON object per line (default) or text")
    serve.add_argument("--drain-delay", help="seconds to keep serving after SIGTERM while /readyz is 503 (default 5)")
    serve.add_argument("--grace", help="seconds in-flight requests get to finish after the drain (default 25)")
    serve.add_argument("--workers", help="worker processes sharing the listeners (default 1)")
    serve.add_argument(
        "--max-connections",
        help="open proxy connections per worker; past it the one idle longest closes, else a new one gets 503 "
        "(env SIDECAR_MAX_CONNECTIONS, default 1024)",
    )
    serve.add_argument("--audit", action="store_true", help="every route in audit mode: count refusals, forward all")
    serve.add_argument("--forward-auth-path", help="serve forward-auth for an ingress at this path, e.g. /_auth")
    serve.add_argument(
        "--forward-auth-ingress",
        choices=FORWARD_AUTH_INGRESSES,
        help="the ingress asking: only its headers name the original request (required with --forward-auth-path)",
    )
    serve.add_argument("--reload-interval", help="seconds between checks of the policy file (default 2)")
    serve.add_argument(
        "--reload-settle", help="seconds a policy file changed in place must stay unchanged before it loads (default 5)"
    )
    serve.add_argument(
        "--tls-cert", help="PEM certificate chain: the proxy listener speaks HTTPS (env SIDECAR_TLS_CERT; reloaded)"
    )
    serve.add_argument("--tls-key", help="PEM private key of --tls-cert (env SIDECAR_TLS_KEY; reloaded on change)")
    serve.add_argument(
        "--tls-client-ca", help="PEM CA bundle: callers must show a certificate it issued (env SIDECAR_TLS_CLIENT_CA)"
    )

    check = commands.add_parser("check", help="validate a policy file; exit 1 with every error as FILE:LINE")
    check.add_argument("--config", help="policy file (env SIDECAR_CONFIG)")
    check.add_argument("--strict", action="store_true", help="treat every warning as an error (exit 1): for CI")

    explain = commands.add_parser(
        "explain", help="the decision for a request, and why (exit 0: allowed, 1: refused, 2: bad input)"
    )
    explain.add_argument("--config", help="policy file (env SIDECAR_CONFIG)")
    explain.add_argument("--method", default="GET", help="request method (default GET)")
    explain.add_argument("--path", required=True, help="request path, as the client would send it")
    given = explain.add_mutually_exclusive_group()
    given.add_argument("--token", help="a bearer JWT, checked against the issuer's live keys ('-' reads stdin)")
    given.add_argument(
        "--claims",
        help="claims as JSON, decided as a token carrying them: the iss, aud, tid and exp checks run (missing ones "
        "default to valid values), only the header, key and signature are not checked",
    )
    explain.add_argument("--json", action="store_true", help="machine-readable output")

    test = commands.add_parser(
        "test",
        help="decide each case of a cases file through the policy (exit 0: all pass, 1: a mismatch, 2: bad input)",
    )
    test.add_argument("--config", help="policy file (env SIDECAR_CONFIG)")
    test.add_argument("cases", help="cases file: requests, callers and the decision each must get")

    demo = commands.add_parser("demo", help="run the embedded demo on 127.0.0.1 and print the walk-through")
    demo.add_argument("--listen", default="127.0.0.1:8080", help="proxy HOST:PORT (loopback only)")
    demo.add_argument("--admin-listen", default="127.0.0.1:9901", help="admin HOST:PORT (loopback only)")
    demo.add_argument("--issuer-port", type=int, default=9400, help="port of the demo token issuer")
    demo.add_argument("--upstream-port", type=int, default=9401, help="port of the demo echo upstream")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        from sidecar.cli.commands import serve_command

        return serve_command(vars(args), os.environ)
    if args.command == "check":
        from sidecar.cli.commands import check_command

        return check_command(args.config or os.environ.get("SIDECAR_CONFIG"), strict=args.strict)
    if args.command == "explain":
        from sidecar.cli.commands import explain_command

        return explain_command(args.config or os.environ.get("SIDECAR_CONFIG"), args)
    if args.command == "test":
        from sidecar.cli.commands import test_command

        return test_command(args.config or os.environ.get("SIDECAR_CONFIG"), args.cases)
    from sidecar.demo.run import demo_command

    return demo_command(args.listen, args.admin_listen, args.issuer_port, args.upstream_port)


if __name__ == "__main__":
    sys.exit(main())
