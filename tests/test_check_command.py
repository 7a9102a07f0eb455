"""`sidecar check`'s summary line counts in plain English: 1 warning, 2 warnings."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.cli.commands import check_command
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
