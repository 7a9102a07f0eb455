"""Control-plane HTTP: fetch a JSON object from an issuer (https only, no redirects, size-capped) and read how long
it may be cached. Used for discovery, JWKS and token introspection; never on the data plane.

Error messages hold URLs without their query or credentials and never a response body: either could hold a secret.

A body is read as it arrives and given up as soon as it passes its size cap, so an endless answer costs at most the
cap. Compression is asked away (`Accept-Encoding: identity`); a server that compresses anyway (gzip or deflate) is
decompressed within the same cap, never a chunk at a time without bound (a small gzip chunk can hold gigabytes).
"""

from __future__ import annotations

import json
import re
import ssl
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import httpx

from sidecar.policy.fields import is_loopback

__all__ = ["FETCH_TIMEOUT_SECONDS", "MAX_DOCUMENT_BYTES", "Document", "FetchError", "get_json", "post_json", "safe_url"]

MAX_DOCUMENT_BYTES: Final = 1 << 20  # discovery documents and JWKS are a few KiB; anything bigger is not an issuer
FETCH_TIMEOUT_SECONDS: Final = 10.0
_MAX_AGE: Final = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d{1,10})\"?\s*(?:,|$)", re.IGNORECASE)
_NO_CACHE: Final = re.compile(r"(?:^|,)\s*(?:no-cache|no-store)\s*(?:,|=|$)", re.IGNORECASE)


class FetchError(Exception):
    """A fetch failed; the message is safe for logs and `last_error`. `kind` is a metric label."""

    def __init__(self, message: str, kind: str = "bad_response") -> None:
        super().__init__(message)
        self.kind = kind  # unreachable | timeout | http_status | bad_response


@dataclass(frozen=True, slots=True)
class Document:
    body: dict[str, Any]
    max_age: float | None  # from Cache-Control: seconds, 0 for no-cache / no-store, None when not said


async def get_json(client: httpx.AsyncClient, url: str, what: str) -> Document:
    return await _request(client, "GET", url, what, None, None, MAX_DOCUMENT_BYTES)


async def post_json(
    client: httpx.AsyncClient,
    url: str,
    what: str,
    form: Mapping[str, str],
    headers: Mapping[str, str],
    max_bytes: int = MAX_DOCUMENT_BYTES,
) -> Document:
    return await _request(client, "POST", url, what, form, headers, max_bytes)


async def _request(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    what: str,
    form: Mapping[str, str] | None,
    headers: Mapping[str, str] | None,
    max_bytes: int,
) -> Document:
    _require_secure(url, what)
    try:
        # No redirects: one to plain http (or to another host) would dodge the https rule.
        async with client.stream(
            method,
            url,
            data=form,
            headers={"Accept": "application/json", "Accept-Encoding": "identity", **(headers or {})},
            timeout=FETCH_TIMEOUT_SECONDS,
            follow_redirects=False,
        ) as response:
            if response.status_code != 200:
                raise FetchError(f"{what} {safe_url(url)}: HTTP {response.status_code}", "http_status")
            body = await _read_limited(response, what, url, max_bytes)
            max_age = _max_age(response.headers.get("cache-control", ""))
    except httpx.TimeoutException as exc:
        raise FetchError(f"{what} {safe_url(url)}: timed out", "timeout") from exc
    except httpx.HTTPError as exc:
        # The exception's type only: httpx messages quote the URL, query included.
        raise FetchError(f"{what} {safe_url(url)}: {type(exc).__name__}{_tls_cause(exc)}", "unreachable") from exc
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise FetchError(f"{what} {safe_url(url)}: not JSON") from exc
    if not isinstance(document, dict):
        raise FetchError(f"{what} {safe_url(url)}: not a JSON object")
    return Document(document, max_age)


def _tls_cause(exc: BaseException) -> str:
    """A refused handshake in OpenSSL's own words (`: SSLCertVerificationError: unable to get local issuer
    certificate`), found down the chain httpx raises; never an exception's message, which could quote a URL."""
    seen: BaseException | None = exc
    for _ in range(8):  # httpx -> httpcore -> ssl: a few links at most
        seen = seen.__cause__ or seen.__context__ if seen is not None else None
        if isinstance(seen, ssl.SSLCertVerificationError):
            return f": {type(seen).__name__}: {seen.verify_message}"
        if isinstance(seen, ssl.SSLError) and seen.reason:
            return f": {type(seen).__name__}: {seen.reason}"
    return ""


def _max_age(cache_control: str) -> float | None:
    if _NO_CACHE.search(cache_control):
        return 0.0
    match = _MAX_AGE.search(cache_control)
    return float(match.group(1)) if match else None


async def _read_limited(response: httpx.Response, what: str, url: str, limit: int) -> bytes:
    too_large = FetchError(f"{what} {safe_url(url)}: larger than {limit} bytes")
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip", "x-gzip", "deflate"):
        raise FetchError(f"{what} {safe_url(url)}: compressed as {encoding[:20]!r}, asked for none")
    # wbits 47: a gzip or zlib stream, told apart by its header.
    decoder = zlib.decompressobj(wbits=47) if encoding != "identity" else None
    body = bytearray()
    # Raw bytes when compressed: httpx's own decoding would inflate a whole chunk before we could count it.
    async for chunk in response.aiter_bytes() if decoder is None else response.aiter_raw():
        if decoder is None:
            body += chunk
        else:
            try:
                body += decoder.decompress(chunk, limit + 1 - len(body))  # never more than one byte past the cap
            except zlib.error as exc:
                raise FetchError(f"{what} {safe_url(url)}: broken {encoding} body") from exc
        if len(body) > limit:
            raise too_large
    return bytes(body)


def _require_secure(url: str, what: str) -> None:
    """https, or http to a loopback host (the demo and tests); anything else could be rewritten on the way."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and is_loopback(parts.hostname or ""):
        return
    raise FetchError(f"{what} {safe_url(url)}: refused, https only (or http to loopback)", "bad_response")


def safe_url(url: str) -> str:
    """A URL for a message: without its query and credentials (either could hold a secret)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"
