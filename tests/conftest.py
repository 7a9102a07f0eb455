"""Servers shared by every suite that runs a real sidecar: the demo echo upstream and the demo token issuer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sidecar.demo.echo import EchoUpstream
from sidecar.demo.issuer import DemoIssuer
from sidecar.edge import response_urls
from sidecar.upstream import connection, target
from tests.support.servers import ThreadServer, serve_demo_issuer, served

# The memoised results of the modules `make mutate` mutates (tools/mutate.py).
_CACHED = (target.target, target._dropped, response_urls.response_urls, connection._origin)


def pytest_configure(config: pytest.Config) -> None:
    # `make test` runs the process suites on several xdist workers at once, then the tests marked `alone` one at a
    # time with nothing else running: those whose bound on time is what they check (an answer within N seconds, a
    # latency under an attack), which a neighbour's load would break.
    config.addinivalue_line("markers", "alone: needs the machine to itself (`make test` runs it after the rest)")


@pytest.fixture(autouse=True)
def _computed_by_the_code_under_test() -> None:
    """Each test computes what it checks: `make mutate` runs a mutant's tests in a process forked from one that
    imported the test modules with the original code, and a memoised result from then would hide the mutant."""
    for cached in _CACHED:
        cached.cache_clear()


@pytest.fixture(scope="session")
def upstream() -> Iterator[ThreadServer]:
    with served(EchoUpstream()) as (_echo, server):
        yield server


@pytest.fixture(scope="session")
def issuer_server() -> Iterator[tuple[DemoIssuer, ThreadServer]]:
    issuer, server = serve_demo_issuer()
    yield issuer, server
    server.stop()


@pytest.fixture(scope="session")
def issuer(issuer_server: tuple[DemoIssuer, ThreadServer]) -> DemoIssuer:
    return issuer_server[0]
