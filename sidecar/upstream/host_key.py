"""A URL host reduced to one key for every spelling that browsers and curl read as that same host.

Pure: no I/O, no name lookups. `response_urls` compares hosts with it, so a `Location` naming the upstream's host as
`host.`, `HOST`, `h%6Fst`, `2130706433`, `127.1` or `[::ffff:127.0.0.1]` is the upstream's host.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from typing import Final
from urllib.parse import unquote

__all__ = ["LOOPBACK", "host_key"]

# The key of every loopback address, the unspecified address (connecting to 0.0.0.0 or :: reaches the local host),
# `localhost` and names under it (RFC 6761 §6.3: resolved to loopback, browsers do so without asking DNS).
LOOPBACK: Final = "localhost"
# Full stops that URL parsers read as `.` in a host (UTS #46 maps them).
_FULL_STOPS: Final = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})
# An IPv4 part as the WHATWG URL standard and inet_aton read it: hex with 0x, octal with a leading 0, else decimal.
_HEX: Final = re.compile(r"0x([0-9a-f]*)")
_OCTAL: Final = re.compile(r"0([0-7]+)")
_DECIMAL: Final = re.compile(r"[0-9]+")
_MAX_DIGITS: Final = 32  # longer is no address (and `int` refuses thousands of digits)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def host_key(host: str) -> str:
    """`host` (a URL's host without brackets, as `urlsplit(...).hostname` gives it) percent-decoded, compatibility
    normalised, case folded and without its trailing dot, non-ASCII names in their IDNA form; an IP address in its
    standard text (IPv4 in any inet_aton form: `127.1`, `2130706433`, `0x7f.1`, `0177.0.0.1`; IPv4-mapped IPv6 as
    IPv4); and `LOOPBACK` for every loopback or unspecified address and `localhost` or a name under it."""
    name = unicodedata.normalize("NFKC", unquote(host, errors="replace")).translate(_FULL_STOPS).casefold()
    name = name.removesuffix(".")
    address = _address(name)
    if address is not None:
        return LOOPBACK if address.is_loopback or address.is_unspecified else str(address)
    if name == "localhost" or name.endswith(".localhost"):
        return LOOPBACK
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            pass  # no IDNA form: compared as written
    return name


def _address(name: str) -> Address | None:
    if ":" in name:
        try:
            v6 = ipaddress.IPv6Address(name)
        except ValueError:
            return None
        return v6.ipv4_mapped or v6
    value = _ipv4(name)
    return None if value is None else ipaddress.IPv4Address(value)


def _ipv4(name: str) -> int | None:
    """The WHATWG URL standard's IPv4 parser: 1 to 4 numbers, the last filling the remaining bytes."""
    numbers = [_number(part) for part in name.split(".")]
    if not 1 <= len(numbers) <= 4:
        return None
    value = 0
    for index, number in enumerate(numbers):
        last = index == len(numbers) - 1
        if number is None or number >= 256 ** (4 - index if last else 1):
            return None
        value += number if last else number << (8 * (3 - index))
    return value


def _number(part: str) -> int | None:
    if len(part) > _MAX_DIGITS:
        return None
    for pattern, base in ((_HEX, 16), (_OCTAL, 8)):
        match = pattern.fullmatch(part)
        if match is not None:
            return int(match.group(1) or "0", base)
    return int(part) if _DECIMAL.fullmatch(part) else None
