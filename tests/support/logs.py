"""Log records of one logger, kept in this process while a test runs (the sidecar's own in-process loggers)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["Records", "captured"]


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, level: int = logging.INFO) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= level]

    def fields(self) -> list[dict[str, object]]:
        """Each record's structured fields (what the JSON line holds besides time, level and message)."""
        return [dict(getattr(record, "fields", None) or {}) for record in self.records]


@contextmanager
def captured(name: str, level: int = logging.DEBUG) -> Iterator[Records]:
    """The records logger `name` writes at `level` or above within the block; its level is restored after."""
    handler, logger = Records(), logging.getLogger(name)
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
