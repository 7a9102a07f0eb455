"""What `sidecar serve` imports: every worker pays each import in memory (RSS) and start-up time."""

from __future__ import annotations

import subprocess
import sys

import pytest

_PROBE = (
    "import sys, sidecar.cli.main, sidecar.cli.commands, sidecar.ops.workers, sidecar.edge.runtime;"
    "import sidecar.edge.gate, sidecar.ops.admin;"
    "print(' '.join(sorted({name.split('.')[0] for name in sys.modules})))"
)
NOT_IMPORTED = {
    "starlette": "the admin app is plain ASGI (Starlette: ~0.9 MiB); the demo may still use it",
    "limits": "the rate-limit library is imported at the first request a rate_limit counts (~2.3 MiB)",
    "aiohttp": "the upstream client is sidecar/upstream/pool.py",
    "redis": "the Redis client is imported only for a policy with rate_limit_store (sidecar.ratelimit.redis_store)",
}


@pytest.fixture(scope="module")
def imported() -> set[str]:
    result = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60, check=True)
    return set(result.stdout.split())


@pytest.mark.parametrize("package", list(NOT_IMPORTED), ids=list(NOT_IMPORTED))
def test_serving_does_not_import(package: str, imported: set[str]) -> None:
    assert "sidecar" in imported  # the probe did import the serving path
    assert package not in imported, NOT_IMPORTED[package]


def test_rate_limits_in_memory_never_import_the_redis_client() -> None:
    probe = (
        "import asyncio, sys\n"
        "from sidecar.policy.model import ANYONE, Match, RateKey, RateLimit, Route\n"
        "from sidecar.ratelimit.limiter import RateLimiter\n"
        "route = Route('r', Match(path='/r'), 'http://up', ANYONE, rate_limit=RateLimit(RateKey.IP, 1, 1))\n"
        "async def main():\n"
        "    limiter = RateLimiter()\n"
        "    await limiter.hit(route, 'ip:1')\n"
        "    await limiter.close()\n"
        "asyncio.run(main())\n"
        "print('redis' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
