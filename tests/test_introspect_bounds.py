"""Introspection answers follow the policy and stay bounded: cached per provider as the policy has it (a reload that
changes the provider drops its answers), reduced to the claims the rules can read, and refused (503) over 64 KiB,
compressed or not."""

from __future__ import annotations

import gzip
import tracemalloc
import zlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from sidecar.auth.introspect import MAX_ANSWER_BYTES, Introspector
from sidecar.auth.keys import KeyStore
from sidecar.edge.forward import Forwarder
from sidecar.edge.runtime import Runtime
from sidecar.observe.metrics import Metrics
from sidecar.policy.load import parse_policy
from sidecar.reasons import Reason, Rejection
from tests.support.jwtkit import FakeClock, FakeIntrospection

NOW = 1_700_000_000.0
TOKEN = "opaque-2b7e151628aed2a6abf71588"
ROUTE = frozenset({"opaque"})


def policy_text(audience: str = "api://flows", rule: str = "") -> str:
    return f"""\
version: 1
providers:
  opaque:
    introspection:
      endpoint: https://idp.test/oauth2/introspect
      client_id: sidecar
      client_secret: s3cret
    audiences: [{audience}]
routes:
  - name: flows
    match: {{ path: /flows, methods: [POST] }}
    upstream: http://127.0.0.1:1/flows
    allow:
      - provider: opaque
{rule}"""


def active(**extra: Any) -> dict[str, Any]:
    return {"active": True, "sub": "svc-1", "client_id": "c1", "aud": "api://flows", "exp": NOW + 600, **extra}


@pytest.fixture
def server() -> FakeIntrospection:
    return FakeIntrospection()


@pytest.fixture
async def runtime(server: FakeIntrospection) -> AsyncIterator[Runtime]:
    async with server.client() as client:
        clock = FakeClock(NOW)
        runtime = Runtime(
            parse_policy(policy_text(), "policy.yaml", {}),
            "first",
            Metrics(CollectorRegistry()),
            KeyStore(client, clock),
            Forwarder.create(),
            Introspector(client, clock),
        )
        yield runtime
        await runtime.close()


async def verify(runtime: Runtime, token: str = TOKEN) -> Any:
    return await runtime.current.verifier.verify(token, ROUTE)


async def reason_of(runtime: Runtime, token: str = TOKEN) -> Reason:
    with pytest.raises(Rejection) as caught:
        await verify(runtime, token)
    return caught.value.reason


# --- the cache follows the policy --------------------------------------------------------------------------------


async def test_a_reload_that_changes_the_audiences_drops_the_cached_answers(
    runtime: Runtime, server: FakeIntrospection
) -> None:
    server.answers[TOKEN] = active()
    assert (await verify(runtime)).subject == "svc-1"
    await runtime.swap(parse_policy(policy_text(audience="api://payroll"), "policy.yaml", {}), "second")
    assert await reason_of(runtime) is Reason.WRONG_AUDIENCE  # judged again under the new audiences
    assert len(server.calls) == 2


async def test_a_reload_that_keeps_the_provider_keeps_the_cached_answers(
    runtime: Runtime, server: FakeIntrospection
) -> None:
    server.answers[TOKEN] = active()
    await verify(runtime)
    other = "  - name: other\n    match: { path: /o }\n    upstream: http://127.0.0.1:1/o\n    allow: anyone\n"
    text = policy_text() + other
    await runtime.swap(parse_policy(text, "policy.yaml", {}), "second")
    await verify(runtime)
    assert len(server.calls) == 1


async def test_a_reload_whose_rules_read_another_claim_asks_again(runtime: Runtime, server: FakeIntrospection) -> None:
    server.answers[TOKEN] = active(department="payroll")
    assert "department" not in (await verify(runtime)).claims  # no rule reads it: not kept
    rule = "        claims: { department: [payroll] }\n"
    await runtime.swap(parse_policy(policy_text(rule=rule), "policy.yaml", {}), "second")
    assert (await verify(runtime)).claims["department"] == "payroll"
    assert len(server.calls) == 2


