"""The gate as `serve` builds it (a Runtime, the Gate, the forward-auth endpoint), in this process, in front of real
upstreams on ephemeral 127.0.0.1 ports and the demo issuer. Tests drive it through ASGI only (tests/support/asgi.py)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from sidecar.demo.issuer import DemoIssuer
from sidecar.edge.forward_auth import ForwardAuth
from sidecar.edge.gate import Gate
from sidecar.edge.runtime import Runtime, policy_hash
from sidecar.observe.metrics import Metrics
from sidecar.options import Address, ServeOptions
from sidecar.policy.load import parse_policy
from tests.support.logs import Records, captured
from tests.support.rawupstream import RawUpstream
from tests.support.recorder import Recorder
from tests.support.servers import ThreadServer, free_closed_port, served

POLICY = Path(__file__).with_name("policy.yaml")
PAYROLL_SIG = "payroll-secret-signature-0d4b4c1e9a57"
RAW_SIG = "raw-secret-signature-3b2f8e7d1c40"


@pytest.fixture(scope="session")
def raw() -> Iterator[RawUpstream]:
    """An upstream that answers with the exact bytes a test sets (`raw.answers[path]`)."""
    server = RawUpstream()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def recorder() -> Iterator[tuple[Recorder, ThreadServer]]:
    with served(Recorder()) as (app, server):
        yield app, server
        app.release()  # nothing may stay held while the server stops


@pytest.fixture(scope="session")
def edge_env(
    upstream: ThreadServer,
    issuer_server: tuple[DemoIssuer, ThreadServer],
    raw: RawUpstream,
    recorder: tuple[Recorder, ThreadServer],
) -> dict[str, str]:
    return {
        "ISSUER": issuer_server[1].url,
        "UPSTREAM": upstream.url,
        "RAW": raw.url,
        "RECORDER": recorder[1].url,
        "PAYROLL_SIG": PAYROLL_SIG,
        "RAW_SIG": RAW_SIG,
        "DEAD_PORT": str(free_closed_port()),
        "SCRIPTED": f"http://127.0.0.1:{free_closed_port()}",  # a test with a scripted upstream passes its own
    }


@dataclass
class Edge:
    """The proxy's ASGI app, and the registry its metrics are in (what /metrics exposes)."""

    app: Gate
    registry: CollectorRegistry

    def sample(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def rejections(self, route: str, reason: str, mode: str = "enforce") -> float:
        return self.sample("sidecar_rejections_total", route=route, reason=reason, mode=mode)


BuildEdge = Callable[..., Awaitable[Edge]]


@pytest.fixture
async def make_edge(edge_env: dict[str, str]) -> AsyncIterator[BuildEdge]:
    """Build the gate as sidecar.ops.run does, with the provider keys in (as after /readyz says ready); every runtime
    built is closed at the end."""
    runtimes: list[Runtime] = []

    async def build(*, ingress: str | None = None, audit: bool = False, **env: str) -> Edge:
        text = POLICY.read_text()
        policy = parse_policy(text, str(POLICY), {**edge_env, **env})
        registry = CollectorRegistry()
        runtime = Runtime.create(policy, policy_hash(text.encode()), Metrics(registry))
        runtimes.append(runtime)
        options = ServeOptions(
            str(POLICY),
            Address("127.0.0.1", 0),
            Address("127.0.0.1", 0),
            audit=audit,
            forward_auth_path="/_auth" if ingress else None,
            forward_auth_ingress=ingress,
        )
        runtime.audit_all = options.audit
        await runtime.keys.prime(policy.providers.values())
        return Edge(Gate(runtime, ForwardAuth.configured(runtime, options)), registry)

    yield build
    for runtime in runtimes:
        await runtime.close()


@pytest.fixture
async def edge(make_edge: BuildEdge) -> Edge:
    return await make_edge()


@pytest.fixture
def access_log() -> Iterator[Records]:
    """The access lines (`.fields()`), as the gate logs them in a process that has not configured JSON output."""
    with captured("sidecar.access", logging.INFO) as records:
        yield records
