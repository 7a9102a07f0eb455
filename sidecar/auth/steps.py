"""The steps of token verification as `sidecar explain` and `sidecar test` show them: one `Step` per check, recorded
only when a trace is asked for, and the words that say what each check compared. Never the token itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from sidecar.auth.timeclaims import seconds
from sidecar.reasons import Reason, Rejection

__all__ = [
    "CHECKED_STEP",
    "NOT_A_JWT",
    "Step",
    "Trace",
    "check",
    "claims_detail",
    "key_detail",
    "listed_detail",
    "note",
    "size_detail",
    "times_detail",
]


@dataclass(frozen=True, slots=True)
class Step:
    """One check of a token, as `sidecar explain` shows it. `detail` names claim values, never the token."""

    name: str
    ok: bool
    detail: str


Trace = list[Step] | None


NOT_A_JWT: Final = "not a JWT: three base64url segments with a JSON header and payload"

# Which step `_checked` failed at, by its reason.
CHECKED_STEP: Final = {
    Reason.MALFORMED_TOKEN: "claims",
    Reason.WRONG_AUDIENCE: "audience",
    Reason.WRONG_ISSUER: "issuer",
}


def check(trace: Trace, name: str, ok: bool, reason: Reason, detail: Callable[[], str]) -> None:
    """Record the step when tracing (the detail is formatted only then), and refuse with `reason` when it failed."""
    if trace is not None:
        trace.append(Step(name, ok, detail()))
    if not ok:
        raise Rejection(reason)


def note(trace: Trace, name: str, ok: bool, detail: Callable[[], str]) -> None:
    """Record a step decided elsewhere (a callee raised, or it passed)."""
    if trace is not None:
        trace.append(Step(name, ok, detail()))


def size_detail(token: str, cap: int) -> str:
    ascii_only = "ASCII" if token.isascii() else "not ASCII"
    return f"{len(token)} characters, {ascii_only}; at most {cap} ASCII characters accepted"


def listed_detail(name: str, value: object, accepted: frozenset[str]) -> str:
    return f"{name} {value!r}; accepted: {', '.join(sorted(accepted))}"


def key_detail(reason: Reason, kid: str | None) -> str:
    if reason is Reason.KEYS_UNAVAILABLE:
        return "the issuer's keys are not available (not fetched, or too old to trust)"
    return f"kid {kid!r} is not published by the issuer (or does not fit the algorithm)"


def claims_detail(payload: Mapping[str, Any], audiences: tuple[str, ...]) -> str:
    missing = "; exp missing" if payload.get("exp") is None else ""
    return f"aud {payload.get('aud')!r}; accepted: {', '.join(audiences)}{missing}"


def times_detail(claims: Mapping[str, Any], now: float, leeway: float) -> str:
    parts = [f"{name} {_when(claims[name], now)}" for name in ("exp", "nbf", "iat") if name in claims]
    return f"{', '.join(parts) or 'exp missing'} (leeway {leeway:g} s)"


def _when(value: object, now: float) -> str:
    moment = seconds(value)
    if moment is None:
        return "(not a number)"
    delta = int(moment - now)
    try:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))
    except (OverflowError, OSError, ValueError):
        stamp = f"{moment:g}"
    return f"{stamp} (in {delta} s)" if delta >= 0 else f"{stamp} ({-delta} s ago)"
