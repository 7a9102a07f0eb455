"""`sidecar test`: the shipped demo cases pass, a case that gets another decision fails the run (exit 1), and a
cases file that cannot be run is refused with every error at FILE:LINE (exit 2)."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

import pytest

from sidecar.cli.main import main
from sidecar.demo.issuer import CONTOSO_TENANT, DemoIssuer
from tests.support.servers import ThreadServer

LISA = "aaaaaaaa-0000-0000-0000-00000000000a"
TOM = "aaaaaaaa-0000-0000-0000-00000000000b"


@pytest.fixture
def demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The demo policy and cases, as shipped, in a directory of their own; the issuer and upstream on loopback."""
    for name in ("demo.yaml", "cases.yaml"):
        with resources.as_file(resources.files("sidecar.demo").joinpath(name)) as source:
            shutil.copy(source, tmp_path / name)
    monkeypatch.setenv("DEMO_ISSUER", "http://127.0.0.1:9")
    monkeypatch.setenv("DEMO_UPSTREAM", "http://127.0.0.1:9")
    return tmp_path


def run(directory: Path, cases: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["test", "--config", str(directory / "demo.yaml"), str(directory / cases)])
    out, err = capsys.readouterr()
    return code, out, err


def write(directory: Path, text: str) -> str:
    (directory / "mine.yaml").write_text(text)
    return "mine.yaml"


