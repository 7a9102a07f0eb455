"""What the client sees of the upstream's URL in response headers: nothing secret. A `Location`, `Content-Location`,
`Refresh` or `Link` (its target and its `anchor`) naming the upstream is rewritten to the route's public path (as
nginx's `proxy_redirect default`), without the upstream's own query parameters; one naming the upstream's host outside
the route, in any spelling of that host (`host_key`), is dropped; and no header that holds a value of the upstream
URL's query (its signature, in any common encoding) passes.

Pure: no I/O. It runs for every response of a route: a header that names no URL costs a set lookup, and the
secret scan starts with one search over all the values.
"""

from __future__ import annotations

import functools
import itertools
import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote, unquote_to_bytes, urljoin, urlsplit

from sidecar.edge.paths import normalise
from sidecar.reasons import Rejection
from sidecar.upstream.host_key import host_key
from sidecar.upstream.target import Headers, Target, shadows, target

__all__ = ["ResponseUrls", "response_urls"]

# Response headers whose value is, or holds, a URL a client follows or records (RFC 9110 §10.2.2 and §8.8; Link:
# RFC 8288; Refresh: the HTML standard). Read by their `_`-as-`-` name, as every header rule here.
_REFRESH: Final = b"refresh"
_LINK: Final = b"link"
_URL_HEADERS: Final = frozenset({b"location", b"content-location", _REFRESH, _LINK})
# A query value this short is a version or a flag (`api-version=2016-10-01` is longer: it counts), not a secret; it
# would match harmless header text.
_MIN_SECRET: Final = 8
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
# `5; url=https://...` (also with `,`, no `url=`, quotes): the HTML standard's shared declarative refresh steps.
_REFRESH_VALUE: Final = re.compile(r"""(\s*[\d.]*\s*[;,]?\s*(?:url\s*=\s*)?)(['"]?)(.*?)\2\s*""", re.I | re.S)
# One link-value of a Link header: `<uri-reference>` and its parameters (quoted strings may hold `,` and `<`).
_LINK_VALUE: Final = re.compile(r'\s*<([^>]*)>((?:[^",<]|"(?:[^"\\]|\\.)*")*)(?:,|$)', re.S)
# One `; name[=value]` parameter of a link-value (RFC 8288 §3): a token or a quoted string.
_LINK_PARAM: Final = re.compile(r'\s*;\s*([^\s=;"]*)\s*(?:=\s*("(?:[^"\\]|\\.)*"|[^;"]*))?', re.S)
_QUOTED_PAIR: Final = re.compile(r"\\(.)", re.S)
# What a browser's URL parser ignores or reads differently from `urlsplit`: leading and trailing C0 controls and
# spaces are stripped, tabs and newlines removed, and `\` is `/` in an http(s) URL.
_C0_AND_SPACE: Final = "".join(map(chr, range(0x21)))
_BROWSER_VIEW: Final = str.maketrans({"\t": None, "\n": None, "\r": None, "\\": "/"})


