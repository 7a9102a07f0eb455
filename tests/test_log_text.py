"""Text-format log lines: each value bare when it is one printable word, else quoted with every character that
could end the line, start another or pass for a separator escaped."""

from __future__ import annotations

import logging

import pytest

from sidecar.observe.log import _TextFormatter


def text_line(**fields: object) -> str:
    record = logging.LogRecord("sidecar.access", logging.INFO, __file__, 1, "request", None, None)
    record.fields = fields
    return _TextFormatter().format(record)


VALUES = {
    "a-word-stays-bare": ("contoso", "contoso"),
    "a-number-as-in-json": (12.5, "12.5"),
    "a-boolean-as-in-json": (True, "true"),
    "a-list-is-quoted-json": (["a", "b"], r'"[\"a\",\"b\"]"'),
    "non-ascii-letters-stay": ("Müller", "Müller"),
    "space-is-quoted": ("two words", '"two words"'),
    "equals-is-quoted": ("x=1", '"x=1"'),
    "empty-is-quoted": ("", '""'),
    "quote-and-backslash": ('a"b\\c', r'"a\"b\\c"'),
    "cr-lf-tab": ("a\r\nb\tc", r'"a\r\nb\tc"'),
    "nul-esc-del": ("a\x00\x1b[31m\x7f", r'"a\x00\x1b[31m\x7f"'),
    "c1-nel-and-csi": ("a\x85b\x9b", r'"a\x85b\x9b"'),
    "line-and-paragraph-separators": ("a\u2028b\u2029", r'"a\u2028b\u2029"'),
    "bidi-override-and-zero-width": ("a\u202eb\u200bc", r'"a\u202eb\u200bc"'),
    "no-break-space-passes-for-a-separator": ("a\u00a0b=c", r'"a\xa0b=c"'),
    "vertical-tab-and-form-feed": ("a\x0bb\x0c", r'"a\x0bb\x0c"'),
}


@pytest.mark.parametrize(("value", "written"), VALUES.values(), ids=VALUES.keys())
def test_a_value_is_bare_or_quoted_and_escaped(value: object, written: str) -> None:
    line = text_line(subject=value, status=200)
    assert line.endswith(f" request subject={written} status=200")
    assert line.isprintable() and len(line.splitlines()) == 1


def test_a_key_is_escaped_too_and_none_is_left_out() -> None:
    line = text_line(**{"odd key\n": "v", "absent": None})
    assert line.endswith(r' request "odd key\n"=v')
