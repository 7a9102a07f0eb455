"""`python -m bench.launch VARIANT serve ...`: the sidecar with one experimental change applied from outside.

For measuring an idea before anyone edits sidecar/ (bench/experiment.py): the product code is not changed.
Variants, joined with `+`:
- `gcfreeze`: after imports, collect once and `gc.freeze()` (start-up objects leave the collector's view).
- `gcthreshold`: `gc.set_threshold(50_000, 20, 20)` (fewer young-generation passes).
- `nolog`: the access log off (`--log-level warning`): the most a cheaper access log could save.
- `coalesce`: a response head held back and written with the first piece of its body (one write(2), not two).
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import sys
from typing import Any, cast

from sidecar.cli.main import main


class _HeldHead:
    """The client connection's transport with a response head held until the next write (or the loop's next
    turn, or a close): uvicorn writes `http.response.start` at once, and the body right after."""

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        if self._held is not None:
            data, self._held = self._held + data, None
        elif data.startswith(b"HTTP/1.1 "):
            self._held = data
            asyncio.get_running_loop().call_soon(self._flush)
            return
        self._transport.write(data)

    def _flush(self) -> None:
        if self._held is not None:
            data, self._held = self._held, None
            self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _coalesce() -> None:
    from sidecar.edge.protocol import GuardedProtocol

    made = GuardedProtocol.connection_made

    def connection_made(self: Any, transport: Any) -> None:
        made(self, cast(asyncio.Transport, _HeldHead(transport)))

    GuardedProtocol.connection_made = connection_made  # type: ignore[method-assign]


def _apply(variant: str, argv: list[str]) -> list[str]:
    for change in variant.split("+"):
        if change == "gcfreeze":
            importlib.import_module("sidecar.cli.commands")  # what `serve` imports: the bulk of the objects
            gc.collect()
            gc.freeze()
        elif change == "gcthreshold":
            gc.set_threshold(50_000, 20, 20)
        elif change == "coalesce":
            _coalesce()
        elif change == "nolog":
            argv = [*argv, "--log-level", "warning"]
        elif change != "baseline":
            raise SystemExit(f"bench.launch: unknown variant {change!r}")
    return argv


if __name__ == "__main__":
    sys.exit(main(_apply(sys.argv[1], sys.argv[2:])))
