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
