"""The time claims `exp`, `nbf` and `iat`: JSON numbers only, checked against an injected clock with leeway.

Shared by JWT verification and token introspection, so both read time the same way. pyjwt's own checks are not
used: they read the wall clock and accept "1700000000" as a string.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from sidecar.reasons import Reason, Rejection

__all__ = ["check_times", "seconds"]


def check_times(claims: Mapping[str, object], now: float, leeway: float, *, require_exp: bool = True) -> float | None:
    """`exp` (required unless told), `nbf` and `iat` against `now` with leeway; returns exp (None when absent)."""
    if "exp" not in claims and require_exp:
        raise Rejection(Reason.MALFORMED_TOKEN)
    exp = seconds(claims["exp"]) if "exp" in claims else None
    nbf = seconds(claims["nbf"]) if "nbf" in claims else None
    iat = seconds(claims["iat"]) if "iat" in claims else None
    for name, value in (("exp", exp), ("nbf", nbf), ("iat", iat)):
        if name in claims and value is None:
            raise Rejection(Reason.MALFORMED_TOKEN)
    if exp is not None and exp <= now - leeway:
        raise Rejection(Reason.EXPIRED)
    if (nbf is not None and nbf > now + leeway) or (iat is not None and iat > now + leeway):
        raise Rejection(Reason.NOT_YET_VALID)
    return exp


def seconds(value: object) -> float | None:
    """A finite JSON number as float; None for strings, booleans (an int subclass), NaN, infinities, huge ints."""
    if type(value) is not int and type(value) is not float:
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None
