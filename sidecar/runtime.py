"""What a running sidecar holds: the current policy (swapped whole), keys, verifier, upstream pool, metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

import httpx

from sidecar.keys import KeyStore
from sidecar.log import logger
from sidecar.metrics import Metrics
from sidecar.policy.model import Policy
from sidecar.proxy import Forwarder
from sidecar.verify import Verifier

__all__ = ["Runtime"]

_RETRY_FIRST: Final = 1.0
_RETRY_MAX: Final = 30.0


class Runtime:
    """One per process. A request reads `policy` once and keeps that snapshot to the end."""

    def __init__(self, policy: Policy, metrics: Metrics, keys: KeyStore, forwarder: Forwarder) -> None:
        self.policy = policy
        self.metrics = metrics
        self.keys = keys
        self.forwarder = forwarder
        self.verifier = Verifier(policy.providers, keys)
        self._control_client: httpx.AsyncClient | None = None
        self._fetching: asyncio.Future[None] | None = None

    @classmethod
    def create(cls, policy: Policy, metrics: Metrics) -> Runtime:
        """Build the runtime inside the running loop; keys are fetched by `fetch_keys()`."""
        client = httpx.AsyncClient(timeout=httpx.Timeout(10.0), follow_redirects=False, trust_env=False)
        runtime = cls(policy, metrics, KeyStore(client), Forwarder.create())
        runtime._control_client = client
        return runtime

    def fetch_keys(self, on_ready: Callable[[], None] | None = None) -> None:
        """Start fetching every provider's keys in the background, once the listeners are up: /readyz says 503
        until the keys are in, and an issuer that is down is retried with backoff (never a crash)."""
        self._fetching = asyncio.ensure_future(self._fetch_keys_until_ready(on_ready))

    def ready(self) -> bool:
        return self.keys.ready(self.policy.providers.values())

    async def _fetch_keys_until_ready(self, on_ready: Callable[[], None] | None) -> None:
        delay = _RETRY_FIRST
        await self.keys.prime(self.policy.providers.values())
        while not self.ready():
            missing = sorted(name for name, p in self.policy.providers.items() if not self.keys.ready([p]))
            logger.warning(
                "provider keys not fetched; retrying", extra={"fields": {"providers": missing, "retry_in_s": delay}}
            )
            await asyncio.sleep(delay)
            await self.keys.prime(self.policy.providers.values())
            delay = min(delay * 2, _RETRY_MAX)
        self.metrics.ready.set(1)
        logger.info("ready", extra={"fields": {"providers": sorted(self.policy.providers)}})
        if on_ready is not None:
            on_ready()

    async def close(self) -> None:
        if self._fetching is not None:
            self._fetching.cancel()
        await self.forwarder.close()
        if self._control_client is not None:
            await self._control_client.aclose()
