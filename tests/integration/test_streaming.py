"""Bodies stream both ways: 1 GiB up and 1 GiB down pass while the sidecar's memory barely moves."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx

from sidecar.demo.echo import stream_pattern
from sidecar.demo.issuer import CONTOSO_TENANT, DemoIssuer
from tests.support.servers import SidecarProcess

GIB = 1024**3
MIB = 1024**2


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


def _token(issuer: DemoIssuer) -> dict[str, str]:
    token = issuer.mint(CONTOSO_TENANT, {"aud": "api://trigger-gateway", "oid": "streamer"})
    return {"Authorization": f"Bearer {token}"}


def test_one_gib_upload_streams_through(sidecar: SidecarProcess, client: httpx.Client, issuer: DemoIssuer) -> None:
    baseline = _status_kib(sidecar.pid, "VmRSS")
    digest = hashlib.sha256()

    def body() -> Iterator[bytes]:
        chunk = bytes(range(256)) * 4096  # 1 MiB
        for _ in range(GIB // MIB):
            digest.update(chunk)
            yield chunk

    response = client.put("/files/upload", headers=_token(issuer), content=body(), timeout=300)

    assert response.status_code == 200
    echo = response.json()
    assert echo["body_bytes"] == GIB
    assert echo["body_sha256"] == digest.hexdigest()
    growth_kib = _status_kib(sidecar.pid, "VmHWM") - baseline
    assert growth_kib < 64 * 1024, f"sidecar RSS grew by {growth_kib} KiB during a 1 GiB upload"


def test_one_gib_download_streams_through(sidecar: SidecarProcess, client: httpx.Client, issuer: DemoIssuer) -> None:
    baseline = _status_kib(sidecar.pid, "VmRSS")
    expected = hashlib.sha256()
    for piece in stream_pattern(GIB):
        expected.update(piece)
    received = hashlib.sha256()
    count = 0

    with client.stream("GET", f"/files/stream/bytes/{GIB}", headers=_token(issuer), timeout=300) as response:
        assert response.status_code == 200
        assert response.headers["content-length"] == str(GIB)
        for chunk in response.iter_raw(MIB):
            count += len(chunk)
            received.update(chunk)

    assert count == GIB
    assert received.hexdigest() == expected.hexdigest()
    growth_kib = _status_kib(sidecar.pid, "VmHWM") - baseline
    assert growth_kib < 64 * 1024, f"sidecar RSS grew by {growth_kib} KiB during a 1 GiB download"


def test_chunked_download_streams_without_length(client: httpx.Client, issuer: DemoIssuer) -> None:
    size = 8 * MIB + 3
    with client.stream("GET", f"/files/stream/chunked/{size}", headers=_token(issuer)) as response:
        assert "content-length" not in response.headers
        assert sum(len(chunk) for chunk in response.iter_raw()) == size