def test_the_shipped_demo_cases_pass(demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(demo, "cases.yaml", capsys)
    assert code == 0, out + err
    rows = [line for line in out.splitlines() if line.startswith(("ok ", "FAIL"))]
    assert len(rows) >= 10 and all(row.startswith("ok ") for row in rows)
    assert "the token's header, key and signature are not checked" in out  # claims callers say what they skip
    assert out.rstrip().endswith("passed, 0 failed") and err == ""


CASE = """version: 1
cases:
  - name: tom may run payroll
    method: POST
    path: /flows/payroll
    caller: {{ claims: {{ oid: {oid} }} }}
    expect: {expect}
"""


@pytest.mark.parametrize(
    ("oid", "expect", "wrong"),
    [
        (TOM, "{ status: 200 }", "expected status 200"),
        (TOM, "{ reason: expired }", "expected reason expired"),
        (LISA, "{ status: 200, route: user-lookup }", "expected route user-lookup"),
        (LISA, "{ decision: reject }", "expected decision reject"),
    ],
    ids=["status", "reason", "route", "decision"],
)
def test_a_case_with_another_decision_fails_the_run(
    demo: Path, capsys: pytest.CaptureFixture[str], oid: str, expect: str, wrong: str
) -> None:
    code, out, _ = run(demo, write(demo, CASE.format(oid=oid, expect=expect)), capsys)
    assert code == 1
    row = next(line for line in out.splitlines() if line.startswith("FAIL"))
    assert "tom may run payroll (line 3)" in row and row.endswith(wrong)
    assert out.rstrip().endswith("1 case, 0 passed, 1 failed")


@pytest.mark.parametrize(
    ("text", "errors"),
    [
        (
            "version: 1\ncases:\n  - name: a\n    path: /x\n    expect: {status: 200}\n    caler: {}\n",
            ['mine.yaml:6: cases[0].caler: unknown key "caler"'],
        ),
        ("version: 1\ncases:\n  - name: a\n    path: /x\n", ["mine.yaml:3: cases[0].expect: is required"]),
        (
            "version: 1\ncases:\n  - name: a\n    path: /x\n    expect: {reason: nope}\n",
            ["mine.yaml:5: cases[0].expect.reason: must be allowed or a reason of the decision table"],
        ),
        (
            "version: 1\ncases:\n  - name: a\n    path: /x\n    expect: {route: nope}\n",
            ['mine.yaml:5: cases[0].expect.route: unknown route "nope" (known: payroll, status, user-lookup)'],
        ),
        (
            "version: 1\ncases:\n  - name: a\n    path: /x\n    expect: {status: 200}\n"
            "    caller: {claims: {oid: x}, token_file: t.jwt}\n",
            ["mine.yaml:6: cases[0].caller: needs exactly one of claims or token_file"],
        ),
        (
            "version: 1\ncases:\n  - name: a\n    path: /x\n    expect: {status: 200}\n"
            "    caller: {token_file: gone.jwt}\n",
            ["mine.yaml:6: cases[0].caller.token_file: cannot read token file"],
        ),
        (
            "version: 1\ncases:\n  - name: a\n    path: /x\n    expect: {status: 200}\n"
            "    caller: {provider: fabrikam, claims: {oid: x}}\n",
            ['mine.yaml:6: cases[0].caller.provider: unknown provider "fabrikam" (known: contoso)'],
        ),
        (
            "version: 1\ncases:\n  - name: a\n    path: x\n    expect: {}\n",
            [
                'mine.yaml:4: cases[0].path: must start with "/"',
                "mine.yaml:5: cases[0].expect: needs at least one of status, reason, route or decision",
            ],
        ),
        ("version: 1\ncases: []\n", ["mine.yaml:2: cases: must not be empty"]),
        ("version: 1\ncases:\n  - name: a\n   path: /x\n", ["mine.yaml:4: (yaml):"]),
    ],
    ids=[
        "unknown-key",
        "no-expect",
        "unknown-reason",
        "unknown-route",
        "two-callers",
        "token-file-missing",
        "unknown-provider",
        "two-errors",
        "no-cases",
        "yaml-syntax",
    ],
)
def test_a_bad_cases_file_is_refused_at_file_and_line(
    demo: Path, capsys: pytest.CaptureFixture[str], text: str, errors: list[str]
) -> None:
    code, out, err = run(demo, write(demo, text), capsys)
    assert code == 2 and out == ""
    lines = [line.removeprefix(str(demo) + "/") for line in err.splitlines()]
    assert len(lines) >= len(errors), err
    for line, expected in zip(lines, errors, strict=False):
        assert line.startswith(expected), (line, expected)


def test_token_files_are_verified_with_the_issuers_keys(
    demo: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    issuer_server: tuple[DemoIssuer, ThreadServer],
) -> None:
    issuer, server = issuer_server
    monkeypatch.setenv("DEMO_ISSUER", server.url)
    good = issuer.mint(CONTOSO_TENANT, {"aud": "api://trigger-gateway", "oid": LISA})
    (demo / "lisa.jwt").write_text(good + "\n")
    head, payload, signature = good.split(".")
    (demo / "forged.jwt").write_text(f"{head}.{payload}.{signature[:-4]}AAAA")
    text = (
        "version: 1\ncases:\n"
        "  - {name: lisa, method: POST, path: /flows/payroll, caller: {token_file: lisa.jwt}, expect: {status: 200}}\n"
        "  - {name: forged, method: POST, path: /flows/payroll, caller: {token_file: forged.jwt},"
        " expect: {reason: bad_signature}}\n"
    )
    code, out, err = run(demo, write(demo, text), capsys)
    assert code == 0, out + err
    assert "2 cases, 2 passed, 0 failed" in out
    assert good not in out + err and signature not in out + err
    assert "signature are not checked" not in out  # no claims caller here


def test_no_policy_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SIDECAR_CONFIG", raising=False)
    assert main(["test", str(tmp_path / "cases.yaml")]) == 2
    assert "no policy file" in capsys.readouterr().err


def test_an_audit_mode_refusal_is_the_would_be_refusal_forwarded(
    demo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = demo / "demo.yaml"
    text = policy.read_text()
    policy.write_text(text.replace("  - name: payroll\n", "  - name: payroll\n    mode: audit\n", 1))
    cases = (
        "version: 1\ncases:\n"
        "  - name: tom in audit mode\n    method: POST\n    path: /flows/payroll\n"
        f"    caller: {{claims: {{oid: {TOM}}}}}\n"
        "    expect: {status: 403, reason: not_allowed, decision: audit_forward}\n"
    )
    code, out, err = run(demo, write(demo, cases), capsys)
    assert code == 0, out + err
    assert "403 not_allowed route=payroll (audit: forwarded)" in out


NO_ROUTE = f"""version: 1
cases:
  - name: nothing there
    path: /nowhere
    expect: {{ status: 404, route: null }}
  - name: payroll has a route
    method: POST
    path: /flows/payroll
    caller: {{ claims: {{ oid: {TOM} }} }}
    expect: {{ route: null }}
"""


def test_no_route_is_printed_as_the_cases_file_writes_it(demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`route: null` in the cases file, `route=null` in the table: one spelling for "no route"."""
    code, out, _ = run(demo, write(demo, NO_ROUTE), capsys)
    assert code == 1
    nothing = next(line for line in out.splitlines() if "nothing there" in line)
    payroll = next(line for line in out.splitlines() if "payroll has a route" in line)
    assert nothing.startswith("ok ") and "404 no_route route=null" in nothing
    assert payroll.startswith("FAIL") and payroll.endswith("expected route null")
