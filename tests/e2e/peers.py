"""The sidecar's real peers on 127.0.0.1: oidc-provider as a Node process, httpbin on Werkzeug in a thread."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from pathlib import Path

from httpbin import app as httpbin_app
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from tests.e2e.node import E2E
from tests.support.servers import LineReader

__all__ = ["HttpbinServer", "IdpProcess"]

IDP_SCRIPT = E2E / "idp" / "idp.mjs"


class IdpProcess:
    """`node idp.mjs DIRECTORY.json`; ready when it prints its "listening" line (port 0: no port can clash)."""

    def __init__(self, node: str, directory: Path, timeout: float = 30.0) -> None:
        self._process = subprocess.Popen(
            [node, str(IDP_SCRIPT), str(directory)],
            cwd=E2E,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self._process.stdout is not None
        self._output = LineReader(self._process.stdout)
        try:
            line = self._output.wait_for(lambda text: text.startswith('{"message":"listening"'), timeout)
        except BaseException:
            self.stop()  # a failed start leaves no process behind
            raise
        self.url: str = json.loads(line)["url"]

    @property
    def lines(self) -> list[str]:
        return self._output.lines

    def stop(self) -> int:
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
        try:
            code = self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            code = self._process.wait(timeout=5)
        self._output.join()
        assert self._process.stdout is not None
        self._process.stdout.close()
        return code


class _Quiet(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """No access log: request lines carry the upstream URL's secret `sig`."""


class HttpbinServer:
    """httpbin (the PyPI package) on Werkzeug's threaded server; bound before it serves, so no start-up wait."""

    def __init__(self) -> None:
        self._server: BaseWSGIServer = make_server("127.0.0.1", 0, httpbin_app, threaded=True, request_handler=_Quiet)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=10)
        self._server.server_close()
