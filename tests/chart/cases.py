"""The chart's modes and option sets, as values an operator would write: every chart test renders from these."""

from __future__ import annotations

from typing import Any, Final

from tests.chart.doc_snippets import snippet
from tests.chart.render import values_with

__all__ = ["APP_CONTAINER", "EVERYTHING", "INGRESS", "INJECT", "OPTION_SETS", "PROMETHEUS_PODS", "TLS"]

APP_CONTAINER: Final = {
    "name": "app",
    "image": "registry.example/payroll-app:1.4.2",
    "args": ["--bind", "127.0.0.1:8081"],
    "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
}

# The pods of a Prometheus in the `monitoring` namespace: the peers that may scrape the admin port.
PROMETHEUS_PODS: Final = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
}

# An Ingress as an operator writes one for ingress-nginx, with cert-manager's certificate for the host.
INGRESS: Final = {
    "enabled": True,
    "className": "nginx",
    "annotations": {"cert-manager.io/cluster-issuer": "letsencrypt"},
    "hosts": [
        {"host": "payroll.example.com", "paths": [{"path": "/flows", "pathType": "Prefix"}, {"path": "/public"}]}
    ],
    "tls": [{"secretName": "payroll-example-com-tls", "hosts": ["payroll.example.com"]}],
}
# The listener's certificate (a kubernetes.io/tls Secret from cert-manager) and the CA of the callers' certificates.
TLS: Final = {"secretName": "payments-listener-tls", "clientCaSecretName": "payments-callers-ca"}

# Inject mode as docs/kubernetes.md sets it up: the sidecar for the operator's Deployment `payroll`.
INJECT: Final[dict[str, Any]] = snippet("inject-values")

# Every optional object and pod setting at once.
EVERYTHING: Final[dict[str, Any]] = values_with(
    image={"repository": "registry.example/auth-sidecar", "digest": "sha256:" + "ab" * 32},
    imagePullSecrets=[{"name": "registry-login"}],
    existingSecret="trigger-urls",
    env=[{"name": "ISSUER", "value": "https://login.microsoftonline.com"}],
    envFrom=[{"configMapRef": {"name": "shared-urls"}}],
    service={"type": "LoadBalancer", "port": 443, "annotations": {"lb.example/internal": "true"}, "labels": {"a": "b"}},
    metricsService={"enabled": True, "annotations": {"note": "admin"}},
    serviceAccount={"create": True, "name": "gateway", "annotations": {"iam.example/role": "none"}},
    podAnnotations={"team": "payments"},
    podLabels={"tier": "edge"},
    nodeSelector={"kubernetes.io/os": "linux"},
    tolerations=[{"key": "edge", "operator": "Exists", "effect": "NoSchedule"}],
    affinity={
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "auth-sidecar"}},
                    },
                }
            ]
        }
    },
    topologySpreadConstraints=[
        {
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "auth-sidecar"}},
        }
    ],
    priorityClassName="edge-critical",
    extraVolumes=[{"name": "secret-files", "secret": {"secretName": "trigger-files"}}],
    extraVolumeMounts=[{"name": "secret-files", "mountPath": "/etc/sidecar-secrets", "readOnly": True}],
    lifecycle={"preStop": {"exec": {"command": ["sleep", "1"]}}},
    ingress={**INGRESS, "annotations": {"nginx.ingress.kubernetes.io/backend-protocol": "HTTPS"}},
    trustedProxies=["10.244.0.0/16", "fd00:10:244::/56"],
    tls=TLS,
    podDisruptionBudget={"enabled": True},
    autoscaling={"enabled": True, "targetMemoryUtilizationPercentage": 80},
    networkPolicy={
        "enabled": True,
        "ingressFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress"}}}],
        "metricsFrom": [PROMETHEUS_PODS],
        "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 443, "protocol": "TCP"}]}],
    },
    serviceMonitor={"enabled": True, "labels": {"release": "kube-prometheus"}, "interval": "15s"},
    prometheusRule={
        "enabled": True,
        "labels": {"release": "kube-prometheus"},
        "additionalRules": [{"alert": "AuthSidecarCustom", "expr": "sidecar_ready == 0", "for": "1m"}],
    },
    grafanaDashboard={"enabled": True, "annotations": {"grafana_folder": "Security"}, "namespace": "monitoring"},
)

# name -> values. Each renders, lints clean and validates against the Kubernetes schemas.
OPTION_SETS: Final[dict[str, dict[str, Any]]] = {
    "gateway_defaults": values_with(),
    "gateway_existing_configmap": {"existingConfigMap": "payments-policy", "existingConfigMapKey": "auth.yaml"},
    "gateway_secret_env": values_with(existingSecret="trigger-urls", env=[{"name": "ISSUER", "value": "https://x"}]),
    "sidecar_mode": values_with(mode="sidecar", app={"port": 8081}, extraContainers=[APP_CONTAINER]),
    "sidecar_mode_app_pod_settings": values_with(
        mode="sidecar",
        extraContainers=[APP_CONTAINER],
        app={
            "podSecurityContext": {"fsGroup": 2000},
            "automountServiceAccountToken": True,
            "enableServiceLinks": False,
        },
    ),
    "gateway_ingress": values_with(ingress=INGRESS, trustedProxies=["10.244.0.0/16"]),
    "gateway_tls": values_with(tls=TLS, service={"port": 443}),
    "roll_on_config_change": values_with(rollOnConfigChange=True),
    "several_workers": values_with(server={"workers": 4}),
    "audit_text_logs_ipv6": values_with(server={"audit": True, "logFormat": "text", "bindAddress": "::"}),
    "no_service_account": values_with(serviceAccount={"create": False}),
    "pdb_max_unavailable": values_with(
        podDisruptionBudget={"enabled": True, "minAvailable": None, "maxUnavailable": 1}
    ),
    "monitoring_only": values_with(
        serviceMonitor={"enabled": True},
        prometheusRule={"enabled": True},
        grafanaDashboard={"enabled": True},
        networkPolicy={"metricsFrom": [PROMETHEUS_PODS]},
    ),
    "ingress_only_network_policy": values_with(networkPolicy={"enabled": True}),
    "no_network_policy_scraped": values_with(networkPolicy={"enabled": False}, serviceMonitor={"enabled": True}),
    "everything": EVERYTHING,
    "everything_sidecar_mode": {**EVERYTHING, "mode": "sidecar", "extraContainers": [APP_CONTAINER]},
}
