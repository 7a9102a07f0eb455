"""The echo upstream: it describes requests back, streams without buffering, and fails, stalls or stops on demand."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
from collections.abc import AsyncIterator, Iterable, MutableMapping
from typing import Any

import httpx
import pytest
import uvicorn

from sidecar.demo.echo import CHUNK_SIZE, MAX_STREAM_BYTES, EchoUpstream, stream_pattern

Message = MutableMapping[str, Any]
STREAM_SIZE = 8 * 1024 * 1024 + 123  # several chunks and a ragged last one


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=EchoUpstream())
    async with httpx.AsyncClient(transport=transport, base_url="http://echo.test") as client:
        yield client


@contextlib.asynccontextmanager
async def serve() -> AsyncIterator[tuple[str, uvicorn.Server]]:
    """The echo on a real socket. The socket listens before uvicorn starts, so clients can connect at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    config = uvicorn.Config(EchoUpstream(), lifespan="on", ws="none", log_config=None, log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", server
    finally:
        server.should_exit = True
        await task
        sock.close()


def sha256_of(chunks: Iterable[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def http_scope(path: str, method: str = "GET", **extra: Any) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "query_string": b"", "headers": [], **extra}


async def test_echo_describes_method_path_query_headers_and_body(http: httpx.AsyncClient) -> None:
    response = await http.post("/some/where?b=2&a=%41", content=b"hello", headers={"X-Demo": "yes"})

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert (body["method"], body["path"], body["query"]) == ("POST", "/some/where", "b=2&a=%41")
    assert body["headers"]["x-demo"] == "yes"
    assert (body["body_bytes"], body["body_sha256"]) == (5, hashlib.sha256(b"hello").hexdigest())


async def test_echo_joins_repeated_headers_under_their_lower_case_name(http: httpx.AsyncClient) -> None:
    response = await http.get("/", headers=[("X-Many", "one"), ("x-many", "two")])

    assert response.json()["headers"]["x-many"] == "one, two"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"raw_path": b"/a%2Fb"}, "/a%2Fb"),
        ({"raw_path": b"/a%2Fb?q=1"}, "/a%2Fb"),
        ({}, "/a/b"),
    ],
    ids=["raw-path-as-sent", "query-left-on-raw-path", "no-raw-path"],
)
async def test_echo_reports_the_path_as_sent(extra: dict[str, Any], expected: str) -> None:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await EchoUpstream()(http_scope("/a/b", **extra), receive, send)

    assert httpx.Response(200, content=sent[1]["body"]).json()["path"] == expected


@pytest.mark.parametrize("path", ["/status/500", "/stream/bytes/10", "/slow/300"], ids=["status", "stream", "slow"])
async def test_special_routes_answer_get_only_and_echo_other_methods(http: httpx.AsyncClient, path: str) -> None:
    response = await http.post(path, content=b"x")

    assert response.status_code == 200
    assert response.json()["body_bytes"] == 1


@pytest.mark.parametrize("code", [200, 201, 204, 304, 404, 500, 503], ids=str)
async def test_status_route_answers_that_status_with_an_empty_body(http: httpx.AsyncClient, code: int) -> None:
    response = await http.get(f"/status/{code}")

    assert response.status_code == code
    assert response.content == b""
    assert ("content-length" in response.headers) == (code not in (204, 304))


@pytest.mark.parametrize(
    "path",
    [
        "/status/abc",
        "/status/",
        "/status/199",
        "/status/600",
        "/status/99999999999",
        "/stream/bytes/-1",
        "/stream/bytes/abc",
        f"/stream/bytes/{MAX_STREAM_BYTES + 1}",
        "/stream/chunked/1e3",
        "/slow/nan",
        "/slow/inf",
        "/slow/1e2",
        "/slow/301",
        "/slow/-1",
    ],
    ids=lambda path: path.strip("/").replace("/", "-") or "root",
)
async def test_bad_route_input_is_a_bad_request(http: httpx.AsyncClient, path: str) -> None:
    response = await http.get(path)

    assert response.status_code == 400
    assert "error" in response.json()


@pytest.mark.parametrize("seconds", ["0", "0.01"], ids=["zero", "hundredth"])
async def test_slow_route_answers_after_the_delay(http: httpx.AsyncClient, seconds: str) -> None:
    response = await http.get(f"/slow/{seconds}")

    assert response.status_code == 200
    assert response.json() == {"slept": float(seconds)}


