"""Load a policy file: YAML with line marks -> validated, resolved, frozen `Policy`, or every error at once.

Each error reads `FILE:LINE: dotted.path: message`. Providers and routes are validated one by one, so a broken
route does not hide the unknown provider of the next one; the policy is built only when nothing is wrong.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path as FilePath
from types import MappingProxyType
from typing import TypeVar, get_args

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from sidecar.policy.checks import (
    check_headers,
    check_never_match,
    check_route_providers,
    check_routes,
    check_unused_providers,
    compared_exactly,
    did_you_mean,
)
from sidecar.policy.limits import ServerLimits, UpstreamPool
from sidecar.policy.limits_spec import IPNetwork, LimitsSpec, UpstreamPoolSpec, header_room_warnings, parse_networks
from sidecar.policy.model import (
    ANYONE,
    AllowRule,
    Anyone,
    IdentityHeaders,
    Match,
    Mode,
    Policy,
    Provider,
    RateLimitStore,
    Route,
)
from sidecar.policy.provider_spec import ProviderSpec
from sidecar.policy.providers import build_provider
from sidecar.policy.route_options import build_cors, build_rate_limit
from sidecar.policy.routes import RouteTable
from sidecar.policy.rules import build_rule
from sidecar.policy.schema import NAME_PATTERN, IdentityHeadersSpec, PolicySpec, RouteSpec, parse_duration
from sidecar.policy.store_spec import RateLimitStoreSpec, cleartext_warning, store_warnings
from sidecar.policy.tls_spec import build_tls
from sidecar.policy.yamlmarks import Document, Path, read_yaml

__all__ = [
    "PolicyError",
    "load_policy",
    "parse_duration",
    "parse_policy",
    "read_policy",
    "validate_spec",
]

_Spec = TypeVar("_Spec", bound=BaseModel)
Traffic = tuple[ServerLimits, UpstreamPool, tuple[IPNetwork, ...]]

_MESSAGES = {
    "missing": "is required",
    "too_short": "must not be empty",
    "string_too_short": "must not be empty",
    "list_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
}


class PolicyError(Exception):
    """The policy is not loadable. `errors` holds every problem found, each `FILE:LINE: path: message`."""

    def __init__(self, errors: Sequence[str], warnings: Sequence[str] = ()) -> None:
        super().__init__("\n".join(errors))
        self.errors = list(errors)
        self.warnings = list(warnings)


def load_policy(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> Policy:
    """Read and parse the policy at `path`; `${VAR}` references come from `environ` (default: `os.environ`)."""
    return read_policy(path, environ)[0]


def read_policy(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> tuple[Policy, bytes]:
    """The policy at `path` and the exact bytes it was parsed from (for the `sidecar_config_info` hash)."""
    source = os.fspath(path)
    try:
        data = FilePath(source).read_bytes()
    except OSError as exc:
        raise PolicyError([f"{source}:1: (file): cannot read the policy: {exc.strerror or exc}"]) from exc
    return parse_policy_bytes(data, source, os.environ if environ is None else environ), data


def parse_policy_bytes(data: bytes, source: str, environ: Mapping[str, str]) -> Policy:
    """Parse the bytes of a policy file (UTF-8, a BOM allowed); `source` names the file in messages."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PolicyError([f"{source}:1: (file): the policy is not UTF-8 text"]) from exc
    return parse_policy(text, source, environ)


def parse_policy(text: str, source: str, environ: Mapping[str, str]) -> Policy:
    """Parse policy text; `source` names the file in messages. Raises PolicyError listing every error."""
    doc = read_yaml(text, source, environ)
    policy = _build(doc) if doc.data is not None else None
    if policy is None or doc.has_errors:
        raise PolicyError(doc.errors(), doc.warnings())
    return policy


