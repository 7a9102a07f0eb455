"""`sidecar test`: policy tests as code: requests and callers, each with the decision the policy must give it.

Each case is decided through the proxy's own `decide()` (route match, the verifier's checks, the allow rules, the
Reason table). A caller given by `claims` skips what only a signed token has (header, key, signature); a caller
given by `token_file` is verified against the issuer's live keys, as `sidecar explain --token` does.
Exit 0: every case passed; 1: a case got another decision; 2: the cases file (or the policy) is not usable.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal

import httpx
from pydantic import AfterValidator, Field, model_validator

from sidecar.auth.introspect import Introspector
from sidecar.auth.keys import KeyStore
from sidecar.auth.verify import Verifier
from sidecar.cli.explain import CLAIMS_NOTE
from sidecar.edge.decide import Decision, decide
from sidecar.edge.exchange import Verdict
from sidecar.edge.runtime import Snapshot
from sidecar.policy.fields import Spec, Text, method_name
from sidecar.policy.load import validate_spec
from sidecar.policy.model import Policy
from sidecar.policy.yamlmarks import Document, read_yaml
from sidecar.reasons import Reason, outcome

__all__ = ["Case", "Outcome", "load_cases", "render", "run_cases"]

_REASONS = {reason.value for reason in Reason}


def _path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError('must start with "/" (the path as the client sends it)')
    return value


def _reason(value: str) -> str:
    if value not in _REASONS and value != "allowed":
        raise ValueError("must be allowed or a reason of the decision table, such as not_allowed or wrong_issuer")
    return value


class CallerSpec(Spec):
    claims: dict[str, Any] | None = None
    token_file: Text | None = None
    provider: Text | None = None

    @model_validator(mode="after")
    def _one(self) -> CallerSpec:
        if (self.claims is None) == (self.token_file is None):
            raise ValueError("needs exactly one of claims or token_file")
        if self.provider is not None and self.claims is None:
            raise ValueError("provider goes with claims (a token names its issuer itself)")
        return self


class ExpectSpec(Spec):
    status: Annotated[int, Field(strict=True, ge=100, le=599)] | None = None
    reason: Annotated[str, AfterValidator(_reason)] | None = None
    route: Text | None = None
    decision: Literal["allow", "reject", "audit_forward"] | None = None

    @model_validator(mode="after")
    def _something(self) -> ExpectSpec:
        if not self.model_fields_set:
            raise ValueError("needs at least one of status, reason, route or decision")
        return self


class CaseSpec(Spec):
    name: Text
    method: Annotated[str, AfterValidator(method_name)] = "GET"
    path: Annotated[str, AfterValidator(_path)]
    caller: CallerSpec | None = None  # none: a request without a token
    expect: ExpectSpec


class CasesSpec(Spec):
    version: Literal[1]
    cases: Annotated[list[Any], Field(min_length=1)]


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    line: int
    method: str
    path: str
    claims: dict[str, Any] | None
    token: str | None  # read from token_file
    expect: ExpectSpec
    route_expected: bool  # whether `expect` names a route (null: no route)


@dataclass(frozen=True, slots=True)
class Outcome:
    case: Case
    status: int
    reason: str  # "allowed" or a Reason value
    route: str | None
    decision: str

    @property
    def mismatches(self) -> list[str]:
        expect = self.case.expect
        wrong = []
        if expect.status is not None and expect.status != self.status:
            wrong.append(f"status {expect.status}")
        if expect.reason is not None and expect.reason != self.reason:
            wrong.append(f"reason {expect.reason}")
        if self.case.route_expected and expect.route != self.route:
            wrong.append(f"route {expect.route or 'none'}")
        if expect.decision is not None and expect.decision != self.decision:
            wrong.append(f"decision {expect.decision}")
        return wrong


def load_cases(source: str, policy: Policy, environ: Mapping[str, str]) -> tuple[list[Case], list[str]]:
    """The cases of `source`, or every error as `FILE:LINE: path: message` (then the list of cases is empty)."""
    try:
        text = FilePath(source).read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        return [], [f"{source}:1: (file): cannot read the cases: {getattr(exc, 'strerror', None) or exc}"]
    doc = read_yaml(text, source, environ)
    if doc.data is None:
        return [], doc.errors()
    top = validate_spec(CasesSpec, doc.data, (), doc) if isinstance(doc.data, dict) else None
    if not isinstance(doc.data, dict):
        doc.error((), "must be a mapping with version and cases")
    raw = doc.data.get("cases") if isinstance(doc.data, dict) else None
    cases = [_case(doc, index, value, policy) for index, value in enumerate(raw if isinstance(raw, list) else ())]
    if top is None or doc.has_errors:
        return [], doc.errors()
    return [case for case in cases if case is not None], []


def _case(doc: Document, index: int, raw: object, policy: Policy) -> Case | None:
    path = ("cases", index)
    spec = validate_spec(CaseSpec, raw, path, doc)
    if spec is None:
        return None
    routes = {route.name for route in policy.routes}
    if spec.expect.route is not None and spec.expect.route not in routes:
        known = ", ".join(sorted(routes))
        doc.error((*path, "expect", "route"), f'unknown route "{spec.expect.route}" (known: {known})')
    claims, token = None, None
    caller = spec.caller
    if caller is not None and caller.claims is not None:
        claims = dict(caller.claims)
        if caller.provider is not None:
            provider = policy.providers.get(caller.provider)
            if provider is None or not provider.issuer:
                known = ", ".join(sorted(name for name, p in policy.providers.items() if p.issuer))
                doc.error((*path, "caller", "provider"), f'unknown provider "{caller.provider}" (known: {known})')
            else:
                claims.setdefault("iss", provider.issuer)
    elif caller is not None and caller.token_file is not None:
        token = _read_token(doc, (*path, "caller", "token_file"), caller.token_file)
    route_expected = isinstance(raw, dict) and isinstance(raw.get("expect"), dict) and "route" in raw["expect"]
    return Case(spec.name, doc.line(path), spec.method, spec.path, claims, token, spec.expect, route_expected)


def _read_token(doc: Document, at: tuple[str | int, ...], name: str) -> str | None:
    """A token file, relative to the cases file; one line. Its content never goes into a message."""
    file = FilePath(doc.source).parent / name
    try:
        token = file.read_text("ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        doc.error(at, f"cannot read token file {file}: {getattr(exc, 'strerror', None) or 'not ASCII text'}")
        return None
    if not token or any(ch.isspace() for ch in token):
        doc.error(at, f"token file {file} must hold one token on one line")
        return None
    return token


async def run_cases(
    policy: Policy,
    cases: Sequence[Case],
    *,
    client: httpx.AsyncClient | None = None,
    clock: Callable[[], float] = time.time,
) -> list[Outcome]:
    """Each case's decision, through one verifier as in the proxy (keys fetched once for every token case)."""
    async with httpx.AsyncClient(timeout=10.0, follow_redirects=False, trust_env=False) as own:
        http = client or own
        verifier = Verifier(policy.providers, KeyStore(http), clock=clock, introspector=Introspector(http, clock))
        snapshot = Snapshot(policy, verifier, "")
        outcomes = []
        for case in cases:
            headers = [(b"authorization", f"Bearer {case.token}".encode())] if case.token is not None else []
            raw_path = case.path.split("?", 1)[0].encode("utf-8")
            decision = await decide(snapshot, case.method, raw_path, headers, claims=case.claims)
            outcomes.append(_outcome(case, decision))
        return outcomes