async def test_slow_route_gives_up_when_the_client_leaves() -> None:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    # 300 s asked for; the disconnect ends it now (the timeout only guards the test against a regression).
    await asyncio.wait_for(EchoUpstream()(http_scope("/slow/300"), receive, send), timeout=10)

    assert sent == []


async def test_stream_stops_when_the_client_disconnects() -> None:
    first_chunk_sent = asyncio.Event()
    bodies: list[Message] = []

    async def receive() -> Message:
        await first_chunk_sent.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body":
            bodies.append(message)
            first_chunk_sent.set()

    await EchoUpstream()(http_scope(f"/stream/bytes/{MAX_STREAM_BYTES}"), receive, send)

    assert len(bodies) <= 2
    assert all(body["more_body"] for body in bodies)


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE + 7], ids=str)
def test_stream_pattern_yields_exactly_n_bytes_in_chunks_of_at_most_64_kib(size: int) -> None:
    chunks = list(stream_pattern(size))

    assert sum(map(len, chunks)) == size
    assert all(0 < len(chunk) <= CHUNK_SIZE for chunk in chunks)


def test_stream_pattern_is_deterministic_and_position_dependent() -> None:
    data = b"".join(stream_pattern(3 * CHUNK_SIZE))

    assert data == b"".join(stream_pattern(3 * CHUNK_SIZE))
    # Chunks differ from one another, so a chunk lost and another doubled changes the hash.
    assert data[:CHUNK_SIZE] != data[CHUNK_SIZE : 2 * CHUNK_SIZE]
    assert data[1:] != data[:-1]


async def test_lifespan_completes_startup_and_shutdown() -> None:
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    await EchoUpstream()({"type": "lifespan"}, receive, send)

    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]


async def test_websocket_is_refused() -> None:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await EchoUpstream()({"type": "websocket", "path": "/"}, receive, send)

    assert sent == [{"type": "websocket.close", "code": 1003}]


@pytest.mark.parametrize(("kind", "sized"), [("bytes", True), ("chunked", False)], ids=["content-length", "chunked"])
async def test_stream_routes_send_the_pattern_over_a_real_socket(kind: str, sized: bool) -> None:
    async with serve() as (url, _), httpx.AsyncClient() as client:
        async with client.stream("GET", f"{url}/stream/{kind}/{STREAM_SIZE}") as response:
            digest, received = hashlib.sha256(), 0
            async for chunk in response.aiter_raw():
                received += len(chunk)
                digest.update(chunk)

    assert response.status_code == 200
    assert response.headers.get("content-length") == (str(STREAM_SIZE) if sized else None)
    assert response.headers.get("transfer-encoding") == (None if sized else "chunked")
    assert received == STREAM_SIZE
    assert digest.hexdigest() == sha256_of(stream_pattern(STREAM_SIZE))


async def test_echo_counts_and_hashes_a_streamed_upload_over_a_real_socket() -> None:
    async def upload() -> AsyncIterator[bytes]:
        for chunk in stream_pattern(STREAM_SIZE):
            yield chunk

    async with serve() as (url, _), httpx.AsyncClient() as client:
        response = await client.put(f"{url}/upload", content=upload())

    body = response.json()
    assert body["headers"]["transfer-encoding"] == "chunked"
    assert (body["body_bytes"], body["body_sha256"]) == (STREAM_SIZE, sha256_of(stream_pattern(STREAM_SIZE)))


async def test_echo_reports_path_and_query_as_sent_over_a_real_socket() -> None:
    async with serve() as (url, server), httpx.AsyncClient() as client:
        response = await client.get(f"{url}/a%2Fb/c?x=%41&y")
        started = server.started

    assert (response.json()["path"], response.json()["query"]) == ("/a%2Fb/c", "x=%41&y")
    assert started  # uvicorn ran the lifespan startup (lifespan="on" fails the server otherwise)


async def test_echo_answers_nobody_when_the_client_leaves_mid_body() -> None:
    incoming: list[Message] = [
        {"type": "http.request", "body": b"part", "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    await EchoUpstream()(http_scope("/upload", method="PUT"), receive, send)

    assert sent == []
