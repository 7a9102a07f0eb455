"""How many examples a property test draws: its own number, scaled by PROPERTY_EXAMPLES_SCALE (default 1).

`make test` runs every property in full on the main Python and a tenth of the examples on the other supported
Pythons (the properties are the same code; what differs between interpreters is found early or not at all)."""

from __future__ import annotations

import os

__all__ = ["examples"]


def examples(count: int) -> int:
    scale = float(os.environ.get("PROPERTY_EXAMPLES_SCALE", "1"))
    return max(10, round(count * scale))
