"""`sidecar demo`: the demo issuer, echo upstream and the proxy on loopback, and the walk-through to try."""

from __future__ import annotations

import ipaddress
import os
import sys
from importlib import resources

import uvloop

from sidecar.demo.cast import demo_clients
from sidecar.demo.echo import EchoUpstream
from sidecar.demo.issuer import CONTOSO_TENANT as CONTOSO
from sidecar.demo.issuer import FABRIKAM_TENANT as FABRIKAM
from sidecar.demo.issuer import DemoIssuer
from sidecar.edge.runtime import policy_hash
from sidecar.observe import log
from sidecar.ops.run import run_sidecar
from sidecar.ops.server import Listener, bind
from sidecar.options import Address, ServeOptions, parse_address
from sidecar.policy.load import PolicyError, parse_policy

__all__ = ["demo_command", "walkthrough"]


def demo_command(listen: str, admin_listen: str, issuer_port: int, upstream_port: int) -> int:
    try:
        proxy_at, admin_at = parse_address(listen), parse_address(admin_listen)
        _require_loopback(proxy_at, admin_at)
    except ValueError as exc:
        print(f"sidecar demo: {exc}", file=sys.stderr)
        return 2
    issuer_at, upstream_at = Address("127.0.0.1", issuer_port), Address("127.0.0.1", upstream_port)
    try:
        sockets = [bind(address) for address in (issuer_at, upstream_at, proxy_at, admin_at)]
    except OSError as exc:
        print(f"sidecar demo: cannot listen: {exc.strerror} (choose other ports, see --help)", file=sys.stderr)
        return 2
    issuer_sock, upstream_sock, proxy_sock, admin_sock = sockets
    issuer_url = "http://{}:{}".format(*issuer_sock.getsockname()[:2])
    upstream_url = "http://{}:{}".format(*upstream_sock.getsockname()[:2])
    text = resources.files("sidecar.demo").joinpath("demo.yaml").read_text("utf-8")
    environ = {**os.environ, "DEMO_ISSUER": issuer_url, "DEMO_UPSTREAM": upstream_url}
    try:
        policy = parse_policy(text, "demo.yaml", environ)
    except PolicyError as exc:  # only if the embedded file is broken
        print("\n".join(exc.errors), file=sys.stderr)
        return 1
    # The walk-through and one text access line per call are the demo's output; warnings and errors still show.
    log.configure("warning", "text", access=True)
    issuer = DemoIssuer(issuer_url, demo_clients())
    before = [
        Listener("issuer", issuer.app(), issuer_sock, stop_last=True),
        Listener("upstream", EchoUpstream(), upstream_sock, stop_last=True),
    ]
    proxy = "http://{}:{}".format(*proxy_sock.getsockname()[:2])
    admin = "http://{}:{}".format(*admin_sock.getsockname()[:2])

    def ready() -> None:
        print(walkthrough(proxy, admin, issuer), flush=True)

    options = ServeOptions("demo.yaml", proxy_at, admin_at, drain_delay=0)
    digest = policy_hash(text.encode("utf-8"))
    uvloop.run(run_sidecar(policy, digest, proxy_sock, admin_sock, options, before=before, on_ready=ready))
    return 0


def _require_loopback(*addresses: Address) -> None:
    for address in addresses:
        host = "127.0.0.1" if address.host == "localhost" else address.host
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"{address}: the demo binds only to loopback addresses")


def _token(issuer: DemoIssuer, tenant: str, client: str, user: bool) -> str:
    command = (
        f"curl -s -d grant_type=client_credentials -d client_id={client} -d client_secret={client}-secret "
        f"-d scope=api://trigger-gateway/.default {issuer.token_url(tenant)} "
        "| python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])')"
    )
    return command + "   # simulated user token" if user else command


# What the echo upstream answers with, cut to what step 6 is about: the query, the identity headers, Authorization.
_SHOW_RECEIVED = (
    'python3 -c \'import json,sys; seen=json.load(sys.stdin); h=seen["headers"]; print("query:", seen["query"]); '
    '[print(k + ":", v) for k, v in h.items() if k.startswith("x-auth-")]; '
    'print("authorization:", h.get("authorization", "(not sent)"))\''
)


def _received(proxy: str) -> str:
    """Step 6: lisa's call with a client `sig` and a spoofed identity header, and what the upstream got."""
    return (
        """curl -s -X POST -H "Authorization: Bearer $LISA" -H 'X-Auth-Subject: spoofed-admin' """
        f'"{proxy}/flows/user-lookup?sig=client-forged&note=hi" | {_SHOW_RECEIVED}'
    )


def walkthrough(proxy: str, admin: str, issuer: DemoIssuer) -> str:
    """The walk-through as shell lines: every `curl` that prints a status says what it must print."""
    code = "curl -s -o /dev/null -w '%{http_code}\\n'"
    return f"""
The sidecar is running (Ctrl-C stops it):
  proxy     {proxy}
  admin     {admin}   (/metrics /healthz /readyz)
  issuer    {issuer.issuer_url(CONTOSO)}   (demo token issuer shaped like Entra ID, loopback only)

Try it in another shell; each status line says what it prints, and each call logs its access line here, below.

# Access lines: the text format (`--log-format text`); `sidecar serve` writes JSON lines by default.
# Tokens: the demo issuer hands out every token by client credentials, but real Entra issues
# client-credentials tokens to apps only; a user's token comes from a sign-in (for a test:
# `az account get-access-token --resource <App ID URI>`). So the user tokens below (lisa, tom, eve) are
# SIMULATED: tokens obtained as an app would, carrying a user's claims (oid, upn, idtyp=user).

# 1. Anyone: the public status route needs no token.
{code} {proxy}/public/status                                     # expect: 200

# 2. Get a (simulated) user token for lisa.
LISA=$({_token(issuer, CONTOSO, "lisa", user=True)}

# 3. Any user of the tenant: with a token 200, without one 401.
{code} -X POST -H "Authorization: Bearer $LISA" {proxy}/flows/user-lookup      # expect: 200
{code} -X POST {proxy}/flows/user-lookup                                        # expect: 401

# 4. Specific users: lisa is on the payroll list; tom is in the tenant but not on it.
{code} -X POST -H "Authorization: Bearer $LISA" -d '{{"month":"11"}}' {proxy}/flows/payroll   # expect: 200
TOM=$({_token(issuer, CONTOSO, "tom", user=True)}
{code} -X POST -H "Authorization: Bearer $TOM" {proxy}/flows/payroll            # expect: 403

# 5. An app with the Payroll.Invoke role is allowed too (a real app token: client credentials, as a Power Automate
#    HTTP action with "Active Directory OAuth" gets one); a user of another tenant is not a contoso user.
APP=$({_token(issuer, CONTOSO, "payroll-app", user=False)}
{code} -X POST -H "Authorization: Bearer $APP" {proxy}/flows/payroll            # expect: 200
EVE=$({_token(issuer, FABRIKAM, "eve", user=True)}
{code} -X POST -H "Authorization: Bearer $EVE" {proxy}/flows/user-lookup        # expect: 401

# 6. What the upstream received (the demo upstream echoes it): its own sig kept and the client's sig dropped, the
#    verified caller in X-Auth-* (the client's spoofed X-Auth-Subject replaced), and no Authorization header.
{_received(proxy)}

# 7. What was refused, by route and reason.
curl -s {admin}/metrics | grep '^sidecar_rejections_total'
""".strip("\n")
