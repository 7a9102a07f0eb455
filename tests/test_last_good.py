"""The supervisor's last good policy: each version of the file that loads, once it has settled; never a broken one."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.edge.runtime import policy_hash
from sidecar.ops.last_good import LastGood
from sidecar.policy.load import read_policy

ROUTE = "  - name: {name}\n    match: {{ path: /{name} }}\n    upstream: https://up.example/{name}\n    allow: anyone\n"


def policy_text(*names: str) -> str:
    return "version: 1\nroutes:\n" + "".join(ROUTE.format(name=name) for name in names)


def kept_routes(last_good: LastGood) -> list[str]:
    return [route.name for route in last_good.loaded[0].routes]


def started(path: Path) -> LastGood:
    policy, data = read_policy(path)
    return LastGood(str(path), (policy, policy_hash(data)), settle=0.0)  # settled: the same at two polls


def test_a_version_that_loads_is_kept_once_it_has_settled(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(policy_text("first"))
    last_good = started(path)
    path.write_text(policy_text("first", "second"))
    last_good.poll()
    assert kept_routes(last_good) == ["first"]  # seen once: it may still be being written
    last_good.poll()
    assert kept_routes(last_good) == ["first", "second"]
    assert last_good.loaded[1] == policy_hash(path.read_bytes())


def test_a_file_caught_between_two_writes_is_not_kept(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(policy_text("first"))
    last_good = started(path)
    path.write_text(policy_text("half"))  # loads, but is only the first of two writes
    last_good.poll()
    path.write_text(policy_text("half", "whole"))
    last_good.poll()
    assert kept_routes(last_good) == ["first"]
    last_good.poll()
    assert kept_routes(last_good) == ["half", "whole"]


def test_a_broken_or_missing_file_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(policy_text("first"))
    last_good = started(path)
    path.write_text("version: 1\nroutes: [not a route]\n")
    for _ in range(3):
        last_good.poll()
    path.unlink()
    last_good.poll()
    last_good.poll()
    assert kept_routes(last_good) == ["first"]


def test_sighup_keeps_the_file_at_once_with_the_secrets_it_names_now(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOW_SIG", "old-signature")
    path = tmp_path / "policy.yaml"
    path.write_text(policy_text("first").replace("/first\n", "/first?sig=${FLOW_SIG}\n"))
    last_good = started(path)
    monkeypatch.setenv("FLOW_SIG", "new-signature")  # a rotated secret: the file's bytes are the same
    last_good.poll()
    assert last_good.loaded[0].routes[0].upstream.endswith("sig=old-signature")
    last_good.reread()
    assert last_good.loaded[0].routes[0].upstream.endswith("sig=new-signature")
