"""One fuzz target under atheris: `python -m fuzz.run TARGET [libFuzzer flags] [corpus dirs]`.

The code under test is imported inside `instrument_imports`, so libFuzzer sees its branches (and pyjwt's).
"""

from __future__ import annotations

import logging
import sys

import atheris


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit("usage: python -m fuzz.run TARGET [libFuzzer flags] [corpus dirs]")
    name = sys.argv[1]
    logging.disable(logging.CRITICAL)  # introspection failures would log a warning per input
    with atheris.instrument_imports(include=["sidecar", "jwt", "fuzz"]):
        from fuzz.targets import TARGETS
    if name not in TARGETS:
        sys.exit(f"unknown target {name!r} (known: {', '.join(TARGETS)})")
    atheris.Setup([sys.argv[0], *sys.argv[2:]], TARGETS[name])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
