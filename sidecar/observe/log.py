"""Log set-up and the one access line per request (JSON or escaped text). Never a token, secret, query or body."""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import os
import sys
import time
from typing import Any, Final, TextIO

__all__ = ["access", "configure", "flush", "logger"]

logger: Final = logging.getLogger("sidecar")
_access: Final = logging.getLogger("sidecar.access")
# One encoder for every line: json.dumps with arguments builds a new one per call.
_encode: Final = json.JSONEncoder(separators=(",", ":"), default=str).encode
_FLUSH_AFTER: Final = 0.05  # seconds a buffered access line may wait for its write


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return _encode(_record_fields(record))


def _record_fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = getattr(record, "fields", None) or {}
    line = {
        "time": _iso(record.created),
        "level": record.levelname.lower(),
        "logger": record.name,
        "pid": record.process,  # tells the workers apart
        "message": record.getMessage(),
        **fields,
    }
    if record.exc_info and record.exc_info[0] is not None:
        # The exception's type only: messages of foreign exceptions may quote URLs with secrets.
        line["error"] = record.exc_info[0].__name__
    return line


class _TextFormatter(logging.Formatter):
    """`time level message key=value ...` for people reading a terminal; the same fields as the JSON lines.

    Values come from callers too (claims, paths, header values): each is written bare only when it is plainly one
    word, else quoted with every control, format or separator character escaped, so no value can end the line,
    start a forged one, or pass for another field (as the JSON lines, which escape the same)."""

    def format(self, record: logging.LogRecord) -> str:
        line = _record_fields(record)
        head = f"{line.pop('time')} {line.pop('level'):<7} {_escape(str(line.pop('message')))}"
        line.pop("logger", None)
        line.pop("pid", None)
        return " ".join([head, *(f"{_text(key)}={_text(value)}" for key, value in line.items() if value is not None)])


_QUOTE_IF: Final = frozenset(' "=\\')
_ESCAPES: Final = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _text(value: object) -> str:
    """One value of a text line: bare when it is one printable word, else quoted and escaped."""
    if isinstance(value, str):
        text = value
    else:  # numbers, booleans and lists as in the JSON lines (`true`, `["a","b"]`)
        text = _encode(value) if isinstance(value, int | float | list | tuple | dict) else str(value)
    if text and text.isprintable() and _QUOTE_IF.isdisjoint(text):
        return text
    return f'"{_escape(text)}"'


def _escape(text: str) -> str:
    """Control, format and line-separator characters (C0, DEL, C1, U+2028, bidi overrides, ...) as `\\xNN`,
    `\\uNNNN`; quotes and backslashes escaped. `str.isprintable` is false for exactly those (and for spaces other
    than U+0020, which could pass for a separator)."""
    if text.isprintable() and '"' not in text and "\\" not in text:
        return text
    return "".join(_ESCAPES.get(char) or (char if char.isprintable() else _code(char)) for char in text)


def _code(char: str) -> str:
    point = ord(char)
    return f"\\x{point:02x}" if point < 0x100 else f"\\u{point:04x}" if point < 0x10000 else f"\\U{point:08x}"


class _Clock:
    """The timestamp's seconds part, formatted once per second (strftime per line was ~1% of a request)."""

    second = -1
    prefix = ""


def _iso(created: float) -> str:
    second = int(created)
    if second != _Clock.second:
        _Clock.prefix, _Clock.second = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)), second
    return f"{_Clock.prefix}.{int(created % 1 * 1000):03d}Z"


class _Lines:
    """Access lines waiting for one write: at most `_FLUSH_AFTER` seconds, and always before any other log line
    (the handler flushes them first), on drain (`flush` at the end of the run) and at exit."""

    def __init__(self) -> None:
        self.pending: list[str] = []
        self.stream: TextIO = sys.stdout
        self.pid = os.getpid()
        self.loop: asyncio.AbstractEventLoop | None = None  # the loop whose timer will write `pending`
        # Set by `configure` for JSON: otherwise (text format, or never configured) access lines take the
        # logging path like every other line.
        self.direct = False

    def add(self, line: str) -> None:
        armed = self.loop
        if self.pending and armed is not None and armed.is_running():  # the write is armed: the common case
            self.pending.append(line)  # (asyncio.get_running_loop makes a getpid(2) call on Python 3.11)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a command, a test): write at once
            self.pending.append(line)
            self.flush()
            return
        if not self.pending or loop is not self.loop:  # the first line waiting in this loop arms the write
            self.loop = loop
            loop.call_later(_FLUSH_AFTER, self.flush)
        self.pending.append(line)

    def flush(self) -> None:
        if self.pending:
            text, self.pending[:] = "".join(self.pending), []
            self.stream.write(text)
            self.stream.flush()


_lines: Final = _Lines()
atexit.register(_lines.flush)
os.register_at_fork(after_in_child=lambda: setattr(_lines, "pid", os.getpid()))


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """stdout, after any buffered access lines: lines stay in the order they were logged."""

    def emit(self, record: logging.LogRecord) -> None:
        _lines.flush()
        super().emit(record)


def configure(level: str = "info", log_format: str = "json", access: bool = False) -> None:
    """`access`: write the access lines whatever `level` says (the demo shows them, and otherwise only warnings)."""
    _lines.flush()
    _lines.stream, _lines.direct = sys.stdout, log_format != "text"
    handler = _Handler(sys.stdout)
    handler.setFormatter(_TextFormatter() if log_format == "text" else _JsonFormatter())
    # uvicorn's own errors ("Exception in ASGI application") go through the same formatter, which writes an
    # exception's type and never its message (foreign messages may quote URLs with secrets).
    for name, least in (("sidecar", level.upper()), ("uvicorn", "WARNING")):
        target = logging.getLogger(name)
        target.handlers[:] = [handler]
        target.setLevel(max(logging.getLevelName(least), logging.getLevelName(level.upper())))
        target.propagate = False
    logging.getLogger("uvicorn.error").handlers[:] = []  # it propagates to "uvicorn"
    _access.setLevel(logging.INFO if access else logging.NOTSET)  # NOTSET: as "sidecar" is


def flush() -> None:
    """Write the buffered access lines now (the server calls it when it has drained)."""
    _lines.flush()


def access(fields: dict[str, Any]) -> None:
    """One line per request; `fields` come from the gate and hold no secrets by construction. JSON lines skip
    `logging` (a LogRecord per request was ~10% of a request's CPU) and are written in batches."""
    if not _access.isEnabledFor(logging.INFO):
        return
    if not _lines.direct:
        _access.info("request", extra={"fields": fields})
        return
    head = f'{{"time":"{_iso(time.time())}","level":"info","logger":"sidecar.access","pid":{_lines.pid},'
    body = _encode(fields)
    _lines.add(head + '"message":"request"' + ("," + body[1:] if len(body) > 2 else "}") + "\n")
