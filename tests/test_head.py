"""The request head read once: ambiguous framing and doubled credentials are conflicts; the body's declared size,
chunking and the received X-Forwarded-For are kept (pure, one pass over ASGI headers)."""

from __future__ import annotations

import pytest

from sidecar.edge.head import Head, read_head


def _headers(*pairs: tuple[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode(), value.encode()) for name, value in pairs]


HEADS = {
    "no-body": ([("Host", "a")], Head()),
    "declared-body": ([("Content-Length", "12")], Head(content_length=12)),
    "declared-empty": ([("Content-Length", "0")], Head(content_length=0)),
    "trailing-space": ([("Content-Length", "3 ")], Head(content_length=3)),
    "chunked": ([("Transfer-Encoding", "chunked")], Head(chunked=True)),
    "chunked-any-case": ([("Transfer-Encoding", "Chunked")], Head(chunked=True)),
    "forwarded-for": ([("X-Forwarded-For", "1.2.3.4")], Head(forwarded_for=b"1.2.3.4")),
    "forwarded-for-lines-join": (
        [("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-For", "5.6.7.8, 9.9.9.9")],
        Head(forwarded_for=b"1.2.3.4, 5.6.7.8, 9.9.9.9"),
    ),
    "one-of-each": ([("Host", "a"), ("Authorization", "Bearer t"), ("Content-Length", "1")], Head(content_length=1)),
}


@pytest.mark.parametrize(("headers", "expected"), HEADS.values(), ids=HEADS.keys())
def test_heads_that_are_not_in_conflict(headers: list[tuple[str, str]], expected: Head) -> None:
    assert read_head(_headers(*headers)) == expected


CONFLICTS = {
    "two-hosts": [("Host", "a"), ("Host", "b")],
    "two-same-hosts": [("Host", "a"), ("Host", "a")],
    "two-authorizations": [("Authorization", "Bearer a"), ("Authorization", "Bearer a")],
    "two-content-lengths": [("Content-Length", "1"), ("Content-Length", "1")],
    "content-length-list": [("Content-Length", "1, 1")],
    "content-length-negative": [("Content-Length", "-1")],
    "content-length-and-chunked": [("Content-Length", "1"), ("Transfer-Encoding", "chunked")],
    "chunked-and-content-length": [("Transfer-Encoding", "chunked"), ("Content-Length", "0")],
    "two-transfer-encodings": [("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "chunked")],
    "coding-before-chunked": [("Transfer-Encoding", "gzip, chunked")],
    "identity-coding": [("Transfer-Encoding", "identity")],
}


@pytest.mark.parametrize("headers", CONFLICTS.values(), ids=CONFLICTS.keys())
def test_ambiguous_heads_are_conflicts(headers: list[tuple[str, str]]) -> None:
    assert read_head(_headers(*headers)).conflict


@pytest.mark.parametrize(
    ("headers", "has_body"),
    [
        ([], False),
        ([("Content-Length", "0")], False),
        ([("Content-Length", "1")], True),
        ([("Transfer-Encoding", "chunked")], True),
    ],
    ids=["none", "empty", "declared", "chunked"],
)
def test_has_body(headers: list[tuple[str, str]], has_body: bool) -> None:
    assert read_head(_headers(*headers)).has_body is has_body
