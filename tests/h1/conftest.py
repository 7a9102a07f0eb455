"""The upstream client's tests run on uvloop (what `sidecar serve` runs on) and on asyncio's own loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import pytest
import uvloop

from sidecar.edge.forward import Forwarder
from sidecar.upstream.connection import Connection


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    return {"uvloop": uvloop.new_event_loop, "asyncio": asyncio.new_event_loop}


@pytest.fixture()
async def forwarder() -> AsyncIterator[Forwarder]:
    forwarder = Forwarder.create()
    yield forwarder
    await forwarder.close()


@pytest.fixture(autouse=True)
async def no_error_in_a_callback() -> AsyncIterator[None]:
    """An exception in an upstream connection's callback (data_received, resume_writing, ...) is caught by the loop
    and only logged, the exchange going on as if nothing happened: here it fails the test. (The scripted upstreams'
    own errors are theirs.)"""
    loop = asyncio.get_running_loop()
    errors: list[str] = []

    def handler(_: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        handle = getattr(context.get("handle"), "_callback", None)  # asyncio's: a callback of a Connection
        if isinstance(context.get("protocol"), Connection) or isinstance(getattr(handle, "__self__", None), Connection):
            errors.append(f"{context.get('message')}: {context.get('exception')!r}")
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
    yield
    loop.set_exception_handler(None)
    assert errors == []