async def test_two_providers_on_one_endpoint_do_not_share_verdicts(server: FakeIntrospection) -> None:
    """Same endpoint and client id, other audiences: an answer judged for one is no answer for the other."""
    flows = parse_policy(policy_text(), "p.yaml", {}).providers["opaque"]
    payroll = parse_policy(policy_text(audience="api://payroll"), "p.yaml", {}).providers["opaque"]
    server.answers[TOKEN] = active()
    async with server.client() as client:
        introspector = Introspector(client, FakeClock(NOW))
        assert (await introspector.introspect(flows, TOKEN)).subject == "svc-1"
        with pytest.raises(Rejection) as caught:
            await introspector.introspect(payroll, TOKEN)
    assert caught.value.reason is Reason.WRONG_AUDIENCE


# --- only what the rules can read is kept --------------------------------------------------------------------------


async def test_an_answer_is_cached_with_only_the_claims_the_rules_and_headers_read(
    runtime: Runtime, server: FakeIntrospection
) -> None:
    server.answers[TOKEN] = active(
        username="lisa@contoso.com", scope="flows.run", roles=["Payroll.Invoke"], profile={"photo": "x" * 30_000}
    )
    identity = await verify(runtime)
    assert set(identity.claims) == {"sub", "client_id", "aud", "exp", "scope", "roles", "preferred_username"}
    assert (identity.subject, identity.app, identity.user, identity.roles) == (
        "svc-1",
        "c1",
        "lisa@contoso.com",
        ("Payroll.Invoke",),
    )


# --- the size cap ----------------------------------------------------------------------------------------------------


class _Endless(httpx.AsyncByteStream):
    """A body that never ends (or ends after `limit` bytes), produced as it is read."""

    def __init__(self, chunk: bytes, limit: int | None = None) -> None:
        self.chunk, self.limit, self.sent = chunk, limit, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.limit is None or self.sent < self.limit:
            self.sent += len(self.chunk)
            yield self.chunk


def _bomb() -> bytes:
    """64 MiB of JSON whitespace inside a valid answer, gzip-compressed to about 64 KiB."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [compressor.compress(b'{"active": true, "sub": "s"' + b" " * 1024)]
    parts += [compressor.compress(b" " * (1 << 20)) for _ in range(64)]
    return b"".join(parts) + compressor.compress(b"}") + compressor.flush()


@pytest.mark.parametrize(
    ("make", "headers"),
    [
        (lambda: _Endless(b'{"active": true, "pad": "' + b"x" * 65_536), {}),
        (lambda: _Endless(b"x" * 4096, limit=MAX_ANSWER_BYTES + 4096), {"content-length": "69632"}),
        (lambda: _Endless(b" " * 8192, limit=MAX_ANSWER_BYTES + 8192), {}),
        (lambda: _Endless(_bomb(), limit=1), {"content-encoding": "gzip"}),
        (lambda: _Endless(gzip.compress(b" " * (MAX_ANSWER_BYTES + 1)), limit=1), {"content-encoding": "gzip"}),
        (lambda: _Endless(b"\x00" * 64), {"content-encoding": "br"}),
    ],
    ids=["endless", "declared-too-long", "streamed-past-the-cap", "gzip-bomb", "gzip-past-the-cap", "brotli"],
)
async def test_an_answer_over_the_cap_is_503_and_read_no_further(make: Any, headers: dict[str, str]) -> None:
    streams: list[_Endless] = []
    asked: list[str | None] = []

    async def handle(request: httpx.Request) -> httpx.Response:
        asked.append(request.headers.get("accept-encoding"))
        streams.append(make())
        return httpx.Response(200, headers=headers, stream=streams[-1])

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as client:
        introspector = Introspector(client, FakeClock(NOW))
        provider = parse_policy(policy_text(), "p.yaml", {}).providers["opaque"]
        tracemalloc.start()
        try:
            with pytest.raises(Rejection) as caught:
                await introspector.introspect(provider, TOKEN)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert caught.value.reason is Reason.INTROSPECTION_UNAVAILABLE
    assert streams[0].sent <= MAX_ANSWER_BYTES + 70_000  # given up at the cap, not read to the end
    assert peak < 4 << 20  # never the 64 MiB a bomb inflates to, nor an endless body: a few times the cap
    assert asked == ["identity"]  # compression is asked away


async def test_a_compressed_answer_within_the_cap_is_read(server: FakeIntrospection) -> None:
    body = b'{"active": true, "sub": "svc-1", "aud": "api://flows"}'

    async def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-encoding": "gzip"}, stream=_Endless(gzip.compress(body), 1))

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as client:
        provider = parse_policy(policy_text(), "p.yaml", {}).providers["opaque"]
        assert (await Introspector(client, FakeClock(NOW)).introspect(provider, TOKEN)).subject == "svc-1"
