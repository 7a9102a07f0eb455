"""Where a URL goes (`upstream/connection.py: split_url`): the pool's key, the address and port to connect to, the
TLS name, the Host header as aiohttp and browsers send it, and the request target exactly as written."""

from __future__ import annotations

import pytest

from sidecar.upstream.connection import Origin, split_url

URLS = {
    "path-and-query": (
        "http://flows.test:8080/a/b?x=1",
        Origin("http://flows.test:8080", "flows.test", 8080, False, b"flows.test:8080"),
        "/a/b?x=1",
    ),
    "default-port-not-in-host": (
        "https://flows.test/p", Origin("https://flows.test:443", "flows.test", 443, True, b"flows.test"), "/p"
    ),
    "explicit-default-port": ("http://h:80/", Origin("http://h:80", "h", 80, False, b"h"), "/"),
    "no-path": ("http://h:81", Origin("http://h:81", "h", 81, False, b"h:81"), "/"),
    "query-without-path": ("http://h:81?a=1?b", Origin("http://h:81", "h", 81, False, b"h:81"), "/?a=1?b"),
    "question-mark-in-the-path-query": ("http://h/a?b=/c", Origin("http://h:80", "h", 80, False, b"h"), "/a?b=/c"),
    "double-slash-in-the-path": ("http://h/a//b", Origin("http://h:80", "h", 80, False, b"h"), "/a//b"),
    "escapes-kept": ("http://h/a%2Fb?s=%2F", Origin("http://h:80", "h", 80, False, b"h"), "/a%2Fb?s=%2F"),
    "ipv6": ("http://[::1]:9/x", Origin("http://[::1]:9", "::1", 9, False, b"[::1]:9"), "/x"),
    "ipv6-default-port": (
        "https://[fd00::7]/", Origin("https://[fd00::7]:443", "fd00::7", 443, True, b"[fd00::7]"), "/"
    ),
    "one-letter-host": ("http://a/x", Origin("http://a:80", "a", 80, False, b"a"), "/x"),
}  # fmt: skip


@pytest.mark.parametrize(("url", "origin", "target"), URLS.values(), ids=URLS.keys())
def test_a_url_splits_into_where_to_connect_and_the_target_as_written(url: str, origin: Origin, target: str) -> None:
    assert split_url(url) == (origin, target)
