"""The suite's closed ports (tests/support/servers.py): refused, never handed out twice, and never shared between
the xdist workers that run the process suites side by side."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.support import servers
from tests.support.servers import free_closed_port


def _block(monkeypatch: pytest.MonkeyPatch, worker: str | None) -> range:
    if worker is None:
        monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    else:
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
    return servers._port_block()


def test_each_worker_has_its_own_block_below_the_ephemeral_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = [_block(monkeypatch, worker) for worker in (None, "gw0", "gw1", "gw2", "gw3", "gw5", "gw9")]
    ports = [port for block in blocks for port in block]
    assert len(ports) == len(set(ports))  # no port in two blocks
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert max(ports) < low  # no `bind(port 0)` lands in a block


def _own_block(monkeypatch: pytest.MonkeyPatch, size: int) -> range:
    """A small block under the workers' ones, which no worker uses, and a fresh record of the ports handed out."""
    monkeypatch.setattr(servers, "_PORT_BLOCKS_START", servers._PORT_BLOCKS_START - 1_000)
    monkeypatch.setattr(servers, "_PORT_BLOCK_SIZE", size)
    monkeypatch.setattr(servers, "_handed_out", set())
    return _block(monkeypatch, None)


def test_a_port_is_refused_and_handed_out_once(monkeypatch: pytest.MonkeyPatch) -> None:
    _own_block(monkeypatch, 100)
    ports = [free_closed_port() for _ in range(50)]
    assert len(set(ports)) == 50
    assert all(port in servers._port_block() for port in ports)
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.connect(("127.0.0.1", ports[0]))


def test_a_port_in_use_is_passed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    block = _own_block(monkeypatch, 5)
    taken = []
    try:
        for port in block:  # every port of the block but one is held by another program
            if port == block[-1]:
                continue
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                sock.close()
                continue
            taken.append(sock)
        assert free_closed_port() == block[-1]
        with pytest.raises(AssertionError, match="no free loopback port"):
            free_closed_port()
    finally:
        for sock in taken:
            sock.close()
