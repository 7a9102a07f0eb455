"""`sidecar check`'s summary line counts in plain English: 1 warning, 2 warnings."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.cli.commands import check_command
from sidecar.cli.main import main
from tests.test_policy_load import route

POLICY = route(allow="[{provider: contoso, users: [USERS]}]")


@pytest.mark.parametrize(
    ("users", "summary"),
    [("x-oid", "0 warnings"), ("lisa@contoso.com", "1 warning"), ("lisa@contoso.com, tom@contoso.com", "2 warnings")],
    ids=["none", "one", "two"],
)
def test_summary_counts_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str], users: str, summary: str) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.replace("USERS", users))
    assert check_command(str(policy)) == 0
    out, err = capsys.readouterr()
    assert out.rstrip().endswith(f"(1 authenticated, 0 open to anyone), {summary}")
    assert err.count("\n") == int(summary[0])  # one line per warning


def test_audit_mode_is_counted_and_a_secret_upstream_in_audit_mode_is_warned_about(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Audit forwards refused calls: with a secret in the upstream's query, the secret URL is open to anyone."""
    policy = tmp_path / "policy.yaml"
    text = POLICY.replace("USERS", "x-oid") + "    mode: audit\n"
    policy.write_text(text.replace("https://up.example.com/a", "https://up.example.com/a?sig=s3cr3t"))
    assert check_command(str(policy)) == 0
    out, err = capsys.readouterr()
    assert out.rstrip().endswith("(1 authenticated, 0 open to anyone, 1 in audit mode), 1 warning")
    assert err.startswith(f"{policy}:11: routes[0].mode: mode: audit forwards calls that fail authorization too")
    assert "s3cr3t" not in out + err


def test_an_audit_route_without_a_query_is_counted_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.replace("USERS", "x-oid") + "    mode: audit\n")
    assert check_command(str(policy)) == 0
    out, err = capsys.readouterr()
    assert out.rstrip().endswith("(1 authenticated, 0 open to anyone, 1 in audit mode), 0 warnings")
    assert err == ""


def test_strict_refuses_a_policy_with_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """CI runs `check --strict`: a display name where Entra wants a GUID fails the build, not just a warning."""
    policy = tmp_path / "policy.yaml"
    entra = "    entra: {tenant: 11111111-2222-3333-4444-555555555555}\n"
    policy.write_text(
        POLICY.replace("    issuer: https://login.example.com/tenant/v2.0\n", entra).replace("USERS", "Lisa Smith")
    )
    assert main(["check", "--config", str(policy)]) == 0
    capsys.readouterr()
    assert main(["check", "--strict", "--config", str(policy)]) == 1
    out, err = capsys.readouterr()
    assert '"Lisa Smith" is not an object id' in err
    assert out.startswith(f"{policy}: refused by --strict: 1 warning: ")


def test_strict_passes_a_policy_without_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.replace("USERS", "x-oid"))
    assert main(["check", "--strict", "--config", str(policy)]) == 0
    assert capsys.readouterr().out.startswith(f"{policy}: OK: ")
