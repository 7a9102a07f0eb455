"""The upstream client's tests run on uvloop (what `sidecar serve` runs on) and on asyncio's own loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping

import pytest
import uvloop

from sidecar.edge.forward import Forwarder


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    return {"uvloop": uvloop.new_event_loop, "asyncio": asyncio.new_event_loop}


@pytest.fixture()
async def forwarder() -> AsyncIterator[Forwarder]:
    forwarder = Forwarder.create()
    yield forwarder
    await forwarder.close()
