"""The end-to-end set-up: oidc-provider, httpbin and one `sidecar serve` process between them, on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.directory import Directory
from tests.e2e.node import NodeTools, node_tools
from tests.e2e.peers import HttpbinServer, IdpProcess
from tests.support.servers import SidecarProcess

POLICY = Path(__file__).with_name("policy.yaml")


@pytest.fixture(scope="package")
def node() -> NodeTools:
    tools = node_tools()
    tools.install()
    return tools


@pytest.fixture(scope="package")
def directory() -> Directory:
    return Directory()


@pytest.fixture(scope="package")
def idp(node: NodeTools, directory: Directory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[IdpProcess]:
    config = tmp_path_factory.mktemp("idp") / "directory.json"
    config.write_text(json.dumps(directory.idp_config()))
    process = IdpProcess(node.node, config)
    config.unlink()  # read at start-up; it holds the client secrets
    yield process
    assert process.stop() == 0, "\n".join(process.lines)


@pytest.fixture(scope="package")
def httpbin() -> Iterator[HttpbinServer]:
    server = HttpbinServer()
    yield server
    server.stop()


@pytest.fixture(scope="package")
def sidecar(directory: Directory, idp: IdpProcess, httpbin: HttpbinServer) -> Iterator[SidecarProcess]:
    process = SidecarProcess(POLICY, directory.sidecar_env(idp.url, httpbin.url))
    try:
        process.start()
    except BaseException:
        process.stop()  # a failed start leaves no process behind
        raise
    yield process
    assert process.stop() == 0


@pytest.fixture()
def admin(sidecar: SidecarProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sidecar.admin, timeout=10, trust_env=False) as http:
        yield http
