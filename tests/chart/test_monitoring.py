"""Alerts and dashboard: valid PromQL, scoped to the release, showing what operators look for, and reading only
metrics that a running sidecar (the chart's rendered pod) actually exports."""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from sidecar.demo.issuer import CONTOSO_TENANT, DemoIssuer
from sidecar.reasons import Reason, outcome
from tests.chart.podrun import PodRun
from tests.chart.promql import Query, alert_queries, dashboard_queries, exported_series
from tests.chart.render import CHART, NAMESPACE, render, values_with
from tests.support.servers import ThreadServer, free_closed_port

DASHBOARD = json.loads((CHART / "dashboards" / "auth-sidecar.json").read_text())
ALERTS = alert_queries(render(values_with(prometheusRule={"enabled": True})))
QUERIES = ALERTS + dashboard_queries(DASHBOARD)
LISA_OID = "aaaaaaaa-0000-0000-0000-00000000000a"
JOB = "payments-auth-sidecar-metrics"  # the metrics Service's name: the `job` a ServiceMonitor gives its series


@pytest.mark.parametrize("query", QUERIES, ids=[q.origin for q in QUERIES])
def test_every_alert_and_dashboard_query_is_valid_promql(query: Query) -> None:
    assert query.metrics(), f"{query.origin}: reads no series"


@pytest.fixture(scope="module", params=[1, 2], ids=["one_worker", "two_workers"])
def exposition(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    issuer_server: tuple[DemoIssuer, ThreadServer],
    upstream: ThreadServer,
    read_only_root: bool,
) -> Iterator[str]:
    """/metrics of the chart's rendered pod after traffic of every kind: with several workers (prometheus
    multiprocess mode) a series family shows only once some worker has recorded a sample of it."""
    issuer, issuer_http = issuer_server
    values = values_with(
        env=[
            {"name": "ISSUER", "value": issuer_http.url},
            {"name": "PAYROLL_TRIGGER_URL", "value": f"http://127.0.0.1:{free_closed_port()}/gone"},
            {"name": "STATUS_URL", "value": f"{upstream.url}/static"},
        ],
        server={"workers": request.param, "drainDelaySeconds": 0.2, "graceSeconds": 5},
    )
    pod = PodRun(render(values), Path(tmp_path_factory.mktemp("pod")), read_only_root=read_only_root)
    with pod.running():
        pod.wait_ready()
        token = issuer.mint(CONTOSO_TENANT, {"aud": "api://trigger-gateway", "oid": LISA_OID})
        with httpx.Client(base_url=pod.url("http"), timeout=10, trust_env=False) as client:
            assert client.get("/public/a").status_code == 200
            assert client.post("/flows/payroll").status_code == 401
            assert client.post("/flows/payroll", headers={"Authorization": f"Bearer {token}"}).status_code == 502
            assert client.get("/nowhere").status_code == 404
        pod.send(signal.SIGHUP)  # a reload, as after a Secret change
        for _ in range(pod.workers):
            pod.wait_for_log("policy reloaded")
        yield httpx.get(pod.url("admin") + "/metrics", timeout=10, trust_env=False).text


def test_every_metric_the_alerts_and_dashboard_read_is_exported_by_the_sidecar(exposition: str) -> None:
    exported = exported_series(exposition)
    missing = {f"{q.origin}: {name}" for q in QUERIES for name in q.metrics() if name not in exported}
    assert not missing, "\n".join(sorted(missing))


ALERT_SERIES = {
    "AuthSidecarRejectionRatioHigh": {"sidecar_rejections_total", "sidecar_requests_total"},
    "AuthSidecarKeysStale": {"sidecar_jwks_age_seconds"},
    "AuthSidecarKeysRefreshFailing": {"sidecar_jwks_stale"},
    "AuthSidecarUpstream5xxHigh": {"sidecar_requests_total", "sidecar_rejections_total"},
    "AuthSidecarUpstreamErrors": {"sidecar_upstream_errors_total"},
    "AuthSidecarNotReady": {"sidecar_ready"},
    "AuthSidecarConfigReloadFailing": {"sidecar_config_reloads_total"},
    "AuthSidecarRateLimitStoreFailing": {"sidecar_ratelimit_store_up"},
}


