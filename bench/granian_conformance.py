"""`python -m bench.granian_conformance`: the raw requests of the path, header and limit tests, replayed against the
sidecar (`sidecar serve`, uvicorn + GuardedProtocol) and the same Gate under granian; a table of the outcomes.

The requests follow tests/integration/test_header_rules.py (ambiguous framing, obs-fold), test_limits.py (head
size, header count, endless line, slowloris, idle, pipelining) and test_path_spellings.py (spellings of a protected
path), aimed at bench/policy.yaml's route. An outcome is the status and the problem's `reason`, `closed` (no answer
before the close) or `no answer in N s`. Every socket is on 127.0.0.1 and every read bounded by a deadline.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from typing import Any, Final

from bench.lab import Lab, lab
from bench.targets import ROUTE, Target

__all__ = ["FRONTS", "run_conformance", "table"]

FRONTS: Final = {"uvicorn": Target("sidecar", 1), "granian": Target("sidecar", 1, front="granian")}
_READ_SECONDS: Final = 8.0  # the sidecar answers a body it cannot parse with 408 about 5 s in (seen): room for it
_TIMED_SECONDS: Final = 13.0  # past the default header_timeout (10 s): slowloris and idle cases
_FRAMING: Final = {  # test_header_rules.py's AMBIGUOUS
    "two-hosts": b"Host: other\r\n",
    "two-authorizations": b"Authorization: Bearer a\r\n",
    "transfer-coding-not-chunked": b"Transfer-Encoding: gzip, chunked\r\n",
    "two-content-lengths": b"Content-Length: 0\r\nContent-Length: 0\r\n",
    "differing-content-lengths": b"Content-Length: 0\r\nContent-Length: 5\r\n",
    "content-length-list": b"Content-Length: 0, 0\r\n",
    "content-length-and-chunked": b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
    "chunked-and-content-length": b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
    "two-transfer-encodings": b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
    "space-before-colon": b"Content-Length : 5\r\n",
    "folded-header": b"X-A: a\r\n b\r\n",
    "nul-in-value": b"X-A: a\x00b\r\n",
    "bad-chunk-size": b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",  # the body below follows an invalid chunk
}
_SPELLINGS: Final = (  # test_path_spellings.py's, on the bench route; without a token each should be 401
    "",
    "/",
    "/.",
    ".",
    "%20",
    "%2e",
    "::$DATA",
    ".json",
    ";x",
    "?a=1",
    "#frag",
)
_PATHS: Final = ("/flows//user-lookup", "/flows/./user-lookup", "/flows/x/../user-lookup", "/flows/%75ser-lookup")


def _head(method: str, target: str, lines: tuple[str, ...] = ()) -> bytes:
    return "\r\n".join([f"{method} {target} HTTP/1.1", "Host: sidecar", *lines]).encode("latin-1") + b"\r\n\r\n"


def _cases(token: str) -> list[tuple[str, bytes, float]]:
    """(test id, bytes to send, seconds to wait for an answer)."""
    bearer = f"Authorization: Bearer {token}".encode()
    cases = []
    for name, lines in _FRAMING.items():
        start = f"POST {ROUTE} HTTP/1.1\r\nHost: sidecar\r\nConnection: close\r\n".encode() + bearer + b"\r\n"
        cases.append((f"framing/{name}", start + lines + b"\r\n0\r\n\r\n", _READ_SECONDS))
    close = ("Connection: close",)
    big = "a" * (70 * 1024)
    cases += [
        ("limits/head-over-max-header-bytes", _head("GET", ROUTE, (*close, f"X-Big: {big}")), _READ_SECONDS),
        ("limits/over-max-headers", _head("GET", ROUTE, (*close, *(f"X-N{i}: v" for i in range(101)))), _READ_SECONDS),
        ("limits/long-request-target", _head("GET", ROUTE + "/" + big, close), _READ_SECONDS),
        ("limits/endless-header-line", f"GET {ROUTE} HTTP/1.1\r\nHost: s\r\nX-E: {big}".encode(), _READ_SECONDS),
        ("limits/slowloris-head", f"GET {ROUTE} HTTP/1.1\r\nHost: sidecar\r\nX-Slow: a".encode(), _TIMED_SECONDS),
        ("limits/idle-connection", b"", _TIMED_SECONDS),
        ("limits/pipelined-two", _head("GET", ROUTE) * 2, _READ_SECONDS),
    ]
    cases += [(f"paths/{ROUTE}{s}", _head("GET", ROUTE + s, close), _READ_SECONDS) for s in _SPELLINGS]
    cases += [(f"paths/{p}", _head("GET", p, close), _READ_SECONDS) for p in _PATHS]
    cases += [("paths/absolute-form", _head("GET", "http://sidecar" + ROUTE, close), _READ_SECONDS)]
    return cases


def _outcome(port: int, data: bytes, wait: float) -> str:
    """What the server did with `data` within `wait` seconds: every status it sent (pipelined answers too)."""
    deadline = time.monotonic() + wait
    received, closed = b"", False
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        if data:
            sock.sendall(data)
        while not closed and (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                chunk = b""
            closed = not chunk
            received += chunk
            if data.count(b" HTTP/1.1\r\n") <= received.count(b"HTTP/1.1 ") and _complete(received):
                break
    if not received:
        return "closed" if closed else f"no answer in {wait:g} s"
    return " + ".join(_describe(part) for part in received.split(b"HTTP/1.1 ")[1:])


def _complete(received: bytes) -> bool:
    head, separator, body = received.rpartition(b"HTTP/1.1 ")[2].partition(b"\r\n\r\n")
    if not separator:
        return False
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False  # chunked or close-delimited: read until the close


def _describe(response: bytes) -> str:
    status = response[:3].decode("latin-1")
    body = response.partition(b"\r\n\r\n")[2]
    try:
        reason = json.loads(body).get("reason")
    except (ValueError, AttributeError):
        reason = None
    return f"{status} {reason}" if reason else status


def run_conformance(shared: Lab) -> dict[str, Any]:
    """Each front in turn: started afresh, every case, stopped by its PID."""
    cases = _cases(shared.issuer.valid_token())
    outcomes: dict[str, dict[str, str]] = {}
    for front, target in FRONTS.items():
        proc, port, _ = target.start(shared.run, shared.ports)
        try:
            outcomes[front] = {name: _outcome(port, data, wait) for name, data, wait in cases}
        finally:
            proc.stop()
    rows = [{"test": name, **{front: outcomes[front][name] for front in FRONTS}} for name, _, _ in cases]
    return {"fronts": list(FRONTS), "rows": rows}


def table(conformance: dict[str, Any], only_differences: bool = False) -> list[str]:
    fronts = conformance["fronts"]
    lines = ["| test | " + " | ".join(fronts) + " | same |", "|---|" + "---|" * len(fronts) + "---|"]
    for row in conformance["rows"]:
        same = len({row[front] for front in fronts}) == 1
        if not (only_differences and same):
            cells = " | ".join(f"`{row[front]}`" for front in fronts)
            lines.append(f"| `{row['test']}` | {cells} | {'yes' if same else '**no**'} |")
    return lines


if __name__ == "__main__":
    with lab() as started:
        result = run_conformance(started)
    print("\n".join(table(result)))
    sys.exit(0)
