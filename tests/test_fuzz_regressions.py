"""The fuzz targets (fuzz/targets.py) on every committed seed and on every input a fuzzer ever found: each returns
or refuses with a typed Rejection, never anything else. A finding of `make fuzz` becomes a row of FOUND."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fuzz import targets
from fuzz.__main__ import TARGETS

CORPUS = Path(__file__).resolve().parent.parent / "fuzz" / "corpus"

# target -> {id: input}: what `make fuzz` found (build/fuzz/findings/), kept here once fixed.
FOUND: dict[str, dict[str, bytes]] = {
    "headers": {
        # An upstream's `Transfer_Encoding` reached the client: response_headers compared names only lower-cased,
        # so a proxy that reads `_` as `-` between us and the client would have framed the response by it.
        "response-transfer-underscore-encoding-as-found": (
            b"Fconn-ost5\ntransfer-enboding: chul+ 9\n\ntransfer-enc.1\nx-forwarded-for: 10.oding:s\n"
            b"transfer-encoding: 5\ntransfer-encoding: \x0e\x00\x00encoding: chu-encodin 8\n\n"
            b"transfer-encoding: ctraile\x00\x00\x00\x00\x00chu >\n\ntransfer_encoding: \n"
            b"transfer-encoding: c9\n\ntransfer-encoding: chu-encodin 8\n\ntransfer-encoding: ctrailer/\no0n\n"
        ),
        "response-transfer-underscore-encoding": b"Ftransfer_encoding: chunked",
        "response-connection-names-underscore-spelling": b"Fconnection: x_custom\nx-custom: 1",
    },
    # Inputs: fuzz.targets.split_response_input (flags byte, response bytes, piece lengths from the end).
    "upstream_response": {
        # llhttp reads a body for a framed 1xx other than 100-103: it was kept and handed out before the final
        # response's own body (an interim response's content injected into the answer).
        "interim-104-with-a-length-has-its-body-joined-to-the-final-body": (
            b"\x00HTTP/1.1 104 X\r\ncontent-length: 5\r\n\r\nevil!"
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
        ),
        "interim-1xx-with-a-chunked-body-as-found": (
            b"\x04HTTP/1.1 105 Cou\x14HT\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhellX\r\n0\r\nxk:ae\r\n\r\n"
            b"HTTP/1.1 201 \xff\r\n\r\n-\x0c"
        ),
        # llhttp takes any three digits: under 100 was skipped as interim (its body kept), over 599 passed on.
        "status-under-100-read-as-interim-with-its-body": (
            b"\x00HTTP/1.1 099 X\r\ncontent-length: 3\r\n\r\nabcHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
        ),
        "head-answer-status-020-with-a-body-as-found": b"\x01HTTP/1.1 020\r\n\r\nT",
        "status-600-passed-on-as-found": b"\x02HTTP/1.1 600\r\n\r\n",
        # Trailer fields were appended to the headers: sent to the client as header fields when they arrived
        # with the head (a small chunked response), and changing `headers` after the head when later.
        "trailer-fields-appended-to-the-headers": (
            b"\x00HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\ncontent-type: text/html\r\n\r\n"
        ),
        "trailer-fields-in-a-later-piece-as-found": (
            b"\x14HTTP/1.1 400 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\nx-k: abc\r\n\r\n\x14(\x01\x05\x07"
        ),
        # `Content-Length: 9 ` (llhttp allows the space) was not read as a length: the close ended the body at 1 byte.
        "content-length-with-trailing-space-cut-short-by-the-close-as-found": (
            b"\x02HTTP/1.1 400\r\ncontent-length:9 \r\n\r\nt"
        ),
        # The head limit was counted in callbacks, but httptools buffers a whole header value before its callback
        # (memory, and quadratic time, without bound) and leading whitespace never reaches one.
        "head-past-64-kib-in-one-header-value-buffered": b"\x00HTTP/1.1 200 OK\r\nx: " + b"a" * 70_000,
        "head-past-64-kib-of-whitespace-accepted": (
            b"\x08HTTP/1.1 200 OK\r\nx:" + b" " * 70_000 + b"a\r\ncontent-length: 0\r\n\r\n\xf6\xf2"
        ),
    },
}

SEEDS = {
    f"{target}-{path.name[:12]}": (target, path.read_bytes())
    for target in TARGETS
    for path in sorted((CORPUS / target).iterdir())
}
REGRESSIONS = {f"{target}-{name}": (target, data) for target, rows in FOUND.items() for name, data in rows.items()}


@pytest.fixture(scope="module", autouse=True)
def _close_the_world() -> Iterator[None]:
    yield
    targets.close()


def test_make_fuzz_runs_every_target() -> None:
    assert set(TARGETS) == set(targets.TARGETS)


@pytest.mark.parametrize(("target", "data"), [*SEEDS.values(), *REGRESSIONS.values()], ids=[*SEEDS, *REGRESSIONS])
def test_a_fuzz_input_is_handled_or_refused(target: str, data: bytes) -> None:
    targets.TARGETS[target](data)
