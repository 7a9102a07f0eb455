"""Real servers on 127.0.0.1 for integration tests: in-process ASGI apps on threads, the sidecar as a process."""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import uvicorn

from sidecar.demo.cast import demo_clients
from sidecar.demo.issuer import DemoIssuer
from sidecar.ops.server import bind
from sidecar.options import Address

__all__ = ["LineReader", "SidecarProcess", "ThreadServer", "free_closed_port", "serve_demo_issuer", "served"]

App = TypeVar("App")


class ThreadServer:
    """An ASGI app on uvicorn in a thread of the test process. The socket is bound and listening before the
    thread starts, so clients can connect at once (the kernel queues them): no start-up wait is needed."""

    def __init__(self, make_app: Callable[[str], Any], port: int = 0, tls: tuple[str, str] | None = None) -> None:
        """`make_app(url)` builds the app once the URL it will be served at is known; `tls`: (certificate file,
        key file) to serve HTTPS."""
        self._scheme = "https" if tls is not None else "http"
        self.sock = bind(Address("127.0.0.1", port))
        self.sock.listen(128)
        app = make_app(self.url)
        config = uvicorn.Config(
            app,
            loop="asyncio",
            http="h11",
            ws="none",
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            date_header=False,
            ssl_certfile=tls[0] if tls is not None else None,
            ssl_keyfile=tls[1] if tls is not None else None,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # uvicorn installs signal handlers only on the main thread; this is not it.
        self._server.run(sockets=[self.sock])

    @property
    def url(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"{self._scheme}://{host}:{port}"

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self.sock.close()


@contextmanager
def served(app: App) -> Iterator[tuple[App, ThreadServer]]:
    """`app` on a ThreadServer for the block (a fixture's upstream), stopped however the block ends."""
    server = ThreadServer(lambda _url: app)
    try:
        yield app, server
    finally:
        server.stop()


def serve_demo_issuer(port: int = 0) -> tuple[DemoIssuer, ThreadServer]:
    """The demo issuer (Entra-shaped tenants, rotation, JWKS request count) on a loopback port."""
    issuers: list[DemoIssuer] = []

    def make_app(url: str) -> Any:
        issuers.append(DemoIssuer(url, demo_clients()))
        return issuers[0].app()

    server = ThreadServer(make_app, port)
    return issuers[0], server


# Ports for free_closed_port: below the kernel's ephemeral range (32768 and up on Linux), where no `bind(port 0)` of
# any process lands, split into one block per pytest-xdist worker ("gw0", "gw1", ...; the main process is block 0),
# so that two workers never hand out the same port, and a port one test keeps closed (or starts its own server on
# later) is never taken meanwhile by a listener on an ephemeral port. Each port is handed out once per process.
_PORT_BLOCKS_START, _PORT_BLOCK_SIZE, _PORT_BLOCKS = 12_000, 1_000, 20
_handed_out: set[int] = set()
_random = random.Random()  # its own: not the one hypothesis seeds for each example


def _port_block() -> range:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    index = int(worker[2:]) + 1 if worker.startswith("gw") and worker[2:].isdigit() else 0
    start = _PORT_BLOCKS_START + (index % _PORT_BLOCKS) * _PORT_BLOCK_SIZE
    return range(start, start + _PORT_BLOCK_SIZE)


def free_closed_port() -> int:
    """A loopback port with nothing listening, in this process's own block (above): connecting to it is refused,
    and a test may start its own server on it later."""
    block = _port_block()
    # A random start in the block: another run of the suite on the same machine rarely starts where this one does.
    offset = _random.randrange(len(block))
    for step in range(len(block)):
        port = block[(offset + step) % len(block)]
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))  # in use (another program, another run): the next one
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise AssertionError(f"no free loopback port left in {block}")


_SECRET_WORDS = ("SIG", "SECRET", "TOKEN", "PASSWORD")


class LineReader:
    """Reads a process's output on a thread; `wait_for` blocks (bounded) until a line matches. All lines are kept
    for scans (a queue, not select(): select on a buffered pipe misses lines already read into the buffer)."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, wanted: Callable[[str], bool], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            if wanted(line):
                return line
        raise AssertionError(f"no such line within {timeout}s; output so far:\n" + "\n".join(self.lines))

    def wait_for_count(self, wanted: Callable[[str], bool], count: int, timeout: float) -> list[str]:
        """All lines so far that match, once there are `count` of them: unlike `wait_for`, lines read earlier by
        another wait count too (two workers' start-up lines arrive in any order)."""
        deadline = time.monotonic() + timeout
        while True:
            matching = [line for line in list(self.lines) if wanted(line)]
            if len(matching) >= count:
                return matching
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"fewer than {count} such lines within {timeout}s:\n" + "\n".join(self.lines))
            try:
                if self._queue.get(timeout=left) is None:
                    self._queue.put(None)  # the stream ended: let the last check above fail
            except queue.Empty:
                pass

    def join(self, timeout: float = 10) -> None:
        self._thread.join(timeout)


