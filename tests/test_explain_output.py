"""`sidecar explain`'s text output: values that hide whitespace show it, a pasted `Bearer ...` is read as the
token, and an empty stdin says no token was given."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from sidecar.cli.explain import Explanation, render
from sidecar.cli.main import main
from sidecar.policy.allow import evaluate
from sidecar.policy.model import Identity
from tests.test_policy_load import parse, route


def test_a_configured_value_with_a_trailing_space_is_shown_quoted() -> None:
    policy = parse(route(allow="[{provider: contoso, groups: ['g-1 ']}]"))
    ((_, held, why),) = evaluate(policy.routes[0], Identity("contoso", {"groups": ["g-1"]}, 0))
    assert not held and why.endswith('groups: none of ["g-1 "] present')


def test_control_characters_in_shown_values_are_escaped() -> None:
    result = Explanation("GET", "/a", route="a", route_line=7, upstream="https://up", mode="enforce")
    result.rules = [{"rule": 0, "held": False, "why": "claim roles: none of [Reader\ndecision  200 allow] present"}]
    lines = render(result, as_json=False).splitlines()
    assert lines[2] == "rule 0    fails: claim roles: none of [Reader\\ndecision  200 allow] present"
    assert [line for line in lines if line.startswith("decision")] == ["decision  200 allow"]


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(route())
    return path


def explain_stdin(
    policy_file: Path, stdin: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, list[str], str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main(["explain", "--config", str(policy_file), "--path", "/a", "--token", "-"])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


@pytest.mark.parametrize("scheme", ["Bearer ", "bearer  ", "BEARER\t"])
def test_a_pasted_bearer_scheme_is_removed_with_a_note(
    policy_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], scheme: str
) -> None:
    code, lines, _ = explain_stdin(policy_file, f"{scheme}not-a-jwt\n", monkeypatch, capsys)
    assert code == 1
    assert 'note      the leading "Bearer " was removed: --token takes the token alone' in lines
    token_lines = [line for line in lines if line.startswith("token")]
    assert token_lines[-1].startswith("token     FAIL format: ")  # the check that failed is shown
    assert lines[-1] == "decision  401 reject (malformed_token)"


def test_a_token_that_is_not_one_word_shows_the_failing_format_check(
    policy_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines, _ = explain_stdin(policy_file, "eyJ.abc def.ghi\n", monkeypatch, capsys)
    assert code == 1
    assert lines[-2].startswith("token     FAIL format: the token is not one word of base64url characters")
    assert lines[-1] == "decision  401 reject (malformed_token)"


@pytest.mark.parametrize("stdin", ["", "\n", "  \n"], ids=["empty", "newline", "blank"])
def test_an_empty_stdin_is_no_token_given(
    policy_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], stdin: str
) -> None:
    code, lines, err = explain_stdin(policy_file, stdin, monkeypatch, capsys)
    assert (code, lines) == (2, [])
    assert err.startswith("sidecar explain: no token given on stdin")


def test_the_help_says_what_claims_go_through(capsys: pytest.CaptureFixture[str]) -> None:
    """`--claims` is checked for iss, aud, tid and exp like a token (only the signature is skipped)."""
    with pytest.raises(SystemExit):
        main(["explain", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "without verification" not in help_text
    assert "the iss, aud, tid and exp checks run" in help_text
