"""The walk-through with real peers: oidc-provider tokens, httpbin upstream, a Postman collection run by newman."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.directory import Directory
from tests.e2e.node import E2E, NewmanRun, NodeTools
from tests.e2e.peers import IdpProcess
from tests.support.servers import SidecarProcess

pytestmark = pytest.mark.integration

COLLECTION = E2E / "postman" / "walkthrough.postman_collection.json"
NEWMAN_TIMEOUT = 120.0
# The pm.test calls the collection makes: fewer would mean that some of its checks silently stopped running.
ASSERTIONS = 75

# Every refusal the collection causes, and nothing else: (route, reason) -> count, all mode="enforce".
REFUSALS = {
    ("user-lookup", "missing_token"): 1,  # no token
    ("user-lookup", "wrong_issuer"): 1,  # eve, a user of the other tenant
    ("payroll", "not_allowed"): 2,  # bob (not lisa) and an app without Payroll.Invoke
}
# Every answer the sidecar gave, by route and status: the key rotation cost no failed call.
ANSWERS = {
    ("status", "200"): 1,
    ("user-lookup", "200"): 3,  # lisa, bob, an app of the tenant
    ("user-lookup", "401"): 2,
    ("payroll", "200"): 4,  # lisa, the Payroll.Invoke app, lisa with the new key's token and with the previous one
    ("payroll", "403"): 2,
    ("partner", "200"): 1,  # eve on her tenant's route
}


@pytest.fixture(scope="package")
def walkthrough(
    node: NodeTools,
    directory: Directory,
    idp: IdpProcess,
    sidecar: SidecarProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> NewmanRun:
    """The collection, run once by newman against this package's sidecar; the metrics tests read what it left."""
    folder = tmp_path_factory.mktemp("newman")
    environment = folder / "e2e.postman_environment.json"
    values = directory.postman_values(idp.url, sidecar.proxy)
    entries = [{"key": key, "value": value, "type": "secret", "enabled": True} for key, value in values.items()]
    environment.write_text(json.dumps({"name": "auth-sidecar e2e", "values": entries}))
    try:
        return node.newman(COLLECTION, environment, folder / "report.json", NEWMAN_TIMEOUT)
    finally:
        # Both hold secrets or tokens of this run.
        environment.unlink()
        (folder / "report.json").unlink(missing_ok=True)


def _requests_in(items: list[dict[str, Any]]) -> int:
    return sum(_requests_in(item["item"]) if "item" in item else 1 for item in items)


def test_the_walkthrough_collection_passes_in_newman(walkthrough: NewmanRun) -> None:
    assert walkthrough.returncode == 0, walkthrough.output
    assert walkthrough.failures() == []
    every_request = _requests_in(json.loads(COLLECTION.read_text())["item"])
    assert walkthrough.stat("requests") == every_request, walkthrough.output
    assert walkthrough.stat("requests", "failed") == 0
    assert walkthrough.stat("assertions") == ASSERTIONS, walkthrough.output
    assert walkthrough.stat("assertions", "failed") == 0
    assert walkthrough.stat("testScripts", "failed") == 0
    assert walkthrough.stat("prerequestScripts", "failed") == 0


def _samples(admin: httpx.Client, name: str, *labels: str) -> dict[tuple[str, ...], float]:
    """Every sample of one metric, as Prometheus would scrape it, keyed by the given labels' values."""
    found: dict[tuple[str, ...], float] = {}
    for family in text_string_to_metric_families(admin.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and sample.value:
                found[tuple(sample.labels[label] for label in labels)] = sample.value
    return found


def test_metrics_count_exactly_the_refusals_the_walkthrough_caused(walkthrough: NewmanRun, admin: httpx.Client) -> None:
    assert walkthrough.returncode == 0, walkthrough.output
    counted = _samples(admin, "sidecar_rejections_total", "route", "reason", "mode")
    assert counted == {(route, reason, "enforce"): count for (route, reason), count in REFUSALS.items()}


def test_metrics_count_every_answer_and_no_failed_call_around_the_key_rotation(
    walkthrough: NewmanRun, admin: httpx.Client
) -> None:
    assert walkthrough.returncode == 0, walkthrough.output
    counted: dict[tuple[str, str], float] = {}
    for (route, _method, code), value in _samples(admin, "sidecar_requests_total", "route", "method", "code").items():
        counted[route, code] = counted.get((route, code), 0) + value
    assert counted == ANSWERS
    assert _samples(admin, "sidecar_upstream_errors_total", "route", "error") == {}


def test_no_line_the_sidecar_wrote_holds_a_token_or_a_secret(
    walkthrough: NewmanRun, sidecar: SidecarProcess, directory: Directory
) -> None:
    assert walkthrough.returncode == 0, walkthrough.output
    secrets = directory.secrets()
    # Every JWT starts with "eyJ"; the secrets are the client secrets and the upstream URLs' sig values.
    leaked = [line for line in sidecar.lines if "eyJ" in line or any(secret in line for secret in secrets)]
    assert sidecar.lines
    assert leaked == [], f"{len(leaked)} lines leak"
