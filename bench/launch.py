"""`python -m bench.launch VARIANT serve ...`: the sidecar with one experimental change applied from outside.

For measuring an idea before anyone edits sidecar/ (bench/experiment.py): the product code is not changed.
Variants, joined with `+`:
- `gcfreeze`: after imports, collect once and `gc.freeze()` (start-up objects leave the collector's view).
- `gcthreshold`: `gc.set_threshold(50_000, 20, 20)` (fewer young-generation passes).
- `nolog`: the access log off (`--log-level warning`): the most a cheaper access log could save.
"""

from __future__ import annotations

import gc
import importlib
import sys

from sidecar.cli import main


def _apply(variant: str, argv: list[str]) -> list[str]:
    for change in variant.split("+"):
        if change == "gcfreeze":
            importlib.import_module("sidecar.commands")  # what `serve` imports: the bulk of the objects
            gc.collect()
            gc.freeze()
        elif change == "gcthreshold":
            gc.set_threshold(50_000, 20, 20)
        elif change == "nolog":
            argv = [*argv, "--log-level", "warning"]
        elif change != "baseline":
            raise SystemExit(f"bench.launch: unknown variant {change!r}")
    return argv


if __name__ == "__main__":
    sys.exit(main(_apply(sys.argv[1], sys.argv[2:])))
