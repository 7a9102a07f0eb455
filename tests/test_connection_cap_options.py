"""`--max-connections` (env SIDECAR_MAX_CONNECTIONS): the proxy listener's per-worker connection cap, on by default,
and its log line, at most one per interval."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry

from sidecar.edge.conncap import CAP_LOG_INTERVAL, ConnectionCap
from sidecar.observe.metrics import Metrics
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


def test_the_cap_logs_once_per_interval_with_what_happened_since(caplog: pytest.LogCaptureFixture) -> None:
    """A flood at the cap is one warning per CAP_LOG_INTERVAL, each with the counts since the line before."""
    now = [100.0]
    cap = ConnectionCap(4, Metrics(CollectorRegistry()), clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="sidecar")
    cap.refused()  # the first: logged at once
    for _ in range(5):
        cap.refused()
        cap.closed_idle()
    now[0] += CAP_LOG_INTERVAL  # the interval is over: the next event logs what came since
    cap.closed_idle()
    lines = [record for record in caplog.records if record.getMessage() == "connection cap reached"]
    counts = [(r.fields["refused"], r.fields["closed_idle"]) for r in lines]  # type: ignore[attr-defined]
    assert counts == [(1, 0), (5, 6)]