@dataclass
class SidecarProcess:
    """`sidecar serve` as a real process on ephemeral loopback ports; its stdout lines are kept for scans."""

    config: Path
    env: Mapping[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ("--drain-delay", "0")  # tests of the drain pass their own
    proxy: str = ""
    admin: str = ""
    _process: subprocess.Popen[str] | None = None
    _output: LineReader | None = None

    def start(self, wait_ready: bool = True, timeout: float = 30.0) -> SidecarProcess:
        command = [sys.executable, "-m", "sidecar", "serve", "--config", str(self.config)]
        command += ["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", *self.args]
        self._process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, **self.env}
        )
        assert self._process.stdout is not None
        self._output = LineReader(self._process.stdout)
        listening = _fields(self._output.wait_for(lambda line: _message(line) == "listening", timeout))
        self.proxy, self.admin = str(listening["proxy"]), str(listening["admin"])
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def wait_for_log(self, message: str, timeout: float = 30.0, **fields: object) -> dict[str, Any]:
        """The next JSON log line with this message (and these fields), waiting at most `timeout`."""
        assert self._output is not None

        def wanted(line: str) -> bool:
            record = _json(line)
            return record is not None and record.get("message") == message and _has(record, fields)

        record = _json(self._output.wait_for(wanted, timeout))
        assert record is not None
        return record

    def wait_for_logs(self, message: str, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Every JSON log line with this message so far, once there are `count` of them."""
        assert self._output is not None
        lines = self._output.wait_for_count(lambda line: _message(line) == message, count, timeout)
        return [_fields(line) for line in lines]

    def wait_for_line(self, wanted: Callable[[str], bool], timeout: float = 30.0) -> str:
        assert self._output is not None
        return self._output.wait_for(wanted, timeout)

    def send_signal(self, sig: int) -> None:
        assert self._process is not None
        self._process.send_signal(sig)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Returns when every worker has logged that its providers' keys are in (raises after `timeout`): with
        `--workers`, a test that goes on after the first worker's line meets a worker still starting (a /readyz of
        503, a certificate rotated before that worker read the first one)."""
        self.wait_for_logs("ready", self.workers, timeout)

    @property
    def workers(self) -> int:
        """The worker processes the sidecar was started with (`--workers`, else one)."""
        return int(self.args[self.args.index("--workers") + 1]) if "--workers" in self.args else 1

    @property
    def lines(self) -> list[str]:
        return self._output.lines if self._output is not None else []

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def wait(self, timeout: float) -> int:
        """The exit code, once the process has ended (subprocess.TimeoutExpired if it is still running then)."""
        assert self._process is not None
        return self._process.wait(timeout=timeout)

    def stop(self) -> int:
        assert self._process is not None
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
        try:
            code = self._process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._process.kill()
            code = self._process.wait(timeout=5)
        if self._output is not None:
            self._output.join()
        if self._process.stdout is not None:
            self._process.stdout.close()
        self._assert_nothing_leaked()
        return code

    def _assert_nothing_leaked(self) -> None:
        """The canary, for every sidecar the suite runs: no line it wrote holds a JWT (every one starts with "eyJ")
        or the value of a secret it was given (variables named like *SIG*, *SECRET*, *TOKEN*, *PASSWORD*)."""
        secrets = [v for k, v in self.env.items() if len(v) >= 6 and any(w in k.upper() for w in _SECRET_WORDS)]
        leaked = [line for line in self.lines if "eyJ" in line or any(secret in line for secret in secrets)]
        assert not leaked, f"the sidecar logged a token or a secret: {leaked[:2]}"


def _has(record: Mapping[str, Any], fields: Mapping[str, object]) -> bool:
    return all(record.get(key) == value for key, value in fields.items())


def _message(line: str) -> object:
    """The message of a log line in either format: JSON, or text (`time level message key=value ...`)."""
    record = _json(line)
    if record is not None:
        return record.get("message")
    words = line.split()
    return words[2] if len(words) > 2 else None


def _fields(line: str) -> dict[str, Any]:
    record = _json(line)
    if record is not None:
        return record
    return dict(word.split("=", 1) for word in line.split() if "=" in word)


def _json(line: str) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None