def _build(doc: Document) -> Policy | None:
    data = doc.data
    if not isinstance(data, dict):
        doc.error((), "must be a mapping with version, providers and routes")
        return None
    top = validate_spec(PolicySpec, data, (), doc)
    raw_providers = data.get("providers")
    known = list(raw_providers) if isinstance(raw_providers, dict) else []
    providers = _providers(doc, raw_providers) if isinstance(raw_providers, dict) else {}
    raw_routes = data.get("routes")
    routes = _routes(doc, raw_routes, providers, known) if isinstance(raw_routes, list) else {}
    if isinstance(raw_routes, list):
        _check_rule_providers(doc, raw_routes, known)
    check_routes(doc, routes)
    if isinstance(raw_routes, list) and len(routes) == len(raw_routes):  # else a broken route may use one
        check_unused_providers(doc, list(providers), list(routes.values()))
    headers = _headers(doc, data.get("identity_headers"))
    traffic = _traffic(doc, data, providers.values())
    store = _store(doc, data.get("rate_limit_store"))
    check_never_match(doc, routes, providers)
    doc.check_line_ends(compared_exactly)
    if top is None or headers is None or traffic is None or doc.has_errors:
        return None
    ordered = tuple(routes.values())
    return Policy(
        providers=MappingProxyType(providers),
        routes=ordered,
        table=RouteTable.build(ordered),
        realm=top.realm,
        identity_headers=headers,
        source=doc.source,
        warnings=tuple(doc.warnings()),
        limits=traffic[0],
        upstream_pool=traffic[1],
        trusted_proxies=traffic[2],
        rate_limit_store=store,
    )


def _providers(doc: Document, raw: Mapping[str, object]) -> dict[str, Provider]:
    providers = {}
    for name, value in raw.items():
        path: Path = ("providers", name)
        if not NAME_PATTERN.fullmatch(name):
            doc.error(path, "provider names may contain only letters, digits, '_', '.' and '-'")
        spec = validate_spec(ProviderSpec, value, path, doc)
        if spec is not None:
            providers[name] = build_provider(name, spec, build_tls(doc, (*path, "tls"), spec.tls))
            if spec.introspection is not None and spec.audiences is None:
                doc.warn(path, "no audiences: any active token is accepted, whatever resource it was issued for")
    return providers


def _headers(doc: Document, raw: object) -> IdentityHeaders | None:
    if raw is not None and not isinstance(raw, dict):
        return None  # reported by the top level
    spec = validate_spec(IdentityHeadersSpec, raw or {}, ("identity_headers",), doc)
    if spec is None:
        return None
    headers = IdentityHeaders(**spec.model_dump())
    check_headers(doc, headers)
    return headers


def _traffic(doc: Document, data: Mapping[str, object], providers: Iterable[Provider]) -> Traffic | None:
    """`limits`, `upstream_pool` and `trusted_proxies`; None when one is invalid (a value that is not a mapping or
    a list is reported by the top level)."""
    raw_limits, raw_pool, raw_proxies = data.get("limits"), data.get("upstream_pool"), data.get("trusted_proxies")
    limits = validate_spec(LimitsSpec, raw_limits or {}, ("limits",), doc) if _mapping(raw_limits) else None
    pool = validate_spec(UpstreamPoolSpec, raw_pool or {}, ("upstream_pool",), doc) if _mapping(raw_pool) else None
    networks, errors = parse_networks(raw_proxies if isinstance(raw_proxies, list) else ())
    for index, message in errors:
        doc.error(("trusted_proxies", index), message)
    share_error = pool.share_error() if pool is not None else None
    if share_error is not None:
        doc.error(("upstream_pool", "max_per_route"), share_error)
    if (
        limits is None
        or pool is None
        or share_error
        or errors
        or not (raw_proxies is None or isinstance(raw_proxies, list))
    ):
        return None
    server = limits.build()
    for name, message in header_room_warnings(server, providers):
        doc.warn(("providers", name, "max_token_bytes"), message)
    return server, pool.build(), tuple(networks)


def _store(doc: Document, raw: object) -> RateLimitStore | None:
    """`rate_limit_store`, or None (absent, or invalid: then an error is on `doc`)."""
    if not isinstance(raw, dict):
        return None  # absent; any other type is reported by the top level
    spec = validate_spec(RateLimitStoreSpec, raw, ("rate_limit_store",), doc)
    if spec is None:
        return None
    store = spec.build()
    warning = cleartext_warning(store)
    if warning is not None:
        doc.warn(("rate_limit_store", "url"), warning)
    for key, message in store_warnings(store, doc.secrets):
        doc.warn(("rate_limit_store", key), message)
    return store


def _mapping(raw: object) -> bool:
    return raw is None or isinstance(raw, dict)


