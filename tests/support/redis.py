"""A real Redis server (Debian's redis-server) on a loopback port, started and stopped by the test that needs it, and
a server that accepts connections and never answers (the one fault a real Redis cannot be made to show)."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.servers import LineReader, free_closed_port

__all__ = ["RedisServer", "SentinelServer", "SilentServer", "flow_policy", "redis_server_binary", "redis_servers"]

_INSTALL = Path(__file__).parents[1] / "peers" / "redis.sh"


def redis_server_binary() -> str:
    """redis-server's path, installed by tests/peers/redis.sh when missing; a clear failure (never a skip) when
    it cannot be."""
    found = shutil.which("redis-server")
    if found is None:
        result = subprocess.run(["bash", str(_INSTALL)], capture_output=True, text=True, timeout=600, check=False)
        found = shutil.which("redis-server")
        if found is None:
            pytest.fail(f"redis-server is needed and {_INSTALL} could not install it:\n{result.stdout}{result.stderr}")
    return found


def flow_policy(requests: int, window: str) -> str:
    """The store tests' policy (without its rate_limit_store): one route, POST /flows/run to ${UPSTREAM}/run, for
    callers of the demo issuer's contoso tenant (${ISSUER}), `requests` per `window` each."""
    return f"""\
version: 1
providers:
  contoso:
    issuer: ${{ISSUER}}/11111111-2222-3333-4444-555555555555/v2.0
    audiences: [api://trigger-gateway]
routes:
  - name: flow
    match: {{ path: /flows/run, methods: [POST] }}
    upstream: ${{UPSTREAM}}/run
    allow: [{{ provider: contoso }}]
    rate_limit: {{ per: subject, requests: {requests}, window: {window} }}
"""


class RedisServer:
    """One redis-server process: no persistence, its files in `directory`, optionally with a password."""

    def __init__(
        self,
        directory: Path,
        password: str | None = None,
        port: int | None = None,
        tls: tuple[Path, Path] | None = None,  # (certificate chain, key): TLS only, on `port`
    ) -> None:
        self.directory = directory
        self.password = password
        self.port = port or free_closed_port()
        self.tls = tls
        self._process: subprocess.Popen[str] | None = None
        self._output: LineReader | None = None

    @property
    def url(self) -> str:
        if self.tls is not None:
            return f"rediss://localhost:{self.port}/0"  # the name its certificate is for
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20.0) -> RedisServer:
        command = [redis_server_binary(), "--bind", "127.0.0.1", "--save", ""]
        if self.tls is None:
            command += ["--port", str(self.port)]
        else:  # port 0 turns plain TCP off
            command += ["--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no"]
            command += ["--tls-cert-file", str(self.tls[0]), "--tls-key-file", str(self.tls[1])]
        command += ["--appendonly", "no", "--dir", str(self.directory), "--protected-mode", "no"]
        if self.password is not None:
            command += ["--requirepass", self.password]
        self._process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self._process.stdout is not None
        self._output = LineReader(self._process.stdout)
        self._output.wait_for(lambda line: "Ready to accept connections" in line, timeout)
        return self

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def send_signal(self, sig: int) -> None:
        """SIGSTOP hangs the server (connections stay open, nothing answers) until SIGCONT."""
        assert self._process is not None
        self._process.send_signal(sig)

    def stop(self) -> None:
        """Stops the server (by its PID) and waits for it: its port is free again for `start`."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.terminate()
            self._process.wait(timeout=20)
        if self._output is not None:
            self._output.join()
        if self._process.stdout is not None:
            self._process.stdout.close()
        self._process = self._output = None


class SentinelServer(RedisServer):
    """A Redis Sentinel (redis-server --sentinel) watching the primary on `primary_port` as `service`."""

    def __init__(self, directory: Path, primary_port: int, service: str = "mymaster") -> None:
        super().__init__(directory)
        self.primary_port = primary_port
        self.service = service

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.port}/{self.service}"

    def start(self, timeout: float = 20.0) -> RedisServer:
        config = self.directory / f"sentinel-{self.port}.conf"  # Sentinel rewrites its file: one of its own
        config.write_text(
            f"bind 127.0.0.1\nport {self.port}\ndir {self.directory}\n"
            f"sentinel monitor {self.service} 127.0.0.1 {self.primary_port} 1\n"
        )
        command = [redis_server_binary(), str(config), "--sentinel"]
        self._process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self._process.stdout is not None
        self._output = LineReader(self._process.stdout)
        self._output.wait_for(lambda line: f"+monitor master {self.service}" in line, timeout)
        return self


class SilentServer:
    """Accepts every connection on its port and never sends a byte: a Redis that hangs."""

    def __init__(self, port: int | None = None) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port or 0))
        self.sock.listen(256)
        self.port = int(self.sock.getsockname()[1])
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return  # closed by stop()
            self._held.append(connection)  # held open, never read from or written to

    def stop(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() blocked on the thread; close() alone may not
        self.sock.close()
        self._thread.join(timeout=10)
        for connection in self._held:
            connection.close()


@contextlib.contextmanager
def redis_servers(directory: Path, password: str, port: int) -> Iterator[Callable[[], RedisServer]]:
    """A function that starts a Redis on `port` (again, after a stop); every server it started is stopped on exit,
    a hung one (SIGSTOP) resumed first: it ends only once it runs again."""
    servers: list[RedisServer] = []

    def start() -> RedisServer:
        servers.append(RedisServer(directory, password, port=port).start())
        return servers[-1]

    try:
        yield start
    finally:
        for server in servers:
            if server.running:
                server.send_signal(signal.SIGCONT)
            server.stop()
