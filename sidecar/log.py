"""Log set-up and the one access line per request (JSON on stdout). Never a token, secret, query or body."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Final

__all__ = ["access", "configure", "logger"]

logger: Final = logging.getLogger("sidecar")
_access: Final = logging.getLogger("sidecar.access")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
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
        return json.dumps(line, separators=(",", ":"), default=str)


class _TextFormatter(_JsonFormatter):
    """`time level message key=value ...` for people reading a terminal; the same fields as the JSON lines."""

    def format(self, record: logging.LogRecord) -> str:
        line = json.loads(super().format(record))
        head = f"{line.pop('time')} {line.pop('level'):<7} {line.pop('message')}"
        line.pop("logger", None)
        line.pop("pid", None)
        return " ".join([head, *(f"{key}={value}" for key, value in line.items() if value is not None)])


def _iso(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


def configure(level: str = "info", log_format: str = "json") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_TextFormatter() if log_format == "text" else _JsonFormatter())
    # uvicorn's own errors ("Exception in ASGI application") go through the same formatter, which writes an
    # exception's type and never its message (foreign messages may quote URLs with secrets).
    for name, least in (("sidecar", level.upper()), ("uvicorn", "WARNING")):
        target = logging.getLogger(name)
        target.handlers[:] = [handler]
        target.setLevel(max(logging.getLevelName(least), logging.getLevelName(level.upper())))
        target.propagate = False
    logging.getLogger("uvicorn.error").handlers[:] = []  # it propagates to "uvicorn"


def access(fields: dict[str, Any]) -> None:
    """One line per request; `fields` come from the gate and hold no secrets by construction."""
    if _access.isEnabledFor(logging.INFO):
        _access.info("request", extra={"fields": fields})
