"""Hot reload loads only a complete file: a policy written in place is loaded once it has settled (unchanged for
`settle` seconds), an atomic rename or a ConfigMap `..data` symlink swap at the next poll. The reloader's polls are
driven here one by one with a fake clock: no sleeps, no timing."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from sidecar.edge.runtime import Runtime, policy_hash
from sidecar.observe.metrics import Metrics
from sidecar.ops.reload import PolicyReloader
from sidecar.policy.allow import authorize
from sidecar.policy.load import parse_policy
from sidecar.policy.model import Identity
from tests.support.jwtkit import FakeClock

HEAD = """\
version: 1
providers:
  contoso:
    issuer: https://login.example.test/tenant/v2.0
    audiences: [api://payroll]
    jwks_uri: https://login.example.test/keys
routes:
  - name: payroll
    match: { path: /payroll, methods: [POST] }
    upstream: http://127.0.0.1:1/payroll
    allow:
      - provider: contoso
"""
# Caught after HEAD, the file is a valid policy that lets every contoso user in: the users list is cut off.
WHOLE = HEAD + "        users: [lisa@contoso.com]\n"
MALLORY = Identity("contoso", {"oid": "mallory", "upn": "mallory@contoso.com"}, 2e9)
LISA = Identity("contoso", {"oid": "lisa", "upn": "lisa@contoso.com"}, 2e9)
OPEN = """\
version: 1
routes:
  - name: open
    match: { path: /open, methods: [GET] }
    upstream: http://127.0.0.1:1/open
    allow: anyone
"""
INTERVAL = 2.0
SETTLE = 5.0


def allowed(runtime: Runtime, identity: Identity) -> bool:
    """What the live policy decides for `identity` on the payroll route."""
    (route,) = [route for route in runtime.current.policy.routes if route.name == "payroll"]
    return authorize(route, identity) is not None


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    policy = parse_policy(WHOLE, "policy.yaml", {})
    runtime = Runtime.create(policy, policy_hash(WHOLE.encode()), Metrics(CollectorRegistry()))
    yield runtime
    await runtime.close()


def reloads(runtime: Runtime, result: str = "success") -> float | None:
    return runtime.metrics.registry.get_sample_value("sidecar_config_reloads_total", {"result": result}) or 0


async def test_a_file_written_in_place_in_two_writes_three_seconds_apart_is_loaded_whole(
    tmp_path: Path, runtime: Runtime
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(OPEN)  # what an operator replaces: the sidecar starts on it
    clock = FakeClock(0.0)
    reloader = PolicyReloader(runtime, str(path), {}, INTERVAL, SETTLE, clock)
    await runtime.swap(parse_policy(OPEN, str(path), {}), policy_hash(OPEN.encode()))
    with path.open("w") as file:  # one file, written in place (same inode): truncate, first write
        file.write(HEAD)
        file.flush()
        for now in (1.0, 2.5):  # polls between the first write (at 0) and the second (at 3)
            clock.now = now
            assert not await reloader.poll()
            assert runtime.current.hash == policy_hash(OPEN.encode())
        clock.now = 3.0
        file.write("        users: [lisa@contoso.com]\n")  # the second write, three seconds after the first
    for now in (4.0, 6.0, 8.0):  # changed again at 4.0: settling starts over
        clock.now = now
        assert not await reloader.poll()
        assert runtime.current.hash == policy_hash(OPEN.encode())
    clock.now = 10.0  # unchanged since 4.0 for SETTLE seconds
    assert await reloader.poll()
    assert runtime.current.hash == policy_hash(WHOLE.encode())
    assert allowed(runtime, LISA) and not allowed(runtime, MALLORY)
    assert reloads(runtime) == 1 and reloads(runtime, "error") == 0
    clock.now = 12.0
    assert not await reloader.poll()  # loaded once


async def test_a_half_file_that_stays_is_loaded_once_settled(tmp_path: Path, runtime: Runtime) -> None:
    """The settle rule cannot know a writer that stopped for good: what stays unchanged is what the operator wrote."""
    path = tmp_path / "policy.yaml"
    path.write_text(WHOLE)
    clock = FakeClock(0.0)
    reloader = PolicyReloader(runtime, str(path), {}, INTERVAL, SETTLE, clock)
    with path.open("a") as file:
        file.write("  - name: second\n")  # a route cut short: invalid, but only once settled is it even read
    for now in (2.0, 4.0, 6.0):
        clock.now = now
        assert not await reloader.poll()
        assert reloads(runtime, "error") == 0
    clock.now = 8.0
    assert not await reloader.poll()
    assert reloads(runtime, "error") == 1 and runtime.current.hash == policy_hash(WHOLE.encode())


async def test_an_atomic_rename_is_loaded_at_the_next_poll(tmp_path: Path, runtime: Runtime) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(WHOLE)
    clock = FakeClock(0.0)
    reloader = PolicyReloader(runtime, str(path), {}, INTERVAL, SETTLE, clock)
    (tmp_path / "policy.yaml.tmp").write_text(OPEN)
    os.replace(tmp_path / "policy.yaml.tmp", path)
    assert await reloader.poll()  # no settle wait: a renamed file is complete
    assert runtime.current.hash == policy_hash(OPEN.encode())


async def test_a_configmap_data_swap_is_loaded_at_the_next_poll(tmp_path: Path, runtime: Runtime) -> None:
    """Kubernetes: policy.yaml -> ..data/policy.yaml, ..data -> ..<timestamp>; an update swaps ..data."""
    (tmp_path / "..v1").mkdir()
    (tmp_path / "..v1" / "policy.yaml").write_text(WHOLE)
    (tmp_path / "..data").symlink_to("..v1")
    (tmp_path / "policy.yaml").symlink_to("..data/policy.yaml")
    clock = FakeClock(0.0)
    reloader = PolicyReloader(runtime, str(tmp_path / "policy.yaml"), {}, INTERVAL, SETTLE, clock)
    assert not await reloader.poll()
    (tmp_path / "..v2").mkdir()
    (tmp_path / "..v2" / "policy.yaml").write_text(OPEN)
    (tmp_path / "..data_tmp").symlink_to("..v2")
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    assert await reloader.poll()
    assert runtime.current.hash == policy_hash(OPEN.encode())


async def test_settle_is_at_least_one_poll_interval(tmp_path: Path, runtime: Runtime) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(WHOLE)
    clock = FakeClock(0.0)
    reloader = PolicyReloader(runtime, str(path), {}, INTERVAL, 0.0, clock)
    path.write_text(OPEN)
    assert not await reloader.poll()  # seen changed once: not yet
    clock.now += INTERVAL
    assert await reloader.poll()
