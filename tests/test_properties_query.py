"""Property tests for the upstream's own query: however a client spells one of its parameter names (case, escapes
including .NET's `%uXXXX`, PHP's array and blank rules, Rack's leading brackets, NUL truncation, invisible and control
characters, `;` separators, a whole pair encoded inside another one), the client's copy never reaches the upstream;
and a parameter whose letters and digits differ from every upstream name always does (nothing else is dropped)."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.upstream.target import _SEPARATORS, _decoded, _read_as_any, query_params, shadows, target, target_url
from tests.support.examples import examples

SETTINGS = settings(max_examples=examples(600), deadline=None, derandomize=True, database=None)

UPSTREAM = "https://h.example:443/invoke?api-version=2016-10-01&sp=%2Frun&sig=SECRET&code=K3Y&X-Amz-Signature=ab12"
NAMES = ["api-version", "sp", "sig", "code", "X-Amz-Signature"]
KEPT = "&id=7"


def _encode(char: str, how: int) -> str:
    """The character as written (0), percent-encoded once (1) or twice (2), or as .NET's `%uXXXX` once (3) or
    encoded again (4)."""
    if how == 0:
        return char
    if how >= 3:
        escaped = f"%u{ord(char):04X}"
        return escaped if how == 3 else escaped.replace("%", "%25")
    escaped = "".join(f"%{byte:02X}" for byte in char.encode())
    return escaped if how == 1 else escaped.replace("%", "%25")


@st.composite
def shadowing_names(draw: st.DrawFn) -> str:
    """An upstream parameter's name, mangled the ways frameworks still read as that name."""
    name = draw(st.sampled_from(NAMES))
    cased = "".join(c.upper() if draw(st.booleans()) else c.lower() for c in name)
    letters = [_encode(c, draw(st.integers(0, 4))) for c in cased]
    odd = ["%E2%80%8B", "%EF%BB%BF", "%01", "%7F", "%CC%81", "%C0%80", "-"]  # zero-width, BOM, controls, a mark
    if draw(st.booleans()):  # one of them between two letters
        letters.insert(draw(st.integers(0, len(letters))), draw(st.sampled_from(odd)))
    written = "".join(letters)
    lead = draw(st.sampled_from(["", "+", "%20", "+%20", "%09", "_", ".", "[", "]", "[]", "%5B", *odd]))
    tail = draw(st.sampled_from(["", "[]", "%5B%5D", "[0]", "[x", "]", "%00", "%00junk", "+", "%20", ".", "_", *odd]))
    return lead + written + tail


@given(shadowing_names(), st.text("abc=;", max_size=4), st.booleans())
@SETTINGS
def test_no_spelling_of_an_upstream_parameter_reaches_the_upstream(name: str, value: str, semicolon: bool) -> None:
    pair = f"x=1;{name}={value}" if semicolon else f"{name}={value}"
    assert target_url(target(UPSTREAM), "", f"{pair}&id=7".encode()) == UPSTREAM + KEPT


@given(shadowing_names(), st.sampled_from(["&", ";"]), st.integers(1, 3), st.booleans(), st.text("abc=", max_size=4))
@SETTINGS
def test_an_upstream_parameter_encoded_inside_another_never_reaches_the_upstream(
    name: str, separator: str, times: int, in_value: bool, value: str
) -> None:
    # Servers that decode the whole query before splitting it read `x=%26sig%3Dv` as `x=&sig=v`.
    inner = f"{separator}{name}={value}"
    for _ in range(times):
        inner = "".join(c if c.isalnum() else f"%{ord(c):02X}" for c in inner)
    pair = f"x={inner}" if in_value else f"x{inner}=1"
    assert target_url(target(UPSTREAM), "", f"{pair}&id=7".encode()) == UPSTREAM + KEPT


def _letters(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


@given(st.text("abcdegiopsSIG0123-_. ", min_size=1, max_size=12), st.text("xyz", max_size=3))
@SETTINGS
def test_a_parameter_with_other_letters_than_every_upstream_name_is_forwarded(name: str, value: str) -> None:
    if _letters(name) in {_letters(upstream) for upstream in NAMES}:
        return  # may be dropped: a spelling of an upstream name
    pair = f"{name.replace(' ', '+')}={value}"
    assert target_url(target(UPSTREAM), "", pair.encode()) == f"{UPSTREAM}&{pair}"


# The fast path (`shadows` on a plain pair) against the full reading, on pairs mostly plain and sometimes not.
PLAIN_NAMES = frozenset({"sig", "apiversion", "sp", "", "x0"})
PAIR_TEXT = st.text("sigSIGapvrn0x._-=&;%[]\x00+ \u017f\u00e9", max_size=10)


@given(PAIR_TEXT)
@SETTINGS
def test_the_fast_path_answers_as_the_full_reading(pair: str) -> None:
    assert shadows(pair, PLAIN_NAMES) == _read_as_any(pair, PLAIN_NAMES)


def _parts_read(query: bytes) -> int:
    """What `shadows` reads in `query`: every part between separators of every decoded pair, empty ones skipped (one
    for a pair that decodes too often: dropped whole)."""
    count = 0
    for pair in filter(None, query.decode("latin-1").split("&")):
        decoded = _decoded(pair)
        count += 1 if decoded is None else len(list(filter(None, _SEPARATORS.split(decoded))))
    return count


ESCAPES = st.sampled_from(["%", "%2", "%26", "%3B", "%3b", "%25", "%u0026", "%U003B", "%u0025", "%41", "%E4", "%uFF06"])
QUERY_PIECES = st.one_of(ESCAPES, st.sampled_from(["&", ";", "a", "2", "5", "6", "3", "b", "B", "u", "0", "="]))


@given(st.lists(QUERY_PIECES, max_size=24))
@SETTINGS
def test_query_params_never_counts_fewer_parameters_than_are_read(pieces: list[str]) -> None:
    # The cap is checked on this count before any parameter is read: a query under it can never make the rule read
    # more, however its escapes decode into separators.
    query = "".join(pieces).encode("latin-1")
    assert _parts_read(query) <= query_params(query)
