"""Policy loading: the example loads, and every mistake is reported as `FILE:LINE: path: message`, all at once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sidecar.policy.load import PolicyError, load_policy, parse_duration, parse_policy
from sidecar.policy.model import ANYONE, ClaimRequirement, Mode, Policy, UserSet
from sidecar.policy.routes import RouteHit

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "example.yaml"
EXAMPLE_ENV = {
    "USER_LOOKUP_TRIGGER_URL": "https://prod-01.westeurope.logic.azure.com/workflows/a/triggers/manual/paths/invoke"
    "?api-version=2016-10-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=lookup-signature",
    "PAYROLL_TRIGGER_URL": "https://prod-02.westeurope.logic.azure.com/workflows/b/triggers/manual/paths/invoke"
    "?api-version=2016-10-01&sig=payroll-signature",
}

# Six lines; the first route item is on line 7.
HEAD = """\
version: 1
providers:
  contoso:
    issuer: https://login.example.com/tenant/v2.0
    audiences: [api://app]
routes:
"""

PLAIN_PATH = "must be a plain ASCII path: no query, fragment, percent-encoding, backslash, spaces or control characters"
EMAIL_REFUSED = (
    "the email claim is refused: not every issuer verifies it, so anyone could claim an address "
    "(the nOAuth account takeover); match users by oid or sub instead"
)
HS_REFUSED = (
    '"HS256" is refused: with a shared secret anyone who can verify can also sign, '
    "and a public key mistaken for the secret lets anyone mint tokens"
)
ALGORITHMS = "RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA"
PROVIDER_KEYS = (
    "algorithms, audiences, entra, introspection, issuer, jwks_min_refresh, jwks_refresh, jwks_uri, leeway, "
    "max_stale, max_token_bytes, require_typ, tls"
)
COLON_MISPLACED = (
    '(yaml): a ": " where no key can start: is the line indented too far, or does a value hold ": " (then quote it)?'
)
DURATION = 'must be a duration: seconds (30) or a number with a unit ("500ms", "60s", "5m", "1h")'


def parse(text: str, environ: dict[str, str] | None = None) -> Policy:
    return parse_policy(text, "p.yaml", environ or {})


def errors(text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        parse(text, environ)
    assert str(caught.value) == "\n".join(caught.value.errors)
    return caught.value.errors


def route(body: str = "", *, name: str = "a", match: str = "{path: /a}", allow: str = "[{provider: contoso}]") -> str:
    """One route item at line 7: name 7, match 8, upstream 9, allow 10, then `body` from line 11."""
    return HEAD + (
        f"  - name: {name}\n    match: {match}\n    upstream: https://up.example.com/a\n    allow: {allow}\n" + body
    )


# --- the example ----------------------------------------------------------------------------------------------


def test_example_loads() -> None:
    policy = load_policy(EXAMPLE, EXAMPLE_ENV)
    assert [r.name for r in policy.routes] == ["user-lookup", "payroll", "status"]
    lookup, payroll, status = policy.routes
    assert lookup.upstream == EXAMPLE_ENV["USER_LOOKUP_TRIGGER_URL"]
    assert payroll.match.methods == frozenset({"POST"})
    assert payroll.allow != ANYONE and len(payroll.allow) == 2
    first, second = payroll.allow
    assert first.users == UserSet(ids=frozenset(), names=frozenset({"lisa@contoso.com"}))
    assert second.claims == (ClaimRequirement("roles", frozenset({"Payroll.Invoke"})),)
    assert (first.index, second.index) == (0, 1)
    assert status.allow is ANYONE and status.match.path_prefix == "/public/"
    assert policy.realm == "trigger-gateway"
    contoso = policy.providers["contoso"]
    assert contoso.audiences == frozenset({"api://trigger-gateway", "6f1c2a9e-0d4b-4c1e-9a57-3b2f8e7d1c40"})
    assert (contoso.leeway, contoso.jwks_min_refresh, contoso.algorithms) == (60.0, 30.0, ("RS256",))
    assert policy.source == str(EXAMPLE)
    assert policy.table.lookup("GET", "/public/status") == RouteHit(status, "/status")
    assert [w.split(": ", 2)[1] for w in policy.warnings] == ["routes[1].allow[0].users[0]"]


def test_example_needs_its_variables() -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy(os.path.relpath(EXAMPLE), {})
    assert caught.value.errors == [
        "config/example.yaml:71: routes[0].upstream: environment variable USER_LOOKUP_TRIGGER_URL is not set",
        "config/example.yaml:77: routes[1].upstream: environment variable PAYROLL_TRIGGER_URL is not set",
    ]


def test_load_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in EXAMPLE_ENV.items():
        monkeypatch.setenv(name, value)
    assert load_policy(EXAMPLE).routes[1].upstream == EXAMPLE_ENV["PAYROLL_TRIGGER_URL"]


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(PolicyError) as caught:
        load_policy(missing, {})
    assert caught.value.errors == [f"{missing}:1: (file): cannot read the policy: No such file or directory"]


def test_unreadable_files(tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(b"realm: caf\xe9\n")
    with pytest.raises(PolicyError) as caught:
        load_policy(latin1, {})
    assert caught.value.errors == [f"{latin1}:1: (file): the policy is not UTF-8 text"]
    with pytest.raises(PolicyError) as caught:
        load_policy(tmp_path, {})
    assert caught.value.errors == [f"{tmp_path}:1: (file): cannot read the policy: Is a directory"]


def test_byte_order_mark_is_ignored(tmp_path: Path) -> None:
    policy_file = tmp_path / "bom.yaml"
    policy_file.write_bytes(b"\xef\xbb\xbf" + route().encode())
    assert load_policy(policy_file, {}).routes[0].name == "a"


def test_defaults() -> None:
    policy = parse(route())
    (only,) = policy.routes
    assert (only.mode, only.forward_token, only.timeout, only.line) == (Mode.ENFORCE, False, 30.0, 7)
    assert only.forward_query is True
    assert only.match.methods is None
    provider = policy.providers["contoso"]
    assert (provider.algorithms, provider.leeway, provider.jwks_min_refresh) == (("RS256", "ES256", "PS256"), 60, 30)
    assert provider.jwks_uri is None
    assert policy.realm == "sidecar" and policy.identity_headers.user == "X-Auth-User"
    assert policy.warnings == ()


def test_values_are_resolved() -> None:
    policy = parse(
        route(
            "    mode: audit\n    forward_token: true\n    forward_query: false\n    timeout: 500ms\n",
            match="{path_prefix: /p/, methods: [post, Get, POST]}",
            allow="[{provider: contoso, users: [ABC-oid, Lisa@Contoso.COM], claims: {roles: Admin, scp: [a, b]}}]",
        )
    )
    (only,) = policy.routes
    assert only.match.methods == frozenset({"POST", "GET"})  # normalised to upper case
    assert (only.mode, only.forward_token, only.forward_query, only.timeout) == (Mode.AUDIT, True, False, 0.5)
    assert only.allow != ANYONE
    (rule,) = only.allow
    assert rule.users == UserSet(ids=frozenset({"ABC-oid"}), names=frozenset({"lisa@contoso.com"}))
    assert rule.claims == (
        ClaimRequirement("roles", frozenset({"Admin"})),
        ClaimRequirement("scp", frozenset({"a", "b"})),
    )
    assert policy.warnings == (
        'p.yaml:10: routes[0].allow[0].users[1]: "Lisa@Contoso.COM" matches the mutable upn/preferred_username; '
        "prefer the object id (oid)",
    )


def test_loopback_http_issuer_and_options() -> None:
    text = """\
version: 1
realm: my-api
identity_headers: {subject: X-Sub, provider: X-Idp}
providers:
  demo:
    issuer: http://127.0.0.1:9000/
    jwks_uri: http://localhost:9000/keys
    audiences: [a, a, b]
    algorithms: [ES256, EdDSA, ES256]
    leeway: 0
    jwks_min_refresh: 1m
  v6: {issuer: "http://[::1]:9000", audiences: [x]}
routes:
  - {name: a, match: {path: /}, upstream: "http://[::1]:8081/x?a=1", allow: [{provider: demo}, {provider: v6}]}
"""
    policy = parse(text)
    demo = policy.providers["demo"]
    assert (demo.jwks_uri, demo.audiences, demo.algorithms) == (
        "http://localhost:9000/keys",
        frozenset({"a", "b"}),
        ("ES256", "EdDSA"),
    )
    assert (demo.leeway, demo.jwks_min_refresh) == (0.0, 60.0)
    assert policy.realm == "my-api"
    assert (policy.identity_headers.subject, policy.identity_headers.provider) == ("X-Sub", "X-Idp")
    assert policy.identity_headers.user == "X-Auth-User"


# --- one mistake each: the exact message and line -------------------------------------------------------------

SINGLE_ERRORS = {
    "version-missing": (
        "routes: [{name: a, match: {path: /a}, upstream: 'http://h', allow: anyone}]\n",
        1,
        "version: is required",
    ),
    "version-unsupported": (
        HEAD.replace("version: 1", "version: 2")
        + "  - {name: a, match: {path: /a}, upstream: 'http://h', allow: anyone}\n",
        1,
        "version: unsupported version 2 (this sidecar reads version 1)",
    ),
    "version-string": (
        HEAD.replace("version: 1", "version: '1'")
        + "  - {name: a, match: {path: /a}, upstream: 'http://h', allow: anyone}\n",
        1,
        "version: must be an integer",
    ),
    "unknown-top-key": (
        route() + "rutes: []\n",
        11,
        'rutes: unknown key "rutes": did you mean "routes"? (allowed: identity_headers, limits, providers, '
        "rate_limit_store, realm, routes, trusted_proxies, upstream_pool, version)",
    ),
    "routes-empty": ("version: 1\nroutes: []\n", 2, "routes: must not be empty"),
    "routes-not-list": ("version: 1\nroutes: {a: 1}\n", 2, "routes: must be a list"),
    "root-not-mapping": ("- 1\n", 1, "(root): must be a mapping with version, providers and routes"),
    "empty-file": ("# nothing\n", 1, "(root): the policy file is empty"),
    "realm-quote": (route() + "realm: 'a\"b'\n", 11, 'realm: must be non-empty printable ASCII without " or \\'),
    "realm-control": (route() + 'realm: "a\\nb"\n', 11, 'realm: must be non-empty printable ASCII without " or \\'),
    "header-invalid": (
        route() + "identity_headers: {user: 'X User'}\n",
        11,
        "identity_headers.user: must be a valid header name (letters, digits and !#$%&'*+-.^_`|~)",
    ),
    "header-duplicate": (
        route() + "identity_headers:\n  subject: X-Who\n  user: x-who\n",
        13,
        'identity_headers.user: header "x-who" is already used for identity_headers.subject',
    ),
    "header-reserved": (
        route() + "identity_headers: {roles: authorization}\n",
        11,
        'identity_headers.roles: header "authorization" is reserved; choose another name',
    ),
    "headers-not-mapping": (route() + "identity_headers: [X-A]\n", 11, "identity_headers: must be a mapping"),
    "header-unknown-key": (
        route() + "identity_headers: {email: X-Mail}\n",
        11,
        'identity_headers.email: unknown key "email" (allowed: provider, roles, subject, tenant, user)',
    ),
    # providers: the issuer is on line 4, audiences on 5
    "issuer-missing": (
        HEAD.replace("    issuer: https://login.example.com/tenant/v2.0\n", "")
        + "  - {name: a, match: {path: /a}, upstream: 'http://h', allow: [{provider: contoso}]}\n",
        3,
        "providers.contoso: needs exactly one of issuer, entra or introspection",
    ),
    "issuer-http": (
        route().replace("https://login", "http://login"),
        4,
        "providers.contoso.issuer: must be an https URL (http only for a loopback host: localhost, 127.0.0.0/8, ::1)",
    ),
    "issuer-not-url": (
        route().replace("https://login.example.com/tenant/v2.0", "login.example.com"),
        4,
        "providers.contoso.issuer: must be an absolute http(s) URL with a host",
    ),
    "issuer-query": (
        route().replace("v2.0", "v2.0?x=1"),
        4,
        "providers.contoso.issuer: must not contain a query (?...)",
    ),
    "audiences-empty": (route().replace("[api://app]", "[]"), 5, "providers.contoso.audiences: must not be empty"),
    "audience-blank": (
        route().replace("[api://app]", "[api://app, '']"),
        5,
        "providers.contoso.audiences[1]: must not be empty",
    ),
    "audiences-string": (route().replace("[api://app]", "api://app"), 5, "providers.contoso.audiences: must be a list"),
    "provider-name": (
        route(allow="anyone").replace("contoso:", "con toso:"),
        3,
        "providers['con toso']: provider names may contain only letters, digits, '_', '.' and '-'",
    ),
    "provider-unknown-key": (
        route().replace("    audiences:", "    audience: x\n    audiences:"),
        5,
        f'providers.contoso.audience: unknown key "audience": did you mean "audiences"? (allowed: {PROVIDER_KEYS})',
    ),
    "jwks-uri-http": (
        route().replace("    audiences:", "    jwks_uri: http://keys.example.com/\n    audiences:"),
        5,
        "providers.contoso.jwks_uri: must be an https URL (http only for a loopback host: localhost, 127.0.0.0/8, ::1)",
    ),
    "algorithm-none": (
        route().replace("    audiences:", "    algorithms: [RS256, none]\n    audiences:"),
        5,
        'providers.contoso.algorithms[1]: "none" is refused: it accepts unsigned tokens',
    ),
    "algorithm-hs256": (
        route().replace("    audiences:", "    algorithms: [HS256]\n    audiences:"),
        5,
        f"providers.contoso.algorithms[0]: {HS_REFUSED}",
    ),
    "algorithm-unknown": (
        route().replace("    audiences:", "    algorithms: [rs256]\n    audiences:"),
        5,
        f'providers.contoso.algorithms[0]: unsupported algorithm "rs256" (allowed: {ALGORITHMS})',
    ),
    "algorithms-empty": (
        route().replace("    audiences:", "    algorithms: []\n    audiences:"),
        5,
        "providers.contoso.algorithms: must not be empty",
    ),
    "leeway-too-long": (
        route().replace("    audiences:", "    leeway: 11m\n    audiences:"),
        5,
        "providers.contoso.leeway: must be at least 0s and at most 600s",
    ),
    "leeway-not-duration": (
        route().replace("    audiences:", "    leeway: a minute\n    audiences:"),
        5,
        f"providers.contoso.leeway: {DURATION}",
    ),
    "jwks-min-refresh-too-short": (
        route().replace("    audiences:", "    jwks_min_refresh: 500ms\n    audiences:"),
        5,
        "providers.contoso.jwks_min_refresh: must be at least 1s",
    ),
    # routes: name 7, match 8, upstream 9, allow 10, extra keys from 11
    "route-name-chars": (
        route(name="pay roll"),
        7,
        "routes[0].name: must contain only letters, digits, '_', '.' and '-' (it becomes a metric label)",
    ),
    "route-name-number": (
        route(name="123"),
        7,
        "routes[0].name: must be a string (YAML read 123 as a number: quote it)",
    ),
    "route-name-list": (route(name="[a]"), 7, "routes[0].name: must be a string"),
    "route-unknown-key": (
        route("    users: [x]\n"),
        11,
        'routes[0].users: unknown key "users": users belongs in an allow rule: allow: [{provider: ..., users: ...}] '
        "(allowed: allow, cors, forward_query, forward_token, match, max_body, max_concurrent, max_query_params, mode, "
        "name, rate_limit, timeout, tls, upstream)",
    ),
    "match-neither": (route(match="{methods: [GET]}"), 8, "routes[0].match: needs exactly one of path or path_prefix"),
    "match-both": (
        route(match="{path: /a, path_prefix: /a/}"),
        8,
        "routes[0].match: needs exactly one of path or path_prefix",
    ),
    "match-unknown-key": (
        route(match="{prefix: /a}"),
        8,
        'routes[0].match.prefix: unknown key "prefix": did you mean "path_prefix"? '
        "(allowed: methods, path, path_prefix)",
    ),
    "path-relative": (route(match="{path: a}"), 8, 'routes[0].match.path: must start with "/"'),
    "path-query": (
        route(match="{path: '/a?b'}"),
        8,
        f"routes[0].match.path: {PLAIN_PATH}",
    ),
    "path-percent": (
        route(match="{path_prefix: /a%2F}"),
        8,
        f"routes[0].match.path_prefix: {PLAIN_PATH}",
    ),
    "path-non-ascii": (
        route(match="{path: /café}"),
        8,
        f"routes[0].match.path: {PLAIN_PATH}",
    ),
    "path-empty-segment": (
        route(match="{path: /a//b}"),
        8,
        'routes[0].match.path: must not contain an empty segment ("//")',
    ),
    "path-dot-dot": (
        route(match="{path_prefix: /a/../b/}"),
        8,
        'routes[0].match.path_prefix: must not contain "." or ".." segments',
    ),
    "path-dot-end": (route(match="{path: /a/.}"), 8, 'routes[0].match.path: must not contain "." or ".." segments'),
    "methods-empty": (route(match="{path: /a, methods: []}"), 8, "routes[0].match.methods: must not be empty"),
    "methods-null": (
        route(match="{path: /a, methods: }"),
        8,
        "routes[0].match.methods: must not be empty (omit the key instead)",
    ),
    "method-not-token": (
        route(match="{path: /a, methods: ['GET POST']}"),
        8,
        "routes[0].match.methods[0]: must be an HTTP method name such as GET or POST",
    ),
    "upstream-missing": (
        route().replace("    upstream: https://up.example.com/a\n", ""),
        7,
        "routes[0].upstream: is required",
    ),
    "upstream-empty": (
        route().replace("https://up.example.com/a", ""),
        9,
        "routes[0].upstream: must be a string (the value is empty)",
    ),
    "upstream-relative": (
        route().replace("https://up.example.com/a", "/a"),
        9,
        "routes[0].upstream: must be an absolute http(s) URL with a host",
    ),
    "upstream-ftp": (
        route().replace("https://up.example.com/a", "ftp://up.example.com/a"),
        9,
        "routes[0].upstream: must be an absolute http(s) URL with a host",
    ),
    "upstream-userinfo": (
        route().replace("https://up.example.com", "https://u:p@up.example.com"),
        9,
        "routes[0].upstream: must not contain user information (user:password@)",
    ),
    "upstream-fragment": (
        route().replace("/a\n", "/a#top\n", 1),
        9,
        "routes[0].upstream: must not contain a fragment (#...)",
    ),
    "upstream-port": (
        route().replace("up.example.com", "up.example.com:99999"),
        9,
        "routes[0].upstream: has an invalid port",
    ),
    "upstream-space": (
        route().replace("/a\n", "/a b\n", 1),
        9,
        "routes[0].upstream: must not contain spaces or control characters",
    ),
    "allow-missing": (route().replace("    allow: [{provider: contoso}]\n", ""), 7, "routes[0].allow: is required"),
    "allow-other-word": (route(allow="everyone"), 10, 'routes[0].allow: must be "anyone" or a list of rules'),
    "allow-null": (route(allow=""), 10, 'routes[0].allow: must be "anyone" or a list of rules'),
    "allow-empty": (route(allow="[]"), 10, "routes[0].allow: must not be empty"),
    "mode-unknown": (route("    mode: strict\n"), 11, "routes[0].mode: must be 'enforce' or 'audit'"),
    "forward-token-not-bool": (
        route("    forward_token: maybe\n"),
        11,
        "routes[0].forward_token: must be true or false",
    ),
    "forward-query-not-bool": (
        route("    forward_query: drop\n"),
        11,
        "routes[0].forward_query: must be true or false",
    ),
    "timeout-zero": (route("    timeout: 0s\n"), 11, "routes[0].timeout: must be more than 0s"),
    "timeout-negative": (route("    timeout: -1\n"), 11, "routes[0].timeout: must be a finite, non-negative duration"),
    # rules: all on line 10 (flow style) or below it (block style)
    "rule-provider-unknown": (
        route(allow="[{provider: contso}]"),
        10,
        'routes[0].allow[0].provider: unknown provider "contso" (known: contoso)',
    ),
    "rule-provider-missing": (route(allow="[{users: [x]}]"), 10, "routes[0].allow[0].provider: is required"),
    "rule-unknown-key": (
        route(allow="[{provider: contoso, roles: [x]}]"),
        10,
        'routes[0].allow[0].roles: unknown key "roles": did you mean claims: {roles: [...]}? '
        "(allowed: app_tokens_only, apps, claims, groups, provider, scopes, user_tokens_only, users)",
    ),
    "users-empty": (route(allow="[{provider: contoso, users: []}]"), 10, "routes[0].allow[0].users: must not be empty"),
    "users-null": (
        route(allow="\n      - provider: contoso\n        users:"),
        12,
        "routes[0].allow[0].users: must not be empty (omit the key instead)",
    ),
    "users-blank-entry": (
        route(allow="[{provider: contoso, users: [a, '']}]"),
        10,
        "routes[0].allow[0].users[1]: must not be empty",
    ),
    "users-number": (
        route(allow="[{provider: contoso, users: [12345]}]"),
        10,
        "routes[0].allow[0].users[0]: must be a string (YAML read 12345 as a number: quote it)",
    ),
    "claims-email": (
        route(allow="\n      - provider: contoso\n        claims:\n          email: [a@b.c]"),
        13,
        f"routes[0].allow[0].claims.email: {EMAIL_REFUSED}",
    ),
    "claim-name-empty": (
        route(allow="[{provider: contoso, claims: {'': [x]}}]"),
        10,
        "routes[0].allow[0].claims['']: must not be empty",
    ),
    "claims-empty": (
        route(allow="[{provider: contoso, claims: {}}]"),
        10,
        "routes[0].allow[0].claims: must not be empty",
    ),
    "claims-list": (
        route(allow="[{provider: contoso, claims: [roles]}]"),
        10,
        "routes[0].allow[0].claims: must be a mapping",
    ),
    "claim-values-empty": (
        route(allow="[{provider: contoso, claims: {roles: []}}]"),
        10,
        "routes[0].allow[0].claims.roles: must not be empty",
    ),
    "claim-value-bool": (
        route(allow="[{provider: contoso, claims: {admin: [true]}}]"),
        10,
        "routes[0].allow[0].claims.admin[0]: must be a string (YAML read true as a boolean: quote it)",
    ),
    "scope-with-space": (
        route(allow="[{provider: contoso, claims: {scp: 'a b'}}]"),
        10,
        "routes[0].allow[0].claims.scp: a scope never contains a space: list each scope as its own item",
    ),
    # YAML itself
    "yaml-syntax": (
        route() + "realm: [unclosed\n",
        11,
        '(yaml): a list in [...] that is not closed with "]", or items not separated by ","\n'
        "    realm: [unclosed\n"
        "           ^",
    ),
    "yaml-tab": (
        route() + "realm:\tx: y\n",
        11,
        "(yaml): a tab: YAML indents with spaces only\n    realm: x: y\n          ^",
    ),
    "yaml-indentation": (
        route().replace("    upstream:", "   upstream:"),
        9,
        "(yaml): this line is not indented like the lines above it: the keys of one mapping, and the items of one "
        "list, start in the same column (YAML nests by indentation, with spaces)\n"
        "       upstream: https://up.example.com/a\n"
        "       ^",
    ),
    "yaml-value-with-colon": (
        route() + "realm: a: b\n",
        11,
        COLON_MISPLACED + "\n    realm: a: b\n            ^",
    ),
    "yaml-unclosed-quote": (
        route() + 'realm: "abc\n',
        11,
        '(yaml): a quoted value that is never closed: the file ends inside the quotes\n    realm: "abc\n           ^',
    ),
    "yaml-secret-hidden": (
        route().replace("upstream: https://up.example.com/a", "upstream: https://up.example.com/a?sig=s3cr3t  x: y"),
        9,
        COLON_MISPLACED
        + "\n        upstream: https://up.example.com/a?***  x: y\n    "
        + " " * 45
        + "^",  # under the ":" after x
    ),
    "yaml-alias": (
        route().replace("[{provider: contoso}]", "&rules [{provider: contoso}]")
        + "  - {name: b, match: {path: /b}, upstream: 'http://h', allow: *rules}\n",
        11,
        "(yaml): YAML aliases (*name) are not supported: write the value where it applies\n"
        "      - {name: b, match: {path: /b}, upstream: 'http://h', allow: *rules}\n"
        "                                                                  ^",
    ),
    "yaml-two-documents": (
        route() + "---\nversion: 1\n",
        11,
        '(yaml): a second document ("---"): a policy file holds one\n    ---\n    ^',
    ),
    "yaml-unknown-tag": (
        route(allow="!!python/object:os.system [{provider: contoso}]"),
        10,
        "routes[0].allow: unsupported YAML tag tag:yaml.org,2002:python/object:os.system",
    ),
    "yaml-unknown-scalar-tag": (
        route("    mode: !secret x\n"),
        11,
        "routes[0].mode: could not determine a constructor for the tag '!secret'",
    ),
    "yaml-key-not-string": (route("    1: x\n"), 11, "routes[0]: mapping keys must be strings (quote it)"),
    "yaml-duplicate-key": (
        route("    upstream: https://evil.example.com/\n"),
        11,
        'routes[0].upstream: duplicate key "upstream" (first at line 9)',
    ),
    "yaml-duplicate-flow-key": (
        route(match="{path: /a, path: /b}"),
        8,
        'routes[0].match.path: duplicate key "path" (first at line 8)',
    ),
    "yaml-duplicate-top-key": (
        route() + "providers:\n  x: {}\n",
        11,
        'providers: duplicate key "providers" (first at line 2)',
    ),
}


@pytest.mark.parametrize(("text", "line", "message"), SINGLE_ERRORS.values(), ids=SINGLE_ERRORS.keys())
def test_single_error(text: str, line: int, message: str) -> None:
    assert errors(text) == [f"p.yaml:{line}: {message}"]


def test_every_error_is_collected() -> None:
    text = """\
version: 1
providers:
  contoso:
    issuer: http://login.example.com/
    audiences: []
routes:
  - name: a
    match: {path: a}
    upstream: ftp://x
    allow: [{provider: contso, claims: {email: x}}]
  - name: b
    match: {path: /b, path: /c}
    allow: nobody
    mode: strict
"""
    assert errors(text) == [
        "p.yaml:4: providers.contoso.issuer: must be an https URL (http only for a loopback host: localhost, "
        "127.0.0.0/8, ::1)",
        "p.yaml:5: providers.contoso.audiences: must not be empty",
        'p.yaml:8: routes[0].match.path: must start with "/"',
        "p.yaml:9: routes[0].upstream: must be an absolute http(s) URL with a host",
        "p.yaml:10: routes[0].allow[0].claims.email: the email claim is refused: not every issuer verifies it, so "
        "anyone could claim an address (the nOAuth account takeover); match users by oid or sub instead",
        'p.yaml:10: routes[0].allow[0].provider: unknown provider "contso" (known: contoso)',
        "p.yaml:11: routes[1].upstream: is required",
        'p.yaml:12: routes[1].match.path: duplicate key "path" (first at line 12)',
        'p.yaml:13: routes[1].allow: must be "anyone" or a list of rules',
        "p.yaml:14: routes[1].mode: must be 'enforce' or 'audit'",
    ]


def test_unknown_provider_when_none_defined() -> None:
    text = "version: 1\nroutes:\n  - {name: a, match: {path: /a}, upstream: 'http://h', allow: [{provider: x}]}\n"
    assert errors(text) == ['p.yaml:3: routes[0].allow[0].provider: unknown provider "x" (known: none)']


def test_providers_may_be_empty_when_every_route_is_anyone() -> None:
    for providers in ("", "providers:\n", "providers: {}\n"):
        route = "  - {name: a, match: {path: /a}, upstream: 'http://h', allow: anyone}\n"
        text = f"version: 1\n{providers}routes:\n{route}"
        assert parse(text).providers == {}


# --- ambiguity across routes ----------------------------------------------------------------------------------


def routes_text(*matches: str) -> str:
    """One route per match, named r0, r1, ...; route i is on line 7 + 4*i, its match on the next line."""
    items = [
        f"  - name: r{i}\n    match: {m}\n    upstream: https://up.example.com/\n    allow: [{{provider: contoso}}]\n"
        for i, m in enumerate(matches)
    ]
    return HEAD + "".join(items)


CONFLICTS = {
    "same-path-same-method": (
        ["{path: /a, methods: [POST]}", "{path: /a, methods: [post]}"],
        'p.yaml:12: routes[1].match.path: route "r1" and route "r0" (line 7) both match path /a for POST; '
        "one request must have one route",
    ),
    "same-path-no-methods": (
        ["{path: /a}", "{path: /a}"],
        'p.yaml:12: routes[1].match.path: route "r1" and route "r0" (line 7) both match path /a for every method; '
        "one request must have one route",
    ),
    "absent-methods-overlap-everything": (
        ["{path_prefix: /p/, methods: [GET, HEAD]}", "{path_prefix: /p/}"],
        'p.yaml:12: routes[1].match.path_prefix: route "r1" and route "r0" (line 7) both match path_prefix /p/ '
        "for GET, HEAD; one request must have one route",
    ),
    "some-methods-shared": (
        ["{path: /a, methods: [GET, POST]}", "{path: /b}", "{path: /a, methods: [PUT, POST, GET]}"],
        'p.yaml:16: routes[2].match.path: route "r2" and route "r0" (line 7) both match path /a for GET, POST; '
        "one request must have one route",
    ),
}


@pytest.mark.parametrize(("matches", "message"), CONFLICTS.values(), ids=CONFLICTS.keys())
def test_conflicting_routes(matches: list[str], message: str) -> None:
    assert errors(routes_text(*matches)) == [message]


NOT_CONFLICTS = {
    "disjoint-methods": ["{path: /a, methods: [GET]}", "{path: /a, methods: [POST]}"],
    "path-and-prefix": ["{path: /a}", "{path_prefix: /b}"],
    "trailing-slash-differs": ["{path: /a}", "{path: /a/}"],
    "case-differs": ["{path: /a}", "{path: /A}"],
}


@pytest.mark.parametrize("matches", NOT_CONFLICTS.values(), ids=NOT_CONFLICTS.keys())
def test_distinct_routes(matches: list[str]) -> None:
    policy = parse(routes_text(*matches))
    assert len(policy.routes) == len(matches) and policy.warnings == ()


NESTED = {
    "path-inside-prefix": (
        ["{path_prefix: /public/}", "{path: /public/health}"],
        'p.yaml:12: routes[1].match.path: path /public/health is inside path_prefix /public/ of route "r0" (line 7); '
        'route "r1" takes the requests it matches',
    ),
    "prefix-inside-prefix": (
        ["{path_prefix: /}", "{path_prefix: /api/}"],
        'p.yaml:12: routes[1].match.path_prefix: path_prefix /api/ is inside path_prefix / of route "r0" (line 7); '
        'route "r1" takes the requests it matches',
    ),
    "prefix-with-and-without-slash": (
        ["{path_prefix: /a}", "{path_prefix: /a/}"],
        'p.yaml:12: routes[1].match.path_prefix: path_prefix /a/ is inside path_prefix /a of route "r0" (line 7); '
        'route "r1" takes the requests it matches',
    ),
    "path-equal-to-prefix": (
        ["{path: /a}", "{path_prefix: /a}"],
        'p.yaml:8: routes[0].match.path: path /a is inside path_prefix /a of route "r1" (line 11); '
        'route "r0" takes the requests it matches',
    ),
}


@pytest.mark.parametrize(("matches", "warning"), NESTED.values(), ids=NESTED.keys())
def test_nested_routes_warn(matches: list[str], warning: str) -> None:
    assert parse(routes_text(*matches)).warnings == (warning,)


def test_nesting_with_disjoint_methods_is_silent() -> None:
    text = routes_text("{path_prefix: /a/, methods: [GET]}", "{path: /a/b, methods: [POST]}")
    assert parse(text).warnings == ()


def test_duplicate_route_names() -> None:
    assert errors(routes_text("{path: /a}", "{path: /b}", "{path: /c}").replace("r2", "r0")) == [
        'p.yaml:15: routes[2].name: duplicate route name "r0" (first at line 7)'
    ]


def test_unused_provider_warns() -> None:
    assert parse(route(allow="anyone")).warnings == (
        'p.yaml:3: providers.contoso: provider "contoso" is not used by any route',
    )


DID_YOU_MEAN = {
    "authority-outside-entra": (
        route().replace("    audiences:", "    authority: http://127.0.0.1:9400\n    audiences:"),
        'p.yaml:5: providers.contoso.authority: unknown key "authority": authority belongs under entra: '
        "entra: {tenant: ..., authority: ...}",
    ),
    "tenant-outside-entra": (
        route().replace("    audiences:", f"    tenant: {'1' * 8}\n    audiences:"),
        'p.yaml:5: providers.contoso.tenant: unknown key "tenant": tenant belongs under entra: entra: {tenant: ...}',
    ),
    "role-in-a-rule": (
        route(allow="[{provider: contoso, role: [Payroll.Invoke]}]"),
        'p.yaml:10: routes[0].allow[0].role: unknown key "role": did you mean claims: {roles: [...]}?',
    ),
    "groups-on-a-route": (
        route("    groups: [x]\n"),
        'p.yaml:11: routes[0].groups: unknown key "groups": groups belongs in an allow rule: '
        "allow: [{provider: ..., groups: ...}]",
    ),
    "typo": (
        route().replace("    audiences:", "    algoritms: [RS256]\n    audiences:"),
        'p.yaml:5: providers.contoso.algoritms: unknown key "algoritms": did you mean "algorithms"?',
    ),
    "nothing-close": (route("    colour: blue\n"), 'p.yaml:11: routes[0].colour: unknown key "colour" (allowed:'),
}


@pytest.mark.parametrize(("text", "message"), DID_YOU_MEAN.values(), ids=DID_YOU_MEAN.keys())
def test_unknown_keys_say_where_they_belong(text: str, message: str) -> None:
    (found,) = errors(text)
    assert found.startswith(message), found


# --- rules that can never match ------------------------------------------------------------------------------

TID = "11111111-2222-3333-4444-555555555555"
OID = "aaaaaaaa-0000-0000-0000-00000000000a"
# The provider is Entra; `route()` puts the rule on line 10 and the first route body line at 11.
ENTRA_HEAD = HEAD.replace("    issuer: https://login.example.com/tenant/v2.0\n", f"    entra: {{tenant: {TID}}}\n")
USERS_GUID = (
    "is not an object id: Entra names a user by oid (a GUID, on the user's Overview page) or upn; "
    "a display name never matches"
)
APPS_GUID = (
    "is not an application (client) id: Entra's azp and appid are GUIDs (the app registration's Overview page); "
    "an app's name never matches"
)
GROUPS_GUID = (
    "is not a group object id: Entra's groups claim lists GUIDs, unless the app registration is set to emit names "
    "(sAMAccountName or cloud group names)"
)
NEVER_MATCH = {
    "entra-user-display-name": (
        route(allow="\n      - provider: contoso\n        users:\n          - Lisa Smith\n"),
        f'p.yaml:13: routes[0].allow[0].users[0]: "Lisa Smith" {USERS_GUID}',
    ),
    "entra-app-name": (
        route(allow=f"[{{provider: contoso, apps: [{OID}, payroll-app]}}]"),
        f'p.yaml:10: routes[0].allow[0].apps[1]: "payroll-app" {APPS_GUID}',
    ),
    "entra-group-name": (
        route(allow="[{provider: contoso, groups: [Payroll Admins]}]"),
        f'p.yaml:10: routes[0].allow[0].groups[0]: "Payroll Admins" {GROUPS_GUID}',
    ),
    "http-upstream-with-query": (
        route().replace("https://up.example.com/a", "http://up.example.com/a?sig=s3cr3t"),
        "p.yaml:9: routes[0].upstream: http:// sends the query (a signature such as sig) in clear text to "
        "up.example.com: anyone on the way can read and replay it; use https://",
    ),
    "scopes-on-an-app-only-rule": (
        route(allow="[{provider: contoso, scopes: [Flows.Run], claims: {idtyp: app}}]"),
        "p.yaml:10: routes[0].allow[0].scopes: scopes match only user (delegated) tokens, and this rule takes app "
        "tokens only (idtyp: app): an app's client-credentials token carries roles, never scp "
        "(use claims: {roles: [...]})",
    ),
    "entra-claim-role": (
        route(allow="[{provider: contoso, claims: {role: [Payroll.Invoke]}}]"),
        'p.yaml:10: routes[0].allow[0].claims.role: Entra\'s tokens carry no claim "role" (claim names are '
        'case-sensitive): did you mean "roles"?',
    ),
    "entra-claim-Roles": (
        route(allow="[{provider: contoso, claims: {Roles: [Payroll.Invoke]}}]"),
        'p.yaml:10: routes[0].allow[0].claims.Roles: Entra\'s tokens carry no claim "Roles" (claim names are '
        'case-sensitive): did you mean "roles"?',
    ),
    "role-display-name": (
        route(allow="[{provider: contoso, claims: {roles: [Payroll Invoker]}}]"),
        'p.yaml:10: routes[0].allow[0].claims.roles: "Payroll Invoker" has a space: an app role\'s display name? '
        "tokens carry the role's value (App roles, Value column, e.g. Payroll.Invoke): use its value",
    ),
    "default-scope-audience": (
        route().replace("audiences: [api://app]", "audiences: [api://app/.default]"),
        'p.yaml:5: providers.contoso.audiences[0]: "api://app/.default" is the scope a client requests a token '
        'with, never a token\'s aud: list "api://app" (the Application ID URI) or the application id',
    ),
    "upn-on-app-only-rule": (
        route(allow="[{provider: contoso, app_tokens_only: true, users: [svc@contoso.com]}]"),
        "p.yaml:10: routes[0].allow[0].users: app tokens carry no upn: the entries with @ never match an app",
    ),
}


@pytest.mark.parametrize(("text", "warning"), NEVER_MATCH.values(), ids=NEVER_MATCH.keys())
def test_rules_that_never_match_warn(text: str, warning: str) -> None:
    warnings = parse(text.replace(HEAD, ENTRA_HEAD, 1)).warnings
    assert warning in warnings, warnings
    assert "s3cr3t" not in "\n".join(warnings)


MATCHABLE = {
    "entra-guids": f"[{{provider: contoso, users: [{OID}], apps: [{OID.upper()}], groups: [{OID}]}}]",
    "entra-pairwise-sub": "[{provider: contoso, users: [AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ]}]",
    "scopes-beside-user-rules": "[{provider: contoso, users: [" + OID + "]}, {provider: contoso, scopes: [Run]}]",
}


@pytest.mark.parametrize("allow", MATCHABLE.values(), ids=MATCHABLE.keys())
def test_matchable_rules_do_not_warn(allow: str) -> None:
    assert parse(route(allow=allow).replace(HEAD, ENTRA_HEAD, 1)).warnings == ()


def test_names_are_fine_on_an_issuer_that_is_not_entra() -> None:
    assert parse(route(allow="[{provider: contoso, apps: [payroll-app], groups: [admins]}]")).warnings == ()


def test_loopback_http_upstream_with_query_does_not_warn() -> None:
    assert parse(route().replace("https://up.example.com/a", "http://127.0.0.1:9401/a?sig=x")).warnings == ()


# --- ${VAR} and ${file:...} -----------------------------------------------------------------------------------


def test_environment_substitution() -> None:
    text = route(allow="[{provider: '${PROVIDER}', users: ['${OID}']}]").replace(
        "https://up.example.com/a", "https://${HOST}/run?sig=${SIG}&cost=$$5"
    )
    environ = {"HOST": "up.example.com", "SIG": "s3:cr3t", "PROVIDER": "contoso", "OID": "x-oid"}
    (only,) = parse(text, environ).routes
    assert only.upstream == "https://up.example.com/run?sig=s3:cr3t&cost=$5"
    assert only.allow != ANYONE and only.allow[0].users == UserSet(frozenset({"x-oid"}), frozenset())


def test_substitution_does_not_change_structure_or_recurse() -> None:
    value = "x\n  - name: injected\n${OTHER}: # not a comment"
    (only,) = parse(route(allow="[{provider: contoso, users: ['${V}']}]"), {"V": value}).routes
    assert only.allow != ANYONE and only.allow[0].users == UserSet(frozenset({value}), frozenset())


def test_keys_are_not_substituted() -> None:
    assert errors(route("    ${KEY}: audit\n"), {"KEY": "mode"}) == [
        "p.yaml:11: routes[0]['${KEY}']: unknown key \"${KEY}\" (allowed: allow, cors, forward_query, forward_token, "
        "match, max_body, max_concurrent, max_query_params, mode, name, rate_limit, timeout, tls, upstream)"
    ]


def test_unset_variables_are_named_and_values_never_shown() -> None:
    text = route("    mode: ${MODE}\n", match="{path: '${PATH_A}'}").replace(
        "https://up.example.com/a", "https://h/?sig=${SIG}&x=${MISSING}&y=${ALSO_MISSING}"
    )
    secrets = {"SIG": "sig-value", "MODE": "enforce-or-not", "PATH_A": "no-slash-secret"}
    found = errors(text, secrets)
    assert found == [
        'p.yaml:8: routes[0].match.path: must start with "/"',
        "p.yaml:9: routes[0].upstream: environment variable MISSING is not set",
        "p.yaml:9: routes[0].upstream: environment variable ALSO_MISSING is not set",
        "p.yaml:11: routes[0].mode: must be 'enforce' or 'audit'",
    ]
    assert not any(value in line for value in secrets.values() for line in found)


def test_expanded_values_are_scrubbed_even_where_echoed() -> None:
    text = route(allow="[{provider: '${P}'}]")
    assert errors(text, {"P": "tenant-secret"}) == [
        'p.yaml:10: routes[0].allow[0].provider: unknown provider "***" (known: contoso)'
    ]


def test_file_substitution(tmp_path: Path) -> None:
    secret = tmp_path / "sig"
    secret.write_text("abc:def\n")  # the trailing newline of a mounted Secret is dropped
    crlf = tmp_path / "crlf"
    crlf.write_bytes(b"jkl\r\n")
    text = route(allow=f"[{{provider: contoso, users: ['${{file:{crlf}}}']}}]").replace(
        "https://up.example.com/a", f"https://h/?sig=${{file:{secret}}}"
    )
    (only,) = parse(text).routes
    assert only.upstream == "https://h/?sig=abc:def"
    assert only.allow != ANYONE and only.allow[0].users == UserSet(frozenset({"jkl"}), frozenset())


def test_a_trailing_newline_in_a_substituted_value_is_named(tmp_path: Path) -> None:
    twice = tmp_path / "sig"
    twice.write_text("from-file\n\n")  # one newline is dropped, the second is the value's
    text = route().replace("https://up.example.com/a", "https://up.example.com/a?sig=${SIG}")
    assert errors(text, {"SIG": "s3cr3t\n"}) == [
        "p.yaml:9: routes[0].upstream: the value of ${SIG} ends with a newline (written with `echo`?): remove it "
        "(must not contain spaces or control characters)"
    ]
    text = route().replace("https://up.example.com/a", f"https://up.example.com/a?sig=${{file:{twice}}}")
    assert errors(text) == [
        f"p.yaml:9: routes[0].upstream: the value of ${{file:{twice}}} ends with a newline (written with `echo`?): "
        "remove it (must not contain spaces or control characters)"
    ]


EXACT = "(the value is compared exactly with the token's claims, so no token would match)"


@pytest.mark.parametrize(
    ("allow", "where"),
    [
        ("[{provider: contoso, users: ['${V}']}]", "routes[0].allow[0].users[0]"),
        ("[{provider: contoso, apps: ['${V}']}]", "routes[0].allow[0].apps[0]"),
        ("[{provider: contoso, groups: ['${V}']}]", "routes[0].allow[0].groups[0]"),
        ("[{provider: contoso, scopes: ['${V}']}]", "routes[0].allow[0].scopes[0]"),
        ("[{provider: contoso, claims: {roles: ['${V}']}}]", "routes[0].allow[0].claims.roles[0]"),
    ],
    ids=["users", "apps", "groups", "scopes", "claims"],
)
@pytest.mark.parametrize(
    ("value", "edge"),
    [
        ("x-id\n", "ends with a newline (written with `echo`?)"),
        ("x-id\r\n", "ends with a newline (written with `echo`?)"),
        ("x-id ", "ends with whitespace"),
        (" x-id", "starts with whitespace"),
    ],
    ids=["lf", "crlf", "space", "leading"],
)
def test_whitespace_at_an_end_of_a_substituted_identity_value_is_an_error(
    allow: str, where: str, value: str, edge: str
) -> None:
    """A Secret written with `echo` makes an identity value no token carries: refused, not warned about."""
    (error,) = errors(route(allow=allow), {"V": value})
    assert error.startswith(f"p.yaml:10: {where}: the value of ${{V}} {edge}: remove it (")
    assert error.endswith(EXACT) or "scopes" in where  # a scope with a space has its own error


def test_whitespace_at_an_end_of_a_substituted_audience_is_an_error() -> None:
    text = route().replace("audiences: [api://app]", "audiences: ['${API_ID}']")
    assert errors(text, {"API_ID": "api://app\n"}) == [
        "p.yaml:5: providers.contoso.audiences[0]: the value of ${API_ID} ends with a newline (written with `echo`?): "
        f"remove it {EXACT}"
    ]


def test_whitespace_no_check_refuses_is_warned_about() -> None:
    policy = parse(route().replace("version: 1\n", "version: 1\nrealm: '${REALM}'\n"), {"REALM": "api "})
    assert policy.warnings == (
        "p.yaml:2: realm: the value of ${REALM} ends with whitespace, which is kept as part of it",
    )


def test_file_substitution_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe")
    text = route("    mode: ${file:relative/path}\n").replace(
        "https://up.example.com/a", f"${{file:{missing}}}${{file:{tmp_path}}}${{file:{binary}}}"
    )
    assert errors(text) == [
        f"p.yaml:9: routes[0].upstream: file {missing} does not exist",
        f"p.yaml:9: routes[0].upstream: cannot read file {tmp_path}: Is a directory",
        f"p.yaml:9: routes[0].upstream: file {binary} is not UTF-8 text",
        "p.yaml:11: routes[0].mode: ${file:...} needs an absolute path, got 'relative/path'",
    ]


REFERENCE_ERRORS = {
    "unterminated": ("https://h/${SIG", 'unterminated "${": close it with "}", or write "$$" for a literal "$"'),
    "bad-name": (
        "https://h/${1X}",
        'invalid reference "${1X}": use ${NAME} (letters, digits, _), ${file:/absolute/path}, '
        'or "$$" for a literal "$"',
    ),
    "empty": (
        "https://h/${}",
        'invalid reference "${}": use ${NAME} (letters, digits, _), ${file:/absolute/path}, or "$$" for a literal "$"',
    ),
}


@pytest.mark.parametrize(("upstream", "message"), REFERENCE_ERRORS.values(), ids=REFERENCE_ERRORS.keys())
def test_reference_syntax_errors(upstream: str, message: str) -> None:
    text = route().replace("https://up.example.com/a", f"'{upstream}'")
    assert errors(text) == [f"p.yaml:9: routes[0].upstream: {message}"]


def test_lone_dollar_is_literal() -> None:
    text = route().replace("https://up.example.com/a", "https://h/$x$")
    assert parse(text).routes[0].upstream == "https://h/$x$"


# --- durations ------------------------------------------------------------------------------------------------

DURATIONS = {
    "int-seconds": (30, 30.0),
    "float-seconds": (1.5, 1.5),
    "zero": (0, 0.0),
    "string-seconds": ("45", 45.0),
    "milliseconds": ("500ms", 0.5),
    "seconds": ("60s", 60.0),
    "minutes": ("5m", 300.0),
    "hours": ("1h", 3600.0),
    "fraction-with-unit": ("1.5m", 90.0),
    "space-before-unit": ("10 s", 10.0),
}


@pytest.mark.parametrize(("value", "seconds"), DURATIONS.values(), ids=DURATIONS.keys())
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


BAD_DURATIONS = {
    "negative-number": -1,
    "infinite": float("inf"),
    "not-a-number": float("nan"),
    "bool": True,
    "none": None,
    "list": [1],
    "unknown-unit": "5d",
    "negative-string": "-5s",
    "compound": "1h30m",
    "upper-case-unit": "5S",
    "words": "five minutes",
    "empty": "",
}


@pytest.mark.parametrize("value", BAD_DURATIONS.values(), ids=BAD_DURATIONS.keys())
def test_parse_duration_refuses(value: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("line", "reference"),
    [
        ("    entra: { tenant: ${TENANT_ID} }", "${TENANT_ID}"),
        ("    audiences: [${API_ID}]", "${API_ID}"),
        ("    audiences: [api://${API_ID}, api://b]", "${API_ID}"),
    ],
    ids=["mapping", "list", "inside-a-value"],
)
def test_an_unquoted_reference_in_flow_style_says_quote_it(line: str, reference: str) -> None:
    text = HEAD.replace("    audiences: [api://app]", line)
    (error,) = errors(text, {"TENANT_ID": "t", "API_ID": "a"})
    assert error.startswith(f"p.yaml:5: (yaml): an unquoted {reference} inside [...] or {{...}}")
    assert f'quote it: "{reference}"' in error.splitlines()[0]


def test_scopes_beside_app_only_rules_are_a_legitimate_route() -> None:
    """Apps by role (app tokens only) or users by scope: each rule can match its own callers, so no warning."""
    text = route(
        allow="[{provider: contoso, app_tokens_only: true, claims: {roles: [Run]}}, {provider: contoso, scopes: [Run]}]"
    )
    assert parse(text.replace(HEAD, ENTRA_HEAD, 1)).warnings == ()


def test_entra_claim_names_that_exist_are_not_questioned() -> None:
    text = route(allow="[{provider: contoso, claims: {roles: [Payroll.Invoke], wids: [w], department: [x]}}]")
    assert parse(text.replace(HEAD, ENTRA_HEAD, 1)).warnings == ()