def test_the_alerts_watch_refusals_keys_upstreams_readiness_and_reloads() -> None:
    assert {q.origin: q.metrics() for q in ALERTS} == ALERT_SERIES
    by_route = {q.origin for q in ALERTS if any("route" in labels for _, labels in q.aggregations())}
    assert {"AuthSidecarRejectionRatioHigh", "AuthSidecarUpstream5xxHigh", "AuthSidecarUpstreamErrors"} <= by_route


def matchers(selector: Any) -> dict[str, str]:
    return {m.name: m.value for m in selector.matchers.matchers}


def test_alerts_read_only_this_releases_series() -> None:
    for query in ALERTS:
        for selector in query.selectors():
            assert {"job": JOB, "namespace": NAMESPACE}.items() <= matchers(selector).items(), query.origin
    custom = alert_queries(render(values_with(prometheusRule={"enabled": True, "selector": 'service="edge"'})))
    assert all(matchers(s).get("service") == "edge" and "job" not in matchers(s) for q in custom for s in q.selectors())


def test_alert_thresholds_durations_and_switches_come_from_values() -> None:
    alerts = {"rejectionRatio": {"threshold": 0.4, "for": "20m", "severity": "page"}, "notReady": {"enabled": False}}
    rules = render(values_with(prometheusRule={"enabled": True, "alerts": alerts})).one("PrometheusRule")
    by_name = {rule["alert"]: rule for rule in rules["spec"]["groups"][0]["rules"]}
    ratio = by_name["AuthSidecarRejectionRatioHigh"]
    assert "> 0.4" in ratio["expr"] and ratio["for"] == "20m" and ratio["labels"] == {"severity": "page"}
    assert "AuthSidecarNotReady" not in by_name
    assert all(rule["annotations"]["summary"] and rule["annotations"]["description"] for rule in by_name.values())


# What an operator looks for on the dashboard: (a series, grouped by at least these labels, through this function).
DASHBOARD_SHOWS = {
    "requests_by_route": ("sidecar_requests_total", {"route"}, "rate"),
    "rejections_by_route_and_reason": ("sidecar_rejections_total", {"route", "reason"}, "rate"),
    "latency_percentiles_by_route": ("sidecar_request_duration_seconds_bucket", {"le", "route"}, "histogram_quantile"),
    "upstream_latency_by_route": ("sidecar_upstream_duration_seconds_bucket", {"le", "route"}, "histogram_quantile"),
    "upstream_errors_by_route": ("sidecar_upstream_errors_total", {"route", "error"}, "rate"),
    "key_age_by_provider": ("sidecar_jwks_age_seconds", {"provider"}, None),
    "rate_limit_store_errors_by_kind": ("sidecar_ratelimit_store_errors_total", {"error"}, "rate"),
    "rate_limit_store_health_by_pod": ("sidecar_ratelimit_store_up", {"pod"}, None),
}


@pytest.mark.parametrize(("series", "labels", "function"), DASHBOARD_SHOWS.values(), ids=DASHBOARD_SHOWS.keys())
def test_the_dashboard_shows(series: str, labels: set[str], function: str | None) -> None:
    panels = [
        q
        for q in dashboard_queries(DASHBOARD)
        if series in q.metrics()
        and any(labels <= grouping for _, grouping in q.aggregations())
        and (function is None or function in q.functions())
    ]
    assert panels, f"no panel shows {series} by {sorted(labels)}"


def test_the_dashboard_filters_every_panel_by_namespace_and_job() -> None:
    for query in dashboard_queries(DASHBOARD):
        if query.origin.startswith("$"):
            continue  # the template variables that choose namespace and job
        for selector in query.selectors():
            assert {"namespace", "job"} <= matchers(selector).keys(), query.origin


