"""Strict schemas for the Prometheus operator's ServiceMonitor and PrometheusRule, for the fields the chart emits.

kubernetes-validate ships only built-in kinds. These follow the operator's CRDs (monitoring.coreos.com/v1), but
refuse unknown fields: the API server would silently prune a misspelt field of a custom resource, so a typo
would otherwise pass every check and do nothing in a cluster.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Final

import jsonschema

__all__ = ["validate_custom_resource"]

# The operator's duration pattern (Prometheus durations: 30s, 1h30m, 0).
_DURATION: Final = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
}
_STRINGS: Final = {"type": "object", "additionalProperties": {"type": "string"}}
_METADATA: Final = {
    "type": "object",
    "required": ["name", "namespace"],
    "properties": {"name": {"type": "string", "minLength": 1}, "namespace": {"type": "string"}, "labels": _STRINGS},
}


def _strict(properties: Mapping[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "properties": dict(properties), "required": list(required)}


def _resource(spec: Mapping[str, Any]) -> dict[str, Any]:
    return _strict(
        {"apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {}, "metadata": _METADATA, "spec": spec},
        ("apiVersion", "kind", "metadata", "spec"),
    )


_RULE: Final = _strict(
    {
        "alert": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
        "record": {"type": "string"},
        "expr": {"type": "string", "minLength": 1},
        "for": _DURATION,
        "keep_firing_for": _DURATION,
        "labels": _STRINGS,
        "annotations": _STRINGS,
    },
    ("expr",),
)
_SCHEMAS: Final = {
    "PrometheusRule": _resource(
        _strict(
            {
                "groups": {
                    "type": "array",
                    "minItems": 1,
                    "items": _strict(
                        {"name": {"type": "string", "minLength": 1}, "interval": _DURATION, "rules": {"items": _RULE}},
                        ("name", "rules"),
                    ),
                }
            },
            ("groups",),
        )
    ),
    "ServiceMonitor": _resource(
        _strict(
            {
                "selector": _strict({"matchLabels": _STRINGS}, ("matchLabels",)),
                "namespaceSelector": _strict({"matchNames": {"type": "array", "items": {"type": "string"}}}),
                "jobLabel": {"type": "string"},
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": _strict(
                        {
                            "port": {"type": "string", "minLength": 1},
                            "path": {"type": "string", "pattern": "^/"},
                            "interval": _DURATION,
                            "scrapeTimeout": _DURATION,
                        },
                        ("port",),
                    ),
                },
            },
            ("selector", "endpoints"),
        )
    ),
}


def validate_custom_resource(obj: Mapping[str, Any]) -> Iterator[str]:
    """Every schema error of a ServiceMonitor or PrometheusRule (any other custom kind is an error itself)."""
    schema = _SCHEMAS.get(obj["kind"])
    if schema is None:
        yield f"{obj['kind']}: no schema for this custom resource kind"
        return
    for error in jsonschema.Draft202012Validator(schema).iter_errors(dict(obj)):
        path = "/".join(str(p) for p in error.path)
        yield f"{obj['kind']}/{obj['metadata'].get('name')} at {path}: {error.message}"
