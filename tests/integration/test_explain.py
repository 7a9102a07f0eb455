"""`sidecar explain`: the route, every failed check of a token against the live keys, each rule, the verdict."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

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


def test_refused_token_names_the_check_that_decided(sidecar_env: dict[str, str], issuer: DemoIssuer) -> None:
    token = issuer.mint(CONTOSO_TENANT, {"aud": "api://elsewhere", "exp": int(time.time()) - 7200, **TOM})
    result = explain(sidecar_env, "--method", "POST", "--path", "/flows/payroll", "--token", token, "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    # The verifier stops at the first failing check, as the proxy does: the audience comes before the lifetime.
    assert [check["name"] for check in report["token"] if not check["ok"]] == ["audience"]
    assert report["token"][-1]["name"] == "audience"
    assert {check["name"] for check in report["token"] if check["ok"]} >= {"issuer", "algorithm", "key", "signature"}
    assert report["status"] == 401 and report["reason"] == "wrong_audience" and report["decision"] == "reject"


def entra_policy(tmp_path: Path) -> Path:
    """The payroll route behind an `entra:` provider whose authority is the demo issuer (v1 and v2 issuers)."""
    text = POLICY.read_text().replace(
        "    issuer: ${ISSUER}/11111111-2222-3333-4444-555555555555/v2.0\n",
        f"    entra: {{tenant: {CONTOSO_TENANT}, authority: '${{ISSUER}}'}}\n",
        1,
    )
    path = tmp_path / "entra.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_entra_v1_and_v2_tokens_are_explained_as_accepted(
    version: str, sidecar_env: dict[str, str], issuer: DemoIssuer, tmp_path: Path
) -> None:
    base = sidecar_env["ISSUER"]
    iss = f"{base}/{CONTOSO_TENANT}/" if version == "v1" else f"{base}/{CONTOSO_TENANT}/v2.0"
    token = issuer.mint(CONTOSO_TENANT, {"iss": iss, "aud": "api://trigger-gateway", "ver": version[1] + ".0", **LISA})
    command = [sys.executable, "-m", "sidecar", "explain", "--config", str(entra_policy(tmp_path))]
    command += ["--method", "POST", "--path", "/flows/payroll", "--token", token]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, env={**os.environ, **sidecar_env})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout
    issuer_line = next(line for line in result.stdout.splitlines() if line.startswith("token     ok   issuer:"))
    assert f"{base}/{CONTOSO_TENANT}/," in issuer_line and f"{base}/{CONTOSO_TENANT}/v2.0" in issuer_line
    assert f"token     ok   tenant: tid '{CONTOSO_TENANT}'" in result.stdout
    assert result.stdout.rstrip().endswith("decision  200 allow")


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
