# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Logging of the `clarity` commands. The package's modules log through `logging.getLogger(__name__)` and never
print; only a command's entry point configures logging: the `clarity_hf` loggers' lines go to stderr as
`[clarity demo] message` (INFO by default, `CLARITY_LOG_LEVEL=WARNING` or `DEBUG` to change it), so that stdout
carries only the command's result. A program that imports the package sees no INFO line unless it configures
logging itself."""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["LOG_LEVEL_ENV", "configure_logging"]

LOG_LEVEL_ENV = "CLARITY_LOG_LEVEL"
PACKAGE_LOGGER = "clarity_hf"


class _CommandFormatter(logging.Formatter):
    """`[prog] message`; a warning or an error also names its level."""

    def __init__(self, prog: str):
        super().__init__()
        self.prog = prog

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        level = f"{record.levelname}: " if record.levelno >= logging.WARNING else ""
        return f"[{self.prog}] {level}{message}"


class _CommandHandler(logging.StreamHandler):
    """The one handler a command adds to the package logger (found again, not duplicated, by a second command
    run in the same process)."""

    def emit(self, record: logging.LogRecord) -> None:
        # Always the current stderr (a test's capture replaces sys.stderr between commands).
        self.setStream(sys.stderr)
        super().emit(record)


def configure_logging(prog: str) -> None:
    """Send the package's log lines of level `CLARITY_LOG_LEVEL` (default INFO) and above to stderr as
    `[prog] message`. Called once per command run; a second call replaces the prefix instead of adding a handler.
    Under `accelerate launch` / `torchrun` the processes other than rank 0 log warnings only, as transformers'
    Trainer does for its replicas: one copy of each progress line."""
    name = os.environ.get(LOG_LEVEL_ENV, "INFO").strip().upper()
    level = logging.getLevelName(name)
    if isinstance(level, int) and os.environ.get("RANK", "0") != "0":
        level = max(level, logging.WARNING)
    logger = logging.getLogger(PACKAGE_LOGGER)
    handler = next((h for h in logger.handlers if isinstance(h, _CommandHandler)), None)
    if handler is None:
        handler = _CommandHandler(sys.stderr)
        logger.addHandler(handler)
    handler.setFormatter(_CommandFormatter(prog))
    logger.setLevel(level if isinstance(level, int) else logging.INFO)
    if not isinstance(level, int):
        logger.warning("%s=%s is not a level (DEBUG, INFO, WARNING, ERROR): using INFO", LOG_LEVEL_ENV, name)
