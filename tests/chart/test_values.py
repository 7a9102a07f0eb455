"""The values contract: the schema refuses typos, values.yaml and the schema agree, the README documents them all."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator
from typing import Any

import helm_python as helm
import pytest
import yaml

from tests.chart.render import CHART, render, values_with

ROOT = CHART.parents[1]
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
DEFAULTS = yaml.safe_load((CHART / "values.yaml").read_text())

REFUSED = {
    "misspelt_top_level_key": ({"replicaCont": 3}, "replicaCont"),
    "misspelt_nested_key": ({"serviceMonitor": {"enabeld": True}}, "enabeld"),
    "misspelt_alert_setting": ({"prometheusRule": {"alerts": {"rejectionRatio": {"treshold": 0.5}}}}, "treshold"),
    "misspelt_server_flag": ({"server": {"drainDelay": 3}}, "drainDelay"),
    "unknown_mode": ({"mode": "gatway"}, "mode"),
    "count_as_text": ({"replicaCount": "two"}, "replicaCount"),
    "tag_as_digest": ({"image": {"digest": "latest"}}, "digest"),
    "port_out_of_range": ({"ports": {"admin": 99999}}, "admin"),
    "ratio_above_one": ({"prometheusRule": {"alerts": {"upstream5xx": {"threshold": 5}}}}, "threshold"),
    "bad_duration": ({"serviceMonitor": {"interval": "30 seconds"}}, "interval"),
    "misspelt_ingress_key": ({"ingress": {"enabled": True, "hostnames": ["a.example"]}}, "hostnames"),
    "ingress_path_without_slash": ({"ingress": {"hosts": [{"host": "a", "paths": [{"path": "api"}]}]}}, "path"),
    "trusted_proxy_not_an_address": ({"trustedProxies": ["ingress-nginx"]}, "trustedProxies"),
    "misspelt_tls_key": ({"tls": {"secretname": "x"}}, "secretname"),
    "unknown_inject_output": ({"inject": {"output": "kustomize"}}, "output"),
    "app_token_as_text": ({"app": {"automountServiceAccountToken": "yes"}}, "automountServiceAccountToken"),
}


@pytest.mark.parametrize(("values", "key"), REFUSED.values(), ids=REFUSED.keys())
def test_the_values_schema_refuses_typos_and_wrong_types(values: dict[str, Any], key: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=key):
        render(values_with(**values))


def test_the_defaults_pass_the_schema() -> None:
    helm.Chart.load(CHART).validate_schema(DEFAULTS)


def schema_leaves(node: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """Dotted paths of every value an operator sets: the schema's properties, down to free-form objects."""
    for key, child in node.get("properties", {}).items():
        path = f"{prefix}{key}"
        if "properties" in child:
            yield from schema_leaves(child, path + ".")
        else:
            yield path


def value_paths(values: dict[str, Any], node: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in values.items():
        child = node.get("properties", {}).get(key, {})
        if isinstance(value, dict) and "properties" in child:
            yield from value_paths(value, child, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def test_values_yaml_and_the_schema_describe_the_same_keys() -> None:
    leaves = set(schema_leaves(SCHEMA)) - {"global"}  # Helm's own, for use as a subchart
    assert set(value_paths(DEFAULTS, SCHEMA)) == leaves


def test_the_chart_readme_documents_every_value_and_no_other() -> None:
    readme = (CHART / "README.md").read_text()
    section = readme.split("\n## Values\n", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([A-Za-z0-9_.]+)` \|", section, flags=re.MULTILINE))
    assert documented == set(schema_leaves(SCHEMA)) - {"global"}


def test_the_chart_ships_the_package_version_as_app_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == project["version"]
    assert render(values_with()).container()["image"] == f"auth-sidecar:{project['version']}"


def test_the_main_readme_links_the_chart_readme() -> None:
    assert "charts/auth-sidecar/README.md" in (ROOT / "README.md").read_text()
