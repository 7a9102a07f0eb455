"""The Ingress to the sidecar, the client addresses behind it (trustedProxies), and the listener's TLS Secret."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from sidecar.demo.issuer import DemoIssuer
from tests.chart.cases import EVERYTHING, INGRESS, OPTION_SETS, TLS
from tests.chart.podrun import PodRun
from tests.chart.render import POLICY, render, values_with
from tests.support.servers import ThreadServer


def test_the_ingress_sends_every_host_and_path_to_the_sidecar_s_service() -> None:
    rendered = render(OPTION_SETS["gateway_ingress"])
    ingress, service = rendered.one("Ingress")["spec"], rendered.one("Service")
    assert ingress["ingressClassName"] == "nginx"
    assert ingress["tls"] == INGRESS["tls"]
    assert rendered.one("Ingress")["metadata"]["annotations"] == INGRESS["annotations"]
    backend = {"service": {"name": service["metadata"]["name"], "port": {"name": "http"}}}
    assert ingress["rules"] == [
        {
            "host": "payroll.example.com",
            "http": {
                "paths": [
                    {"path": "/flows", "pathType": "Prefix", "backend": backend},
                    {"path": "/public", "pathType": "Prefix", "backend": backend},  # pathType defaults to Prefix
                ]
            },
        }
    ]
    assert [p["name"] for p in service["spec"]["ports"]] == ["http"]  # the port the backend names
    assert "Ingress" not in render(values_with()).kinds()


def test_an_ingress_without_trusted_proxies_is_pointed_out_at_install() -> None:
    assert "The Ingress is not among trustedProxies" in render(values_with(ingress=INGRESS)).notes
    assert "https://payroll.example.com/flows  (Ingress)" in render(OPTION_SETS["gateway_ingress"]).notes
    assert "trustedProxies" not in render(OPTION_SETS["gateway_ingress"]).notes


def test_trusted_proxies_are_appended_to_the_policy_as_written() -> None:
    """The operator's lines keep their numbers (FILE:LINE errors point into the values); without the value the
    policy is mounted byte for byte."""
    text = render(OPTION_SETS["gateway_ingress"]).one("ConfigMap")["data"]["policy.yaml"]
    assert text.startswith(POLICY)
    assert text.splitlines()[-1] == 'trusted_proxies: ["10.244.0.0/16"]'
    assert render(values_with()).one("ConfigMap")["data"]["policy.yaml"] == POLICY
    unterminated = render(values_with(policy=POLICY.rstrip("\n"), trustedProxies=["10.0.0.1"]))
    assert unterminated.one("ConfigMap")["data"]["policy.yaml"].splitlines()[-1] == 'trusted_proxies: ["10.0.0.1"]'


def test_changing_trusted_proxies_rolls_the_pods_when_asked() -> None:
    def checksum(**values: Any) -> str:
        metadata = render(values_with(rollOnConfigChange=True, **values)).one("Deployment")["spec"]["template"]
        return str(metadata["metadata"]["annotations"]["checksum/policy"])

    assert checksum(trustedProxies=["10.0.0.0/8"]) != checksum(trustedProxies=["10.1.0.0/16"]) != checksum()


def client_ips(pod: PodRun) -> list[str]:
    records = [json.loads(line) for line in pod.lines if line.startswith("{")]
    return [r["client_ip"] for r in records if r.get("message") == "request"]


@pytest.mark.parametrize(
    ("proxies", "client_ip"),
    [(["127.0.0.0/8"], "203.0.113.7"), ([], "127.0.0.1")],
    ids=["behind_trusted_ingress", "no_trusted_proxies"],
)
def test_behind_the_ingress_the_sidecar_logs_the_caller_s_address(
    proxies: list[str],
    client_ip: str,
    tmp_path: Path,
    issuer_server: tuple[DemoIssuer, ThreadServer],
    upstream: ThreadServer,
    read_only_root: bool,
) -> None:
    """The rendered pod, run here: the ingress (this test, on 127.0.0.1) names the caller in X-Forwarded-For."""
    values = values_with(
        env=[{"name": "ISSUER", "value": issuer_server[1].url}],
        existingSecret="trigger-urls",
        trustedProxies=proxies,
        server={"drainDelaySeconds": 0.2, "graceSeconds": 5},
    )
    urls = {"PAYROLL_TRIGGER_URL": f"{upstream.url}/payroll", "STATUS_URL": f"{upstream.url}/static"}
    pod = PodRun(render(values), tmp_path, {"trigger-urls": urls}, read_only_root=read_only_root)
    with pod.running():
        pod.wait_ready()
        answer = httpx.get(
            pod.url("http") + "/public/x", headers={"X-Forwarded-For": "203.0.113.7"}, timeout=10, trust_env=False
        )
        assert answer.status_code == 200
        pod.wait_for_log("request")
    assert client_ips(pod) == [client_ip]


def env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


@pytest.mark.parametrize("name", ["gateway_tls", "everything_sidecar_mode"])
def test_the_listener_certificate_is_a_directory_mount_named_in_the_environment(name: str) -> None:
    """A directory mount, never subPath: the kubelet swaps a renewed Secret in place there (a subPath mount would
    keep the old certificate until the pod restarts)."""
    rendered = render(OPTION_SETS[name])
    container = rendered.container()
    volumes = {v["name"]: v for v in rendered.pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    variables = env(container)
    expected = {
        "SIDECAR_TLS_CERT": (TLS["secretName"], "tls.crt"),
        "SIDECAR_TLS_KEY": (TLS["secretName"], "tls.key"),
        "SIDECAR_TLS_CLIENT_CA": (TLS["clientCaSecretName"], "ca.crt"),
    }
    for variable, (secret, key) in expected.items():
        directory, _, file = variables[variable].rpartition("/")
        mount = mounts[directory]
        assert "subPath" not in mount and mount["readOnly"] is True
        source = volumes[mount["name"]]["secret"]
        assert source["secretName"] == secret
        assert {"key": key, "path": file} in source["items"]


def test_the_client_ca_key_is_a_value() -> None:
    container = render(values_with(tls={**TLS, "clientCaKey": "callers.pem"})).container()
    assert env(container)["SIDECAR_TLS_CLIENT_CA"].endswith("/callers.pem")


def test_with_tls_the_service_says_https_and_the_probes_stay_on_the_plain_admin_port() -> None:
    rendered = render(EVERYTHING)
    assert [p.get("appProtocol") for p in rendered.one("Service", "payments-auth-sidecar")["spec"]["ports"]] == [
        "https"
    ]
    metrics = rendered.one("Service", "payments-auth-sidecar-metrics")["spec"]["ports"]
    assert [p.get("appProtocol") for p in metrics] == [None]
    assert [e.get("scheme") for e in rendered.one("ServiceMonitor")["spec"]["endpoints"]] == [None]  # http
    container = rendered.container()
    for probe in (container["livenessProbe"], container["readinessProbe"]):
        assert probe["httpGet"]["port"] == "admin" and "scheme" not in probe["httpGet"]
    assert "https://payments-auth-sidecar.flows.svc:443/" in rendered.notes


def test_without_tls_nothing_of_it_is_rendered() -> None:
    rendered = render(values_with())
    assert not [v for v in env(rendered.container()) if v.startswith("SIDECAR_TLS")]
    assert [v["name"] for v in rendered.pod["volumes"]] == ["policy"]
    assert "appProtocol" not in rendered.one("Service")["spec"]["ports"][0]
    assert "http://payments-auth-sidecar.flows.svc:80/" in rendered.notes
