"""`sidecar explain`: the route, every failed check of a token against the live keys, each rule, the verdict."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from sidecar.demo.issuer import CONTOSO_TENANT, DemoIssuer
from tests.integration.conftest import POLICY

LISA = {"oid": "aaaaaaaa-0000-0000-0000-00000000000a", "upn": "lisa@contoso.com"}
TOM = {"oid": "aaaaaaaa-0000-0000-0000-00000000000b", "upn": "tom@contoso.com"}


def explain(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "sidecar", "explain", "--config", str(POLICY), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env={**os.environ, **env})


def test_allowed_token_names_the_rule_that_holds(sidecar_env: dict[str, str], issuer: DemoIssuer) -> None:
    token = issuer.mint(CONTOSO_TENANT, {"aud": "api://trigger-gateway", **LISA})
    result = explain(sidecar_env, "--method", "POST", "--path", "/flows/payroll", "--token", token)
    assert result.returncode == 0, result.stderr
    assert "route     payroll" in result.stdout
    assert "rule 0    holds" in result.stdout
    assert result.stdout.rstrip().endswith("decision  200 allow")
    assert token not in result.stdout and "sig=" not in result.stdout  # neither the token nor the upstream's secret


def test_refused_token_names_every_failed_check(sidecar_env: dict[str, str], issuer: DemoIssuer) -> None:
    token = issuer.mint(CONTOSO_TENANT, {"aud": "api://elsewhere", "exp": int(time.time()) - 7200, **TOM})
    result = explain(sidecar_env, "--method", "POST", "--path", "/flows/payroll", "--token", token, "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    failed = {check["name"] for check in report["token"] if not check["ok"]}
    assert failed == {"expiry", "audience"}
    assert {check["name"] for check in report["token"] if check["ok"]} >= {"issuer", "algorithm", "key", "signature"}
    assert report["status"] == 401 and report["decision"] == "reject"


def test_token_from_stdin(sidecar_env: dict[str, str], issuer: DemoIssuer) -> None:
    token = issuer.mint(CONTOSO_TENANT, {"aud": "api://trigger-gateway", **TOM})
    command = [sys.executable, "-m", "sidecar", "explain", "--config", str(POLICY), "--method", "POST"]
    command += ["--path", "/flows/payroll", "--token", "-"]
    result = subprocess.run(
        command, input=token + "\n", capture_output=True, text=True, timeout=60, env={**os.environ, **sidecar_env}
    )
    assert result.returncode == 1
    assert "rule 0    fails" in result.stdout and "rule 1    fails" in result.stdout
    assert result.stdout.rstrip().endswith("decision  403 reject (not_allowed)")


@pytest.mark.parametrize(
    ("claims", "status"),
    [({"roles": ["Payroll.Invoke"]}, 200), ({"upn": "LISA@contoso.com"}, 200), ({"upn": "tom@contoso.com"}, 403)],
    ids=["role", "listed-user-any-case", "other-user"],
)
def test_claims_are_applied_to_the_rules(claims: dict[str, object], status: int, sidecar_env: dict[str, str]) -> None:
    claims = {"iss": sidecar_env["ISSUER"] + f"/{CONTOSO_TENANT}/v2.0", **claims}
    result = explain(
        sidecar_env, "--method", "POST", "--path", "/flows/payroll", "--claims", json.dumps(claims), "--json"
    )
    assert json.loads(result.stdout)["status"] == status
    assert result.returncode == (0 if status == 200 else 1)


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/nowhere", "route     none: no route matches this path"),
        ("GET", "/flows/payroll", "route     none: the path's routes take only POST"),
        ("GET", "/public/../flows/payroll?x=1", "request   GET /flows/payroll"),
        ("GET", "/public/a", "decision  200 allow"),
    ],
    ids=["no-route", "wrong-method", "normalised", "anyone"],
)
def test_routing_is_explained(method: str, path: str, expected: str, sidecar_env: dict[str, str]) -> None:
    result = explain(sidecar_env, "--method", method, "--path", path)
    assert expected in result.stdout, result.stdout + result.stderr
