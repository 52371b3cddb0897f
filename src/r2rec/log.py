"""Logging: every module logs through ``logging.getLogger(__name__)``; the CLI calls :func:`setup` once.

Messages keep the ``[stage] what happened`` form and go to stderr, so a command's own output on stdout (a JSON
answer, a results table) stays clean enough to pipe. ``R2REC_LOG_LEVEL`` (``DEBUG``, ``INFO`` (default),
``WARNING``, ``ERROR``) sets how much is shown. Progress bars (tqdm) are not log records and are unaffected.
Used as a library, r2rec stays quiet below warnings until the caller configures logging.
"""

from __future__ import annotations

import logging
import os
import sys

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (test capture and redirection included)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ assigns it; the property always answers sys.stderr
        pass


def setup(level: str | None = None) -> None:
    """Route the ``r2rec`` loggers to stderr at ``level`` (default: ``$R2REC_LOG_LEVEL`` or ``INFO``).

    Idempotent: a second call only changes the level.
    """
    name = (level or os.environ.get("R2REC_LOG_LEVEL") or "INFO").upper()
    if name not in LEVELS:
        raise ValueError(f"R2REC_LOG_LEVEL must be one of {LEVELS}, got {name!r}")
    logger = logging.getLogger("r2rec")
    logger.setLevel(name)
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.propagate = False
