"""Servers shared by every suite that runs a real sidecar: the demo echo upstream and the demo token issuer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sidecar.demo.echo import EchoUpstream
from sidecar.demo.issuer import DemoIssuer
from tests.support.servers import ThreadServer, serve_demo_issuer, served


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