@dataclass(frozen=True, slots=True)
class ResponseUrls:
    """One route's rules: its upstream URL split up, the path clients call, and the upstream's secret values."""

    scheme: str
    host: str  # `host_key` of the upstream's host
    port: int
    base: str  # the upstream URL without its query (for a prefix route, the URL of the root)
    upstream_path: str  # normalised as request paths are
    public: str  # the route's exact path, or its prefix as written
    prefix: bool
    query_names: frozenset[str]  # the upstream's parameter names' skeletons (`upstream.param_skeleton`)
    secrets: re.Pattern[bytes] | None  # the upstream's query values, decoded, with their `+`-as-space forms; any case

    def rewritten(self, key: bytes, value: bytes, url: str) -> bytes | None:
        """The value the client gets for a header named `key` (lower-case, `_` as `-`), or None: not passed on.
        Only headers that name a URL change; `url` is the URL the request was sent to (what the upstream's relative
        references are relative to). Secrets are `without_secrets`' job."""
        if key not in _URL_HEADERS:
            return value
        text = value.decode("latin-1")
        base = url or self.base
        if key == _REFRESH:
            shown = self._refresh(text, base)
        elif key == _LINK:
            shown = self._links(text, base)
        else:
            shown = self._reference(text.strip(), base)
        return None if shown is None else shown.encode("latin-1")

    def without_secrets(self, headers: Headers) -> Headers:
        """`headers` less every one holding a value of the upstream's query, in its value or even its name (`%` and
        `+` are name characters). One search over all of them first: the usual answer holds none, and then costs one
        or two regular expression searches in all."""
        secrets = self.secrets
        if secrets is None or not holds_secret(b"\n".join(itertools.chain.from_iterable(headers)), secrets):
            return headers
        return [pair for pair in headers if not holds_secret(pair[0], secrets) and not holds_secret(pair[1], secrets)]

    def _reference(self, reference: str, base: str) -> str | None:
        """A URI reference as the client may see it: unchanged when it names another host; the public path (its
        query without the upstream's parameters, its fragment) when it names the upstream within the route; None
        when it names the upstream's host anywhere else (another path, port or scheme), in any spelling of that host,
        also as a browser reads it (`\\` for `/`)."""
        try:
            parts = urlsplit(urljoin(base, reference))
            port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower(), 0)
        except ValueError:  # an invalid port or IPv6 literal: nothing a client could follow
            return None
        if host_key(parts.hostname or "") != self.host:
            return None if self._upstream_to_browsers(reference, base) else reference
        if parts.scheme.lower() != self.scheme or port != self.port:
            return None
        path = self._public_path(parts.path or "/")
        if path is None:
            return None
        query = "&".join(pair for pair in parts.query.split("&") if pair and not self._upstream_param(pair))
        return path + ("?" + query if query else "") + ("#" + parts.fragment if parts.fragment else "")

    def _public_path(self, path: str) -> str | None:
        """The inverse of forwarding: the path a client calls to reach this upstream `path`, or None outside the
        route. Read as request paths are (`normalise`), so no escape or dot segment leads out of it."""
        try:
            path = normalise(path.encode("ascii"))
        except (Rejection, UnicodeEncodeError):
            return None
        if path == self.upstream_path:
            return self.public
        stem = self.upstream_path.rstrip("/")
        if self.prefix and path.startswith(stem + "/"):
            return self.public.rstrip("/") + path[len(stem) :]
        return None

    def _upstream_to_browsers(self, reference: str, base: str) -> bool:
        """Whether a browser's URL parser reads `reference` as naming the upstream's host (`urlsplit` did not). A
        browser reads the header's bytes as UTF-8, and maps the host as UTS 46 does (`host_key`): `１２７。0.0.1` is
        127.0.0.1, which the latin-1 text compared here is not."""
        seen = _as_utf8(reference).strip(_C0_AND_SPACE).translate(_BROWSER_VIEW)
        if seen == reference:
            return False
        try:
            return host_key(urlsplit(urljoin(base, seen)).hostname or "") == self.host
        except ValueError:
            return True  # unreadable: not passed on

    def _upstream_param(self, pair: str) -> bool:
        return shadows(pair, self.query_names)

    def _refresh(self, value: str, base: str) -> str | None:
        match = _REFRESH_VALUE.fullmatch(value)
        if match is None or not match.group(3):
            return value  # no URL: a refresh of the same page (or not a Refresh a browser would follow)
        rewritten = self._reference(match.group(3), base)
        return None if rewritten is None else match.group(1) + match.group(2) + rewritten + match.group(2)

    def _links(self, value: str, base: str) -> str | None:
        """Each link-value's target and `anchor` rewritten; one whose target or anchor names the upstream outside
        the route is left out; a value that is not a list of link-values is dropped whole (it cannot be rewritten,
        so it may not pass)."""
        matches = _consecutive(_LINK_VALUE, value)
        if matches is None:
            return None
        kept = []
        for match in matches:
            rewritten = self._reference(match.group(1).strip(), base)
            params = self._link_params(match.group(2), base)
            if rewritten is not None and params is not None:
                kept.append(f"<{rewritten}>{params.rstrip()}")
        return ", ".join(kept) or None

    def _link_params(self, params: str, base: str) -> str | None:
        """A link-value's parameters with its `anchor` (RFC 8288 §3.2: the link's context, a URL; also `anchor*`)
        rewritten as a target is, or None: the anchor names the upstream outside the route, or the parameters
        cannot be read (then the anchor cannot be checked)."""
        matches = _consecutive(_LINK_PARAM, params)
        if matches is None:
            return None
        shown = []
        for match in matches:
            name, raw = match.group(1), match.group(2) or ""
            if name.lower().rstrip("*") != "anchor":
                shown.append(match.group(0))
                continue
            anchor = _link_param_value(raw, extended=name.endswith("*")).strip()
            rewritten = self._reference(anchor, base)
            if rewritten is None:
                return None
            quoted = rewritten.replace("\\", "\\\\").replace('"', '\\"')
            shown.append(match.group(0) if rewritten == anchor else f'; anchor="{quoted}"')
        return "".join(shown)


