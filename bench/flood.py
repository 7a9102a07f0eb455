"""Key flood: 10,000 tokens naming random unknown kids (one valid token in 100 mixed in); JWKS fetches at the issuer."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from typing import Any, Final

from bench.lab import Lab
from bench.targets import ROUTE, Target

__all__ = ["run_flood"]

FLOOD: Final = 10_000
_VALID_EVERY: Final = 100  # a good caller in the crowd: it must still get through
_CONCURRENCY: Final = 32
_MAX_SECONDS: Final = 120.0
_MIN_REFRESH: Final = 30.0  # the policy's jwks_min_refresh (the default)


async def _send(port: int, tokens: list[tuple[bool, str]]) -> tuple[Counter[tuple[bool, int]], float]:
    """32 keep-alive connections, each sending the next token until none are left: a plain HTTP/1.1 loop on
    asyncio streams (status 0: the connection failed; it is opened again for the next token)."""
    statuses: Counter[tuple[bool, int]] = Counter()
    queue = iter(tokens)

    async def worker() -> None:
        stream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        for valid, token in queue:
            try:
                if stream is None:
                    stream = await asyncio.open_connection("127.0.0.1", port)
                statuses[valid, await _exchange(*stream, token)] += 1
            except (OSError, asyncio.IncompleteReadError, ValueError):
                statuses[valid, 0] += 1
                if stream is not None:
                    stream[1].close()
                stream = None
        if stream is not None:
            stream[1].close()

    started = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(_CONCURRENCY))), _MAX_SECONDS)
    return statuses, time.monotonic() - started


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, token: str) -> int:
    writer.write(f"GET {ROUTE} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {token}\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode("latin-1").split("\r\n")
    length = next((int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:")), 0)
    await reader.readexactly(length)
    return int(lines[0].split(" ", 2)[1])


def _flood_one(lab: Lab, target: Target) -> dict[str, Any]:
    proc, port, _ = target.start(lab.run, lab.ports)
    valid = lab.issuer.valid_token()
    tokens = [
        (i % _VALID_EVERY == 0, valid if i % _VALID_EVERY == 0 else lab.issuer.unknown_kid_token())
        for i in range(FLOOD)
    ]
    try:
        before = lab.issuer.jwks_requests
        statuses, seconds = asyncio.run(_send(port, tokens))
        fetches = lab.issuer.jwks_requests - before
    finally:
        proc.stop()
    # Per worker process: one refetch at the first unknown kid, then at most one per jwks_min_refresh.
    bound = target.threads * (1 + math.floor(seconds / _MIN_REFRESH)) if target.kind == "sidecar" else None
    good = sum(n for (is_valid, code), n in statuses.items() if is_valid and code == 200)
    return {
        "target": target.key,
        "requests": sum(statuses.values()),
        "unknown_kid_401": sum(n for (is_valid, code), n in statuses.items() if not is_valid and code == 401),
        "valid_sent": sum(n for (is_valid, _), n in statuses.items() if is_valid),
        "valid_200": good,
        "other": {f"{'valid' if v else 'flood'}-{c}": n for (v, c), n in statuses.items() if c not in (200, 401)},
        "seconds": seconds,
        "jwks_fetches": fetches,
        "bound": bound,
    }


def run_flood(lab: Lab, targets: list[Target]) -> list[dict[str, Any]]:
    rows = []
    for target in targets:
        row = _flood_one(lab, target)
        print(f"bench: flood {target.key}: {row['jwks_fetches']} JWKS fetches in {row['seconds']:.1f} s")
        rows.append(row)
    return rows
