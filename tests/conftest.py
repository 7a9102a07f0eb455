"""Servers shared by every suite that runs a real sidecar: the demo echo upstream and the demo token issuer."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar.demo.echo import EchoUpstream
from sidecar.demo.issuer import DemoIssuer
from sidecar.edge import response_urls
from sidecar.upstream import connection, target
from tests.support.servers import ThreadServer, serve_demo_issuer, served

# The memoised results of the modules `make mutate` mutates (tools/mutate.py).
_CACHED = (target.target, target._dropped, response_urls.response_urls, connection._origin)


# The suites that start sidecar processes and their peers. `make test` runs them on pytest-xdist workers next to the
# in-process tests (whose CPU fills the time these spend waiting on processes, timeouts and peers), each module on
# one worker (--dist loadscope: its module- and package-scoped sidecar, npm ci, Redis or ingress starts once) and
# ahead of most in-process tests (_start_rank).
PROCESS_SUITES = ("integration", "ingress", "e2e", "chart")
TESTS = Path(__file__).parent


def pytest_configure(config: pytest.Config) -> None:
    # The tests marked `alone` run after the rest, one at a time with nothing else running: those whose bound on time
    # is what they check (an answer within N seconds, a latency under an attack), which a neighbour's load would break.
    config.addinivalue_line("markers", "alone: needs the machine to itself (`make test` runs it after the rest)")


@functools.cache  # once per module, not per test: collection orders thousands of tests
def _process_suite(path: Path) -> str | None:
    parts = path.relative_to(TESTS).parts if path.is_relative_to(TESTS) else ()
    return parts[0] if len(parts) > 1 and parts[0] in PROCESS_SUITES else None


def _start_rank(item: pytest.Item) -> int:
    """When `make test` hands a module out (it keeps this order: --no-loadscope-reorder): the longest in-process
    modules first (the property tests, up to a minute and more of one worker's CPU, and the guides followed command
    by command), then the process suites', then the rest. A long module handed out last finishes last, and the run
    with it."""
    if "properties" in item.path.name or item.path.name == "test_docs_entra.py":
        return 0
    return 1 if _process_suite(item.path) is not None else 2


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=_start_rank)  # stable: each module keeps its order


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
