"""Who the client is: the peer, unless the peer is a trusted proxy; then the right-most X-Forwarded-For address that
is not one. What the upstream gets: the peer alone, or the chain received plus the peer."""

from __future__ import annotations

import ipaddress

import pytest

from sidecar.edge.forwarded import Origin, origin

TRUSTED = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32"))

CASES = {
    "no-trusted-proxies": ("10.1.1.1", b"6.6.6.6", (), Origin("10.1.1.1", "10.1.1.1")),
    "untrusted-peer-forges": ("8.8.8.8", b"10.0.0.1", TRUSTED, Origin("8.8.8.8", "8.8.8.8")),
    "trusted-peer-without-header": ("10.1.1.1", None, TRUSTED, Origin("10.1.1.1", "10.1.1.1")),
    "trusted-peer-empty-header": ("10.1.1.1", b"", TRUSTED, Origin("10.1.1.1", "10.1.1.1")),
    "trusted-peer": ("10.1.1.1", b"1.2.3.4", TRUSTED, Origin("1.2.3.4", "1.2.3.4, 10.1.1.1")),
    "right-most-untrusted": (
        "10.1.1.1",
        b"6.6.6.6, 1.2.3.4, 10.0.0.2",
        TRUSTED,
        Origin("1.2.3.4", "6.6.6.6, 1.2.3.4, 10.0.0.2, 10.1.1.1"),
    ),
    "all-trusted-left-most": (
        "10.1.1.1",
        b"10.0.0.3, 10.0.0.2",
        TRUSTED,
        Origin("10.0.0.3", "10.0.0.3, 10.0.0.2, 10.1.1.1"),
    ),
    "garbage-stops-at-last-vouched": (
        "10.1.1.1",
        b"6.6.6.6, junk, 10.0.0.2",
        TRUSTED,
        Origin("10.0.0.2", "6.6.6.6, junk, 10.0.0.2, 10.1.1.1"),
    ),
    "garbage-right-most": ("10.1.1.1", b"6.6.6.6, junk", TRUSTED, Origin("10.1.1.1", "6.6.6.6, junk, 10.1.1.1")),
    "port-on-address": ("10.1.1.1", b"1.2.3.4:5678", TRUSTED, Origin("1.2.3.4", "1.2.3.4:5678, 10.1.1.1")),
    "ipv6-in-brackets": (
        "10.1.1.1",
        b"[2001:db9::1]:443",
        TRUSTED,
        Origin("2001:db9::1", "[2001:db9::1]:443, 10.1.1.1"),
    ),
    # `[` without its `]`: not an address (read up to the end, it would be 2001:db9::, an address nobody sent)
    "ipv6-bracket-never-closed": (
        "10.1.1.1",
        b"6.6.6.6, [2001:db9::1",
        TRUSTED,
        Origin("10.1.1.1", "6.6.6.6, [2001:db9::1, 10.1.1.1"),
    ),
    "ipv6-trusted-peer": ("2001:db8::5", b"1.2.3.4", TRUSTED, Origin("1.2.3.4", "1.2.3.4, 2001:db8::5")),
    "ipv4-mapped-peer": ("::ffff:10.1.1.1", b"1.2.3.4", TRUSTED, Origin("1.2.3.4", "1.2.3.4, ::ffff:10.1.1.1")),
    "no-peer": (None, b"1.2.3.4", TRUSTED, Origin(None, "")),
}


@pytest.mark.parametrize(("peer", "received", "trusted", "expected"), CASES.values(), ids=CASES.keys())
def test_origin(
    peer: str | None,
    received: bytes | None,
    trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...],
    expected: Origin,
) -> None:
    assert origin(peer, received, trusted) == expected