def _outcome(case: Case, decision: Decision) -> Outcome:
    route = decision.route.name if decision.route is not None else None
    if decision.reason is None:
        return Outcome(case, 200, "allowed", route, Verdict.ALLOW.value)
    verdict = Verdict.AUDIT_FORWARD if decision.forwarded else Verdict.REJECT  # as the proxy's access line says
    return Outcome(case, outcome(decision.reason).status, decision.reason.value, route, verdict.value)


def render(outcomes: Sequence[Outcome], source: str) -> str:
    """A table, one line per case, then a summary. 200 means the proxy forwards the request upstream."""
    rows = [("", "CASE", "REQUEST", "GOT", "EXPECTED")]
    for result in outcomes:
        wrong = result.mismatches
        got = f"{result.status} {result.reason} route={result.route or 'none'}"
        if result.decision == "audit_forward":
            got += " (audit: forwarded)"
        expected = "" if not wrong else "expected " + ", ".join(wrong)
        request = f"{result.case.method} {result.case.path}"
        rows.append(
            ("FAIL" if wrong else "ok", f"{result.case.name} (line {result.case.line})", request, got, expected)
        )
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True)) + "  " + row[4]
        for row in rows
    ]
    failed = sum(1 for result in outcomes if result.mismatches)
    if any(result.case.claims is not None for result in outcomes):
        lines.append(f"note: {CLAIMS_NOTE}")
    lines.append(
        f"{source}: {len(outcomes)} case{'s' * (len(outcomes) != 1)}, {len(outcomes) - failed} passed, {failed} failed"
    )
    return "\n".join(line.rstrip() for line in lines)
