"""Upstream host names, resolved once a minute rather than per connection, concurrent lookups shared.

A burst of new upstream connections (a pool filling up, an upstream that closes after each answer) would otherwise
ask the resolver once per connection: in Kubernetes each lookup is several queries to CoreDNS (the search domains
of `ndots: 5`). aiohttp, the client before pool.py, cached names for 60 s too. An address that refuses a connection
drops its name from the cache, so a changed record is followed at the next connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Final

__all__ = ["NAME_TTL", "Resolver"]

NAME_TTL: Final = 60.0
_Addresses = list[tuple[str, int]]


class Resolver:
    def __init__(self, ttl: float = NAME_TTL) -> None:
        self._ttl = ttl
        self._known: dict[tuple[str, int], tuple[float, _Addresses]] = {}  # (host, port) -> (until, addresses)
        self._pending: dict[tuple[str, int], asyncio.Future[_Addresses]] = {}
        self.lookups = 0  # asked of the system resolver (tests read it)

    async def addresses(self, host: str, port: int, loop: asyncio.AbstractEventLoop) -> _Addresses:
        """The host's addresses in the resolver's order; an IP address is its own. Raises OSError (not found)."""
        if _is_address(host):
            return [(host, port)]
        key = (host, port)
        known = self._known.get(key)
        if known is not None and known[0] > loop.time():
            return known[1]
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = asyncio.ensure_future(self._look_up(host, port, loop))
            pending.add_done_callback(lambda _: self._pending.pop(key, None))
        return await asyncio.shield(pending)  # a caller giving up (its timeout) does not cancel the others' lookup

    def forget(self, host: str, port: int) -> None:
        self._known.pop((host, port), None)

    async def _look_up(self, host: str, port: int, loop: asyncio.AbstractEventLoop) -> _Addresses:
        self.lookups += 1
        addresses = await self._ask(host, port, loop)
        if not addresses:
            raise OSError(f"no address for {host}")
        self._known[(host, port)] = (loop.time() + self._ttl, addresses)
        return addresses

    async def _ask(self, host: str, port: int, loop: asyncio.AbstractEventLoop) -> _Addresses:
        """The system resolver's answer, each address once."""
        found = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return list(dict.fromkeys((str(info[4][0]), int(info[4][1])) for info in found))


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