def _as_utf8(text: str) -> str:
    """A header value (read as latin-1) as a browser reads a URL in it: its bytes as UTF-8, when they are that."""
    if text.isascii():
        return text
    try:
        return text.encode("latin-1").decode("utf-8")
    except UnicodeError:  # not UTF-8, or already decoded text (an `anchor*` value): as it is
        return text


def _consecutive(pattern: re.Pattern[str], text: str) -> list[re.Match[str]] | None:
    """`text` read as back-to-back matches of `pattern` (blanks may follow), or None where it is not that."""
    matches: list[re.Match[str]] = []
    position = 0
    while position < len(text) and text[position:].strip():
        match = pattern.match(text, position)
        if match is None or match.end() == position:
            return None
        matches.append(match)
        position = match.end()
    return matches


def _link_param_value(raw: str, *, extended: bool) -> str:
    """A parameter's value: a quoted string unquoted; an RFC 8187 `charset'language'value` percent-decoded."""
    if raw.startswith('"'):
        return _QUOTED_PAIR.sub(r"\1", raw[1:-1])
    if extended:
        return unquote(raw.rpartition("'")[2], errors="replace")
    return raw


def holds_secret(value: bytes, secrets: re.Pattern[bytes]) -> bool:
    """Whether a header value holds one of `secrets` as written, percent-encoded once or twice (any hex case), with
    `+` or space for `+`, or with JSON's escaped `\\/`. One regular expression search per form: this runs for every
    response header of a route whose upstream URL has a query."""
    if b"\\" in value:
        value = value.replace(b"\\/", b"/")
    for _ in range(3):
        if secrets.search(value) is not None:
            return True
        if b"%" not in value:
            return False
        value = unquote_to_bytes(value)
    return False


@functools.lru_cache(maxsize=1024)
def response_urls(upstream: str, public: str, prefix: bool) -> ResponseUrls:
    """The rules for a route: its `upstream` URL, and its `match.path` (or `match.path_prefix`, with `prefix`)."""
    goal: Target = target(upstream)
    parts = urlsplit(goal.origin)
    scheme = parts.scheme.lower()
    port = parts.port or _DEFAULT_PORTS.get(scheme, 0)
    try:
        upstream_path = normalise((goal.path or "/").encode("ascii"))
    except (Rejection, UnicodeEncodeError):
        upstream_path = goal.path or "/"  # only exact matches map back then
    return ResponseUrls(
        scheme,
        host_key(parts.hostname or ""),
        port,
        goal.origin + (goal.path or "/"),
        upstream_path,
        public,
        prefix,
        goal.query_names,
        _secrets(goal.query),
    )


def _secrets(query: str) -> re.Pattern[bytes] | None:
    forms: set[bytes] = set()
    for pair in query.split("&"):
        value = pair.partition("=")[2]
        for _ in range(3):  # as far as it decodes: a value written encoded twice is still that secret
            value = unquote(value)
        if len(value) >= _MIN_SECRET:
            raw = value.encode("utf-8")
            forms.update((raw, raw.replace(b"+", b" ")))
    if not forms:
        return None
    return re.compile(b"|".join(re.escape(form) for form in sorted(forms)), re.IGNORECASE)
