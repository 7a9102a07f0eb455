"""The shape of the top-level `rate_limit_store` key (Redis shared by every replica) and the frozen value built from it.

Validator messages never echo the value they reject: the URL may hold a password (`${file:...}`).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Annotated, Final, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, Field

from sidecar.policy.fields import Duration, Spec, Text, between, is_loopback
from sidecar.policy.model import DEFAULT_STORE_PREFIX, DEFAULT_STORE_TIMEOUT_SECONDS, RateLimitStore, StoreFailure

__all__ = ["STORE_SCHEMES", "RateLimitStoreSpec", "cleartext_warning", "store_warnings"]

# What limits' async Redis storage takes (it is given the URL with `async+` in front): one server (TLS or not), or
# the primary a set of Sentinels names (`redis+sentinel://host:26379,host:26379/service-name`).
STORE_SCHEMES: Final = ("redis", "rediss", "redis+sentinel")
_DATABASE = re.compile(r"/?\d*")  # redis(s)://host:port/0: an optional database number
_PREFIX = re.compile(r"[A-Za-z0-9_.:-]+")
_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+):\d{1,5}")  # limits needs the port written out


# A password holding a character URLs reserve (`/ ? # @ [ ]`, as generated keys often do: Azure's have `/ + =`) cuts
# the URL in the wrong place: the host seen is then a piece of the password.
_PASSWORD_HINT: Final = (
    "; if the password holds / ? # @ + = or similar characters, percent-encode it in the URL (/ as %2F, + as %2B,"
    " = as %3D, # as %23, ? as %3F, @ as %40) or give it as `password:` (from ${file:...})"
)


def _store_url(value: str) -> str:
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        raise ValueError("must not contain spaces or control characters")
    try:
        parts = urlsplit(value)
    except ValueError:  # e.g. a `[` in the password reads as an IPv6 address that never closes
        raise ValueError("is not a URL the client can read" + _PASSWORD_HINT) from None
    if parts.scheme not in STORE_SCHEMES:
        raise ValueError("must be a redis://, rediss:// (TLS) or redis+sentinel:// URL")
    hosts = parts.netloc.rpartition("@")[2]
    if not hosts or any(not _HOST_PORT.fullmatch(host) for host in hosts.split(",")):
        hint = _PASSWORD_HINT if "@" in value else ""
        raise ValueError("must name each host with its port (redis://host:6379/0)" + hint)
    if parts.scheme != "redis+sentinel":
        if "," in hosts or not _DATABASE.fullmatch(parts.path):
            raise ValueError("names one host and, as its path, an optional database number (redis://host:6379/0)")
        try:
            parts.port  # noqa: B018 - raises on a port that is not a number in range
        except ValueError:
            raise ValueError("has an invalid port") from None
    elif not parts.path.strip("/"):
        raise ValueError("must name the Sentinel service as its path (redis+sentinel://host:26379/mymaster)")
    if parts.query or parts.fragment or value.endswith(("?", "#")):
        # The client would take any query parameter as a connection option (one can turn TLS checks off), and one
        # it cannot parse would fail every request: the store's options are this key's own.
        hint = _PASSWORD_HINT if "@" in value else ""
        raise ValueError("must not contain a query (?...) or a fragment (#...)" + hint)
    return value


def _bare_seconds(value: object) -> object:
    """`timeout: 50` meant as milliseconds is 50 s: say how it was read (runs before the duration is parsed)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 5:
        raise ValueError(
            f"must be more than 0s and at most 5s: {value:g} without a unit is read as seconds"
            f" (write {value:g}ms for milliseconds)"
        )
    return value


def _prefix(value: str) -> str:
    if not _PREFIX.fullmatch(value):
        raise ValueError("may contain only letters, digits, '_', '.', ':' and '-'")
    return value


class RateLimitStoreSpec(Spec):
    url: Annotated[Text, AfterValidator(_store_url)]
    password: Text | None = None  # wins over the URL's; `${file:/run/secrets/redis-password}`
    timeout: Annotated[Duration, between(0, 5, above=True), BeforeValidator(_bare_seconds)] = (
        DEFAULT_STORE_TIMEOUT_SECONDS
    )
    on_error: Literal["allow", "deny"] = StoreFailure.ALLOW.value
    prefix: Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_prefix)] = DEFAULT_STORE_PREFIX

    def build(self) -> RateLimitStore:
        return RateLimitStore(self.url, self.timeout, StoreFailure(self.on_error), self.password, self.prefix)


def cleartext_warning(store: RateLimitStore) -> str | None:
    """A warning when a password would cross the network in clear text (redis:// to a host that is not loopback)."""
    parts = urlsplit(store.url)
    has_password = store.password is not None or ":" in parts.netloc.rpartition("@")[0]
    if parts.scheme == "rediss" or not has_password:
        return None
    hosts = [host.rpartition(":")[0] or host for host in parts.netloc.rpartition("@")[2].split(",")]
    if all(is_loopback(host.strip("[]")) for host in hosts):
        return None
    return "the Redis password crosses the network in clear text: use rediss:// (TLS) unless the network is private"


def _url_password(url: str) -> str | None:
    """The password part of the URL as written (percent-encoded or not); None without one."""
    user, colon, password = urlsplit(url).netloc.rpartition("@")[0].partition(":")
    return password if colon and password else None


def store_warnings(store: RateLimitStore, expanded: Collection[str]) -> list[tuple[str, str]]:
    """(field, message) for what loads but is likely a mistake. `expanded`: every value `${...}` inserted in the file
    (a password not inside one is written in the file)."""
    found: list[tuple[str, str]] = []
    in_url = _url_password(store.url)
    for where, password in (("url", in_url), ("password", store.password)):
        if password and not any(password in value for value in expanded):
            found.append(
                (
                    where,
                    "the Redis password is written in the policy file: give it as `password: ${file:...}` (a "
                    "mounted Secret) or `${VAR}`, so that it is not stored or shown with the policy",
                )
            )
    if in_url is not None and store.password is not None:
        found.append(
            (
                "password",
                "a password is given both in the URL and as `password:`; `password:` is used: remove the other",
            )
        )
    database = urlsplit(store.url).path.strip("/")
    if urlsplit(store.url).scheme != "redis+sentinel" and database.isdigit() and int(database) > 15:
        found.append(
            (
                "url",
                f"database {database}: Redis has databases 0 to 15 unless its `databases` setting is raised; "
                "a higher number fails every request (`error`)",
            )
        )
    return found