def test_the_dashboard_is_a_well_formed_grafana_dashboard() -> None:
    panels = DASHBOARD["panels"]
    assert DASHBOARD["uid"] == "auth-sidecar" and DASHBOARD["schemaVersion"] >= 36
    assert len({p["id"] for p in panels}) == len(panels)
    assert all(p["gridPos"]["x"] + p["gridPos"]["w"] <= 24 for p in panels)
    datasources = {p["datasource"]["uid"] for p in panels if p["type"] != "row"}
    assert datasources == {"${datasource}"}


def test_the_policies_live_panel_counts_only_the_live_hash_of_each_pod() -> None:
    """After a reload a pod exports its old hash with value 0: counting every hash would show 2 policies on a
    fleet that runs one."""
    [panel] = [q for q in dashboard_queries(DASHBOARD) if q.origin == "Policies live"]
    assert panel.comparisons("sidecar_config_info") == [("==", 1.0)]


# The sidecar's own 503s: it could not decide (keys, introspection, rate-limit store) or is full (overloaded,
# pool share); none of them is the upstream failing. metrics_busy is the admin listener's, never a route's.
OWN_503 = {r.value for r in Reason if outcome(r).status == 503} - {Reason.METRICS_BUSY.value}


def test_the_upstream_5xx_alert_leaves_out_the_sidecar_s_own_503s() -> None:
    assert OWN_503 >= {"keys_unavailable", "introspection_unavailable", "rate_limit_unavailable", "overloaded"}
    [alert] = [q for q in ALERTS if q.origin == "AuthSidecarUpstream5xxHigh"]
    subtracted = [s for s in alert.selectors() if s.name == "sidecar_rejections_total"]
    assert subtracted, "the sidecar's own refusals are not taken out of the 5xx answers"
    for selector in subtracted:
        [reason] = [m for m in selector.matchers.matchers if m.name == "reason"]
        assert str(reason.op) == "MatchOp.Re"
        assert {r for r in OWN_503 if re.fullmatch(reason.value, r)} == OWN_503
        assert not re.fullmatch(reason.value, "upstream_unreachable")  # 502s: the upstream's, they count
        # In audit mode keys_unavailable & co. are forwarded (labelled mode="audit"): the upstream answered those.
        assert matchers(selector).get("mode") == "enforce"
    rule = {
        r["alert"]: r
        for r in render(values_with(prometheusRule={"enabled": True})).one("PrometheusRule")["spec"]["groups"][0][
            "rules"
        ]
    }["AuthSidecarUpstream5xxHigh"]
    assert "AuthSidecarUpstreamErrors" in rule["annotations"]["description"]  # where to look next


def test_each_alert_is_tuned_under_the_key_named_like_it() -> None:
    """prometheusRule.alerts.upstreamErrors tunes AuthSidecarUpstreamErrors; the old key upstreamTimeouts still
    works (values written for an older chart keep their meaning)."""
    keys = yaml.safe_load((CHART / "values.yaml").read_text())["prometheusRule"]["alerts"]
    tuned_keys = {key for key, settings in keys.items() if settings is not None}  # upstreamTimeouts: null
    named = {q.origin.removeprefix("AuthSidecar").removesuffix("High") for q in ALERTS}
    assert tuned_keys == {name[0].lower() + name[1:] for name in named}
    for key in ("upstreamErrors", "upstreamTimeouts"):
        tuned = render(values_with(prometheusRule={"enabled": True, "alerts": {key: {"threshold": 0.7}}}))
        [errors] = [q for q in alert_queries(tuned) if q.origin == "AuthSidecarUpstreamErrors"]
        assert "> 0.7" in errors.text, key
        assert ("old name of prometheusRule.alerts.upstreamErrors" in tuned.notes) is (key == "upstreamTimeouts")
