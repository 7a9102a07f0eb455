"""A slot of a rate limit is not spent by a request the route refuses for its size (max_body, 413) or its load
(max_concurrent, 503): the rate limit counts only admitted requests. Both stores: this process's, and Redis."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.rawsock import connect, head, read_reply, send_raw
from tests.support.recorder import Recorder
from tests.support.redis import RedisServer
from tests.support.servers import SidecarProcess, ThreadServer, served

BUDGET = 2
POLICY = f"""\
version: 1
routes:
  - name: small
    match: {{ path_prefix: /small/, methods: [POST] }}
    upstream: ${{RECORDER}}/small
    max_body: 16
    allow: anyone
    rate_limit: {{ per: ip, requests: {BUDGET}, window: 1h }}
  - name: held
    match: {{ path_prefix: /held/, methods: [GET] }}
    upstream: ${{RECORDER}}/held
    max_concurrent: 1
    allow: anyone
    rate_limit: {{ per: ip, requests: {BUDGET}, window: 1h }}
"""
# The store never fails here: a timeout no busy machine reaches (a slow answer read as a failure would be a 503).
STORE = "rate_limit_store: { url: '${REDIS_URL}', timeout: 5s, on_error: deny }\n"


@pytest.fixture(scope="module")
def recorder() -> Iterator[tuple[Recorder, ThreadServer]]:
    with served(Recorder()) as pair:
        yield pair


@pytest.fixture(params=["memory", "redis"])
def sidecar(
    request: pytest.FixtureRequest, tmp_path: Path, recorder: tuple[Recorder, ThreadServer]
) -> Iterator[SidecarProcess]:
    env = {"RECORDER": recorder[1].url}
    policy = POLICY
    redis = None
    if request.param == "redis":
        redis = RedisServer(tmp_path).start()
        env["REDIS_URL"], policy = redis.url, POLICY + STORE
    (tmp_path / "policy.yaml").write_text(policy)
    process = SidecarProcess(tmp_path / "policy.yaml", env).start()
    yield process
    assert process.stop() == 0
    if redis is not None:
        redis.stop()


def post(url: str, path: str, body: bytes) -> int:
    headers = [("Content-Length", str(len(body))), ("Connection", "close")]
    return send_raw(url, head("POST", path, headers) + body).status


def test_bodies_over_max_body_spend_no_slot(sidecar: SidecarProcess) -> None:
    refused = [post(sidecar.proxy, f"/small/{n}", b"x" * 100) for n in range(BUDGET + 1)]
    assert refused == [413] * (BUDGET + 1)
    allowed = [post(sidecar.proxy, f"/small/{n}", b"{}") for n in range(BUDGET + 1)]
    assert allowed == [200] * BUDGET + [429]  # the whole budget was left for the admitted requests


def held_request(url: str, path: str, recorder: Recorder) -> socket.socket:
    sock = connect(url)
    sock.sendall(head("GET", path, [("Connection", "close")]))
    recorder.wait(lambda seen: any(s.path == path for s in seen))
    return sock


def test_requests_shed_past_max_concurrent_spend_no_slot(
    sidecar: SidecarProcess, recorder: tuple[Recorder, ThreadServer], tmp_path: Path
) -> None:
    app, url, run = recorder[0], sidecar.proxy, tmp_path.name  # paths of this run only (the recorder is shared)
    first = held_request(url, f"/held/{run}/1", app)  # takes the route's one slot (and one of the budget)
    with first:
        shed = [send_raw(url, head("GET", f"/held/shed-{n}", [("Connection", "close")])).status for n in range(3)]
        assert shed == [503] * 3
        app.release()
        assert read_reply(first).status == 200
    second = held_request(url, f"/held/{run}/2", app)  # the budget's second slot: not spent by the shed
    with second:
        app.release()
        assert read_reply(second).status == 200
    assert send_raw(url, head("GET", "/held/3", [("Connection", "close")])).status == 429
