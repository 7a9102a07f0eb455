"""A real token issuer and echo upstream on 127.0.0.1 for the chart's rendered pods to stand in front of."""

from __future__ import annotations

import os

import pytest

from tests.chart.podrun import read_only_root_available


@pytest.fixture(scope="session")
def read_only_root() -> bool:
    """Whether rendered pods run with their root filesystem read-only here. CI must be able to; elsewhere, a
    machine where we are not root runs them without it."""
    if read_only_root_available():
        return True
    if os.environ.get("CI") == "true":
        pytest.fail("CI must run rendered pods with a read-only root: needs root and unshare (util-linux)")
    return False
