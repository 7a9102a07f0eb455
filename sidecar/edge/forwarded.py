"""Who the client is: the peer, or behind `trusted_proxies` the right-most X-Forwarded-For address not among them.

Pure. A client's own X-Forwarded-For is its to forge, so it counts only when the peer is a proxy the policy trusts;
then each address is read from the right (the one our proxy saw) leftwards, past every trusted one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Origin", "origin"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Origin:
    client_ip: str | None  # what logs (and rate limits per ip) use
    forwarded_for: str  # the X-Forwarded-For the upstream gets


def origin(peer: str | None, received: bytes | None, trusted: Sequence[IPNetwork]) -> Origin:
    """`peer` is the TCP peer's address, `received` the X-Forwarded-For values as sent (None: none)."""
    if not trusted or peer is None or not _within(_address(peer), trusted):
        return Origin(peer, peer or "")
    if not received:
        return Origin(peer, peer)
    chain = received.decode("latin-1")
    client = peer
    for entry in reversed(chain.split(",")):
        address = _address(entry.strip())
        if address is None:
            break  # not an address: stop at the last one a trusted proxy vouched for
        client = str(address)
        if not _within(address, trusted):
            break
    # Every address was a trusted proxy's: the left-most is as far as anyone can tell (nginx real_ip_recursive).
    return Origin(client, f"{chain}, {peer}")


def _within(address: IPAddress | None, networks: Sequence[IPNetwork]) -> bool:
    return address is not None and any(address in network for network in networks)


def _address(text: str) -> IPAddress | None:
    """An address as proxies write it: bare, `1.2.3.4:port` (Azure Application Gateway adds the port) or
    `[2001:db8::1]:port`."""
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # a dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d
    return address
