"""The sidecar's proxy Gate as an ASGI app for granian: the front-server experiment (issue 13 item 9), no switch.

`granian --interface asgi --factory bench.granian_app:create` serves the same Gate `sidecar serve` does, built as
sidecar/ops/run.py builds it (Runtime + Gate, keys fetched once the server is up), from the policy named by
BENCH_GRANIAN_POLICY. What granian replaces is the front: uvicorn and sidecar.edge.protocol's GuardedProtocol
(the head limits, the header timeout, the raw-socket refusals), which this app does not have. No admin listener: the
bench waits on READY_PATH, answered here before the Gate, 200 once the keys are in (the sidecar's /readyz rule).
"""

from __future__ import annotations

import gc
import os
from typing import Final

from prometheus_client import CollectorRegistry

from sidecar.edge.asgi import Receive, Scope, Send
from sidecar.edge.gate import Gate
from sidecar.edge.runtime import Runtime, policy_hash
from sidecar.observe import log
from sidecar.observe.metrics import Metrics
from sidecar.policy.load import read_policy

__all__ = ["READY_PATH", "GranianGate", "create"]

READY_PATH: Final = "/__bench/granian-ready"  # the bench's probe; never a route of bench/policy.yaml


class GranianGate:
    """Builds the Runtime and the Gate at lifespan start (inside granian's loop, as Runtime.create needs), closes
    the Runtime at lifespan end, and hands every other request to the Gate."""

    def __init__(self, policy_path: str) -> None:
        self._policy_path = policy_path
        self._runtime: Runtime | None = None
        self._gate: Gate | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http" and scope["path"] == READY_PATH:
            ready = self._runtime is not None and self._runtime.ready()
            await send({"type": "http.response.start", "status": 200 if ready else 503, "headers": []})
            await send({"type": "http.response.body", "body": b""})
        elif self._gate is not None:
            await self._gate(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                policy, text = read_policy(self._policy_path)
                self._runtime = Runtime.create(policy, policy_hash(text), Metrics(CollectorRegistry()))
                self._gate = Gate(self._runtime)
                self._runtime.fetch_keys()
                gc.freeze()  # as `sidecar serve` does after start-up (sidecar/cli/commands.py _settle_gc)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._runtime is not None:
                    await self._runtime.close()
                log.flush()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create() -> GranianGate:
    """granian's `--factory` entry: the access log on stdout as `sidecar serve` writes it (json, level info)."""
    log.configure("info", "json")
    return GranianGate(os.environ["BENCH_GRANIAN_POLICY"])
