"""The application behind the ingresses (an echo that records what reached it), a sidecar per ingress, and the
ingress itself, all on 127.0.0.1."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sidecar.demo.echo import EchoUpstream
from sidecar.demo.issuer import DemoIssuer
from tests.ingress.peers import Ingress, start_ingress
from tests.support.servers import SidecarProcess, ThreadServer, served

POLICY = Path(__file__).with_name("policy.yaml")


@dataclass(frozen=True)
class Reached:
    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]  # every header line as received, in order

    def values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name.lower()]


class RecordingApp:
    """The echo upstream, recording every request that reaches it (read from the test thread under a lock)."""

    def __init__(self) -> None:
        self._echo = EchoUpstream()
        self._lock = threading.Lock()
        self._reached: list[Reached] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
            seen = Reached(scope["method"], scope["path"], scope["query_string"].decode("latin-1"), headers)
            with self._lock:
                self._reached.append(seen)
        await self._echo(scope, receive, send)

    def reached(self, marker: str) -> list[Reached]:
        """The requests whose query (or path) holds `marker` (each test request carries its own)."""
        with self._lock:
            return [seen for seen in self._reached if marker in seen.query or marker in seen.path]


@pytest.fixture(scope="session")
def app() -> Iterator[tuple[RecordingApp, ThreadServer]]:
    with served(RecordingApp()) as pair:
        yield pair


@dataclass
class Stack:
    ingress: Ingress
    sidecar: SidecarProcess
    app: RecordingApp


@pytest.fixture(scope="module", params=["nginx", "ingress-nginx", "caddy", "envoy"])
def stack(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    app: tuple[RecordingApp, ThreadServer],
    issuer_server: tuple[DemoIssuer, ThreadServer],
) -> Iterator[Stack]:
    """The ingress named by the parameter in front of the app, asking a sidecar started for that ingress."""
    name: str = request.param
    args = ("--drain-delay", "0", "--forward-auth-path", "/_auth", "--forward-auth-ingress", name)
    sidecar = SidecarProcess(POLICY, {"ISSUER": issuer_server[1].url}, args).start()
    try:
        sidecar_port = int(sidecar.proxy.rsplit(":", 1)[1])
        app_port = int(app[1].url.rsplit(":", 1)[1])
        ingress = start_ingress(name, tmp_path_factory.mktemp(name), sidecar_port, app_port)
        try:
            yield Stack(ingress, sidecar, app[0])
        finally:
            ingress.stop()
    finally:
        assert sidecar.stop() == 0
