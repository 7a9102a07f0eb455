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
            "message": record.getMessage(),
            **fields,
        }
        if record.exc_info and record.exc_info[0] is not None:
            # The exception's type only: messages of foreign exceptions may quote URLs with secrets.
            line["error"] = record.exc_info[0].__name__
        return json.dumps(line, separators=(",", ":"), default=str)


def _iso(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


def configure(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_JsonFormatter())
    root = logging.getLogger("sidecar")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def access(fields: dict[str, Any]) -> None:
    """One line per request; `fields` come from the gate and hold no secrets by construction."""
    if _access.isEnabledFor(logging.INFO):
        _access.info("request", extra={"fields": fields})
