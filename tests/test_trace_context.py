"""The access log's `trace_id`: only the trace id of one valid W3C `traceparent`, never other bytes of a client's
(pure: sidecar.observe.trace_context.trace_id)."""

from __future__ import annotations

import pytest

from sidecar.edge.exchange import Record
from sidecar.observe.trace_context import trace_id
from sidecar.policy.model import Mode

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{PARENT}-01"

LOGGED = {
    "version-00": (VALID, TRACE),
    "not-sampled": (f"00-{TRACE}-{PARENT}-00", TRACE),
    "a-later-version-as-is": (f"01-{TRACE}-{PARENT}-01", TRACE),
    "a-later-version-with-more-fields": (f"cc-{TRACE}-{PARENT}-01-what-the-future-holds", TRACE),
}
NOT_LOGGED = {
    "uppercase-trace-id": f"00-{TRACE.upper()}-{PARENT}-01",
    "uppercase-version": f"0A-{TRACE}-{PARENT}-01",
    "all-zero-trace-id": f"00-{'0' * 32}-{PARENT}-01",
    "all-zero-parent-id": f"00-{TRACE}-{'0' * 16}-01",
    "version-ff": f"ff-{TRACE}-{PARENT}-01",
    "version-00-with-more": f"{VALID}-extra",
    "version-00-one-longer": f"{VALID}0",
    "later-version-no-dash-after-flags": f"01-{TRACE}-{PARENT}-01x",
    "short-trace-id": f"00-{TRACE[:-1]}-{PARENT}-01",
    "long-trace-id": f"00-{TRACE}0-{PARENT}-01",
    "short-parent-id": f"00-{TRACE}-{PARENT[:-1]}-01",
    "no-flags": f"00-{TRACE}-{PARENT}",
    "one-flag-digit": f"00-{TRACE}-{PARENT}-1",
    "not-hex": f"00-{TRACE[:-1]}g-{PARENT}-01",
    "other-separator": f"00_{TRACE}_{PARENT}_01",
    "leading-junk": f"x{VALID}",
    "a-log-line-after-it": f"{VALID}\r\nforged=1",
    "empty": "",
    "oversized": VALID + "-" + "a" * 8000,
}


def _headers(*values: str, name: bytes = b"traceparent") -> list[tuple[bytes, bytes]]:
    return [(b"host", b"sidecar"), *((name, value.encode("latin-1")) for value in values), (b"accept", b"*/*")]


@pytest.mark.parametrize(("value", "expected"), LOGGED.values(), ids=LOGGED.keys())
def test_a_valid_traceparent_gives_its_trace_id(value: str, expected: str) -> None:
    assert trace_id(_headers(value)) == expected


@pytest.mark.parametrize("value", NOT_LOGGED.values(), ids=NOT_LOGGED.keys())
def test_an_invalid_traceparent_gives_no_trace_id(value: str) -> None:
    assert trace_id(_headers(value)) is None


def test_an_oversized_later_version_gives_only_the_32_digit_trace_id() -> None:
    # A later version may carry more fields; the log still gets the trace id alone, never the rest.
    assert trace_id(_headers(f"01-{TRACE}-{PARENT}-01-" + "a" * 8000)) == TRACE


def test_two_traceparent_lines_give_no_trace_id_even_when_both_are_valid() -> None:
    other = f"00-{'1' * 32}-{PARENT}-01"
    assert trace_id(_headers(VALID, other)) is None
    assert trace_id(_headers(VALID, VALID)) is None


def test_no_traceparent_and_other_names_give_no_trace_id() -> None:
    assert trace_id(_headers()) is None
    assert trace_id(_headers(VALID, name=b"tracestate")) is None
    assert trace_id(_headers(VALID, name=b"x-traceparent")) is None


def test_the_access_record_writes_the_trace_id_after_the_client_address_and_only_when_there_is_one() -> None:
    traced = Record("r1", "GET", "/x", "x", Mode.ENFORCE, "10.0.0.1", trace_id=TRACE)
    assert list(traced.fields())[5:7] == ["client_ip", "trace_id"] and traced.fields()["trace_id"] == TRACE
    assert "trace_id" not in Record("r2", "GET", "/x", "x", Mode.ENFORCE, "10.0.0.1").fields()
