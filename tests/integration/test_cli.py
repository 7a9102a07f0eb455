"""The `sidecar` command as an operator runs it: check, serve's errors, help, and the demo's walk-through."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sidecar.demo.cast import demo_clients
from sidecar.demo.issuer import DemoIssuer
from sidecar.demo.run import walkthrough
from tests.support.servers import LineReader

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_ENV = {
    "USER_LOOKUP_TRIGGER_URL": "https://prod-1.westeurope.logic.azure.com/workflows/1/triggers/manual/paths/invoke?sig=x",
    "PAYROLL_TRIGGER_URL": "https://prod-1.westeurope.logic.azure.com/workflows/2/triggers/manual/paths/invoke?sig=y",
}


def sidecar(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidecar", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        cwd=REPO,
    )


def test_check_accepts_the_example_with_a_one_line_summary() -> None:
    result = sidecar("check", "--config", "config/example.yaml", env=EXAMPLE_ENV)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1
    assert result.stdout.startswith("config/example.yaml: OK:")
    assert "sig=" not in result.stdout + result.stderr


def test_check_reports_every_error_with_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "version: 1\n"
        "providers:\n"
        "  contoso:\n"
        "    issuer: https://login.example/tenant/v2.0\n"
        "    audiences: [api://x]\n"
        "routes:\n"
        "  - name: a\n"
        "    match: { path: /a, methods: [POST] }\n"
        "    upstream: https://example.test/a\n"
        "    allow:\n"
        "      - provider: contso\n"
        "  - name: b\n"
        "    match: { path: /b }\n"
        "    upstream: https://example.test/b\n"
        "    allow:\n"
        "      - provider: contoso\n"
        "        users: []\n"
    )
    result = sidecar("check", "--config", str(bad))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert any(re.match(rf"{re.escape(str(bad))}:11: routes\[0\]\.allow\[0\]\.provider: .*contso", x) for x in lines)
    assert any(re.match(rf"{re.escape(str(bad))}:17: routes\[1\]\.allow\[0\]\.users: ", x) for x in lines)


def test_check_names_an_unset_variable_without_guessing(tmp_path: Path) -> None:
    result = sidecar("check", "--config", "config/example.yaml", env={"USER_LOOKUP_TRIGGER_URL": "", "X": "1"})
    assert result.returncode == 1
    assert "PAYROLL_TRIGGER_URL" in result.stderr


def test_serve_refuses_a_bad_policy_before_listening(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 2\nroutes: []\n")
    result = sidecar("serve", "--config", str(bad), "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0")
    assert result.returncode == 1
    assert f"{bad}:1: version" in result.stderr


def test_serve_takes_config_from_the_environment(tmp_path: Path) -> None:
    result = sidecar("serve", env={"SIDECAR_CONFIG": str(tmp_path / "missing.yaml")})
    assert result.returncode == 1
    assert "missing.yaml" in result.stderr


@pytest.mark.parametrize("command", [[], ["serve"], ["check"], ["demo"]], ids=["main", "serve", "check", "demo"])
def test_help(command: list[str]) -> None:
    result = sidecar(*command, "--help")
    assert result.returncode == 0
    assert "usage: sidecar" in result.stdout


def test_demo_walkthrough_answers_as_printed() -> None:
    """Start `sidecar demo`, then run every line of the walk-through it prints, in one shell, as a user would: each
    status is the one printed, the upstream shows what it received, and the demo's own output shows an access line
    for each call (never a token)."""
    demo = subprocess.Popen(
        [sys.executable, "-m", "sidecar", "demo", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]
        + ["--issuer-port", "0", "--upstream-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
    )
    try:
        assert demo.stdout is not None
        output = LineReader(demo.stdout)
        printed = _read_walkthrough(output)
        commands = [line for line in printed if line and not line.startswith(("#", " ", "The ", "Try "))]
        script = []
        expected: list[str] = []
        for line in commands:
            command, _, expect = line.partition("# expect:")
            if expect:
                script.append(f'echo "STATUS $({command.strip()})"')
                expected.append(expect.strip())
            else:
                script.append(line)
        result = subprocess.run(["bash", "-c", "\n".join(script)], capture_output=True, text=True, timeout=60)
        statuses = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("STATUS ")]
        assert statuses == expected, result.stdout + result.stderr
        assert len(expected) == 7
        metrics = [line for line in result.stdout.splitlines() if line.startswith("sidecar_rejections_total")]
        assert any('reason="missing_token"' in line and 'route="user-lookup"' in line for line in metrics)
        assert any('reason="not_allowed"' in line and 'route="payroll"' in line for line in metrics)
        assert any('reason="wrong_issuer"' in line for line in metrics)
        _assert_the_upstream_step_shows_what_it_received(result.stdout)
        # One text access line per call through the proxy (the 7 with a status, and the upstream step's).
        access = output.wait_for_count(lambda line: " request request_id=" in line, 8, timeout=10)
        assert len(access) == 8, access
        assert any("route=payroll" in line and "status=403" in line and "reason=not_allowed" in line for line in access)
        assert any("route=user-lookup" in line and "decision=allow" in line for line in access)
        assert not any("eyJ" in line for line in output.lines)
        assert not any("sig=" in line for line in output.lines[len(printed) :])  # the walk-through's own has one
    finally:
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=20) == 0
        assert demo.stdout is not None
        demo.stdout.close()


def _assert_the_upstream_step_shows_what_it_received(stdout: str) -> None:
    """The walk-through's upstream step prints what the echo upstream got: its own `sig` kept and the client's
    dropped, the caller's verified identity in X-Auth-* instead of the spoofed copy, no Authorization."""
    lines = stdout.splitlines()
    assert "query: api-version=2016-10-01&sig=demo-signature-1&note=hi" in lines, stdout
    assert "x-auth-subject: aaaaaaaa-0000-0000-0000-00000000000a" in lines, stdout
    assert "x-auth-user: lisa@contoso.com" in lines, stdout
    assert "authorization: (not sent)" in lines, stdout
    assert "spoofed" not in stdout and "client-forged" not in stdout


def test_demo_labels_the_simulated_user_tokens() -> None:
    """The demo issuer gives user tokens by client credentials, which real Entra gives to apps only: every line of
    the walk-through that gets a user's token says it is simulated; the app's does not."""
    issuer = DemoIssuer("http://127.0.0.1:9400", demo_clients())
    text = walkthrough("http://127.0.0.1:8080", "http://127.0.0.1:9901", issuer)
    users = {c.client_id for c in demo_clients() if c.claims.get("idtyp") == "user"}
    fetches = {m.group(1): line for line in text.splitlines() if (m := re.search(r"client_id=([\w-]+) ", line))}
    assert {"lisa", "tom", "eve", "payroll-app"} <= fetches.keys()
    for client, line in fetches.items():
        assert line.endswith("# simulated user token") == (client in users), line
    assert "real Entra issues\n# client-credentials tokens to apps only" in text


def _read_walkthrough(output: LineReader, timeout: float = 30) -> list[str]:
    """Lines up to the last one of the walk-through (the metrics scrape)."""
    output.wait_for(lambda line: "/metrics | grep" in line, timeout)
    return list(output.lines)