def _check_rule_providers(doc: Document, raw_routes: Sequence[object], known: Sequence[str]) -> None:
    """Checked on the raw data, so that a route with other errors still gets this one reported too."""
    for index, route in enumerate(raw_routes):
        rules = route.get("allow") if isinstance(route, dict) else None
        for n, rule in enumerate(rules if isinstance(rules, list) else ()):
            provider = rule.get("provider") if isinstance(rule, dict) else None
            if isinstance(provider, str) and provider and provider not in known:
                names = ", ".join(sorted(known)) or "none"
                doc.error(("routes", index, "allow", n, "provider"), f'unknown provider "{provider}" (known: {names})')


def _routes(
    doc: Document, raw: Sequence[object], providers: Mapping[str, Provider], known: Sequence[str]
) -> dict[int, Route]:
    """The valid routes by their index in the file (the index locates cross-route errors)."""
    routes = {}
    for index, value in enumerate(raw):
        path: Path = ("routes", index)
        spec = validate_spec(RouteSpec, value, path, doc)
        if spec is None:
            continue
        allow: Anyone | tuple[AllowRule, ...] = ANYONE
        if spec.allow != "anyone":
            rules = [
                build_rule(doc, (*path, "allow", n), n, rule, providers, known) for n, rule in enumerate(spec.allow)
            ]
            allow = tuple(rule for rule in rules if rule is not None)
            if len(allow) != len(rules) or not check_route_providers(doc, path, allow, providers):
                continue
        methods = frozenset(spec.match.methods) if spec.match.methods is not None else None
        match = Match(spec.match.path, spec.match.path_prefix, methods)
        mode, line = Mode(spec.mode), doc.line(path)
        routes[index] = Route(
            spec.name,
            match,
            spec.upstream,
            allow,
            mode,
            spec.forward_token,
            spec.timeout,
            line,
            max_body=spec.max_body,
            max_concurrent=spec.max_concurrent,
            forward_query=spec.forward_query,
            max_query_params=spec.max_query_params,
            rate_limit=build_rate_limit(doc, path, spec),
            cors=build_cors(doc, path, spec),
            tls=build_tls(doc, (*path, "tls"), spec.tls),
        )
        if spec.tls is not None and not spec.upstream.lower().startswith("https://"):
            doc.error((*path, "tls"), "applies to an https:// upstream only (this one is plain http)")
    return routes


def validate_spec(spec: type[_Spec], raw: object, prefix: Path, doc: Document) -> _Spec | None:
    """Validate `raw` (found at `prefix`) and report each pydantic error at its path and line."""
    try:
        return spec.model_validate(raw)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            path = _locate(doc.data, (*prefix, *error["loc"]))
            if error["type"] == "extra_forbidden":
                allowed = _fields_at(spec, error["loc"][:-1])
                hint = did_you_mean(str(path[-1]), allowed)
                doc.error(path, f'unknown key "{path[-1]}"{hint} (allowed: {", ".join(allowed)})')
            else:
                doc.error(path, _message(error))
        return None


def _locate(data: object, loc: Sequence[int | str]) -> Path:
    """Pydantic's `loc` as a path in the file: union tags and `[key]` markers are not places in the file."""
    path: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and isinstance(part, str) and part != "[key]":
            path.append(part)
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int):
            path.append(part)
            node = node[part] if 0 <= part < len(node) else None
    return tuple(path)


def _fields_at(spec: type[BaseModel], loc: Sequence[int | str]) -> list[str]:
    """The keys the model at `loc` accepts, for an "unknown key" message."""
    models = {spec}
    for part in loc:
        fields = [model.model_fields[part] for model in models if isinstance(part, str) and part in model.model_fields]
        if fields:
            models = {model for field in fields for model in _models_in(field.annotation)}
    return sorted({name for model in models for name in model.model_fields})


def _models_in(annotation: object) -> set[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return {annotation}
    return {model for arg in get_args(annotation) for model in _models_in(arg)}


def _message(error: ErrorDetails) -> str:
    kind = error["type"]
    if kind == "value_error":
        return str(error.get("ctx", {}).get("error", error["msg"]))
    if kind == "literal_error":
        return f"must be {error.get('ctx', {}).get('expected', '')}"
    if kind == "string_type":
        value = error["input"]
        if value is None:
            return "must be a string (the value is empty)"
        if isinstance(value, bool):  # only strings are ever expanded, so these are no secrets
            return f"must be a string (YAML read {str(value).lower()} as a boolean: quote it)"
        if isinstance(value, int | float):
            return f"must be a string (YAML read {value!r} as a number: quote it)"
        return "must be a string"
    return _MESSAGES.get(kind, error["msg"])
