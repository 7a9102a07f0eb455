"""`--max-connections` (env SIDECAR_MAX_CONNECTIONS): the proxy listener's per-worker connection cap, on by default."""

from __future__ import annotations

import pytest

from sidecar.options import ServeOptions


@pytest.mark.parametrize(
    ("flags", "environ", "expected"),
    [
        ({}, {}, 1024),
        ({"max_connections": "64"}, {}, 64),
        ({}, {"SIDECAR_MAX_CONNECTIONS": "5000"}, 5000),
        ({"max_connections": "10"}, {"SIDECAR_MAX_CONNECTIONS": "5000"}, 10),
    ],
    ids=["default-1024", "flag", "env", "flag-wins"],
)
def test_the_cap_is_on_by_default_and_set_by_flag_or_env(
    flags: dict[str, str], environ: dict[str, str], expected: int
) -> None:
    assert ServeOptions.resolve({"config": "p.yaml", **flags}, environ).max_connections == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "--max-connections '0' must be between 1 and 1000000"),
        ("1000001", "--max-connections '1000001' must be between 1 and 1000000"),
        ("many", "--max-connections 'many' is not a whole number"),
    ],
    ids=["zero", "too-many", "not-a-number"],
)
def test_a_cap_out_of_range_is_refused_with_its_flag(value: str, message: str) -> None:
    with pytest.raises(ValueError) as refused:
        ServeOptions.resolve({"config": "p.yaml", "max_connections": value}, {})
    assert str(refused.value) == message
