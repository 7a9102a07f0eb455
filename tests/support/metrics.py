"""Read sidecar metrics the way Prometheus does: scrape /metrics and parse the exposition text."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["rejections", "sample", "total"]


def sample(admin: httpx.Client, name: str, **labels: str) -> float:
    """The value of one sample (0 when the series does not exist yet)."""
    text = admin.get("/metrics").text
    for family in text_string_to_metric_families(text):
        for item in family.samples:
            if item.name == name and all(item.labels.get(k) == v for k, v in labels.items()):
                return float(item.value)
    return 0.0


def total(admin: httpx.Client, name: str) -> float:
    """The sum of every sample of a metric, whatever its labels (0 when there is none yet)."""
    families = text_string_to_metric_families(admin.get("/metrics").text)
    return sum(item.value for family in families for item in family.samples if item.name == name)


def rejections(admin: httpx.Client, route: str, reason: str | None, mode: str = "enforce") -> float:
    return sample(admin, "sidecar_rejections_total", route=route, reason=reason or "", mode=mode)
