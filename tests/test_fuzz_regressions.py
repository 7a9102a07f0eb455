"""The fuzz targets (fuzz/targets.py) on every committed seed and on every input a fuzzer ever found: each returns
or refuses with a typed Rejection, never anything else. A finding of `make fuzz` becomes a row of FOUND."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fuzz import targets
from fuzz.__main__ import TARGETS

CORPUS = Path(__file__).resolve().parent.parent / "fuzz" / "corpus"

# target -> {id: input}: what `make fuzz` found (build/fuzz/findings/), kept here once fixed.
FOUND: dict[str, dict[str, bytes]] = {
    "headers": {
        # An upstream's `Transfer_Encoding` reached the client: response_headers compared names only lower-cased,
        # so a proxy that reads `_` as `-` between us and the client would have framed the response by it.
        "response-transfer-underscore-encoding-as-found": (
            b"Fconn-ost5\ntransfer-enboding: chul+ 9\n\ntransfer-enc.1\nx-forwarded-for: 10.oding:s\n"
            b"transfer-encoding: 5\ntransfer-encoding: \x0e\x00\x00encoding: chu-encodin 8\n\n"
            b"transfer-encoding: ctraile\x00\x00\x00\x00\x00chu >\n\ntransfer_encoding: \n"
            b"transfer-encoding: c9\n\ntransfer-encoding: chu-encodin 8\n\ntransfer-encoding: ctrailer/\no0n\n"
        ),
        "response-transfer-underscore-encoding": b"Ftransfer_encoding: chunked",
        "response-connection-names-underscore-spelling": b"Fconnection: x_custom\nx-custom: 1",
    },
}

SEEDS = {
    f"{target}-{path.name[:12]}": (target, path.read_bytes())
    for target in TARGETS
    for path in sorted((CORPUS / target).iterdir())
}
REGRESSIONS = {f"{target}-{name}": (target, data) for target, rows in FOUND.items() for name, data in rows.items()}


@pytest.fixture(scope="module", autouse=True)
def _close_the_world() -> Iterator[None]:
    yield
    targets.close()


def test_make_fuzz_runs_every_target() -> None:
    assert set(TARGETS) == set(targets.TARGETS)


@pytest.mark.parametrize(("target", "data"), [*SEEDS.values(), *REGRESSIONS.values()], ids=[*SEEDS, *REGRESSIONS])
def test_a_fuzz_input_is_handled_or_refused(target: str, data: bytes) -> None:
    targets.TARGETS[target](data)
