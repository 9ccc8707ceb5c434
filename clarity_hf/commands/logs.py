# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Logging of the `clarity` commands. The package's modules log through `logging.getLogger(__name__)` and never
print; only a command's entry point configures logging, for the time the command runs: the `clarity_hf`
loggers' lines go to stderr as `[clarity demo] message` (INFO by default; `CLARITY_LOG_LEVEL=WARNING` or `DEBUG`
changes it), so that stdout carries only the command's result. A program that imports the package sees no INFO
line unless it configures logging itself."""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager

__all__ = ["LOG_LEVEL_ENV", "command_logging"]

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
    """The handler a command adds to the package logger for as long as it runs."""


@contextmanager
def command_logging(prog: str):
    """While the block runs, send the package's log lines of level `CLARITY_LOG_LEVEL` (default INFO) and above
    to stderr as `[prog] message`; afterwards the package logger is as it was, so a program that runs a command
    in-process (`main([...])`) keeps its own logging. Under `accelerate launch` / `torchrun` the processes other
    than rank 0 log warnings only, as transformers' Trainer does for its replicas: one copy of each progress
    line. A command run inside another one logs through the outer command's handler."""
    logger = logging.getLogger(PACKAGE_LOGGER)
    if any(isinstance(h, _CommandHandler) for h in logger.handlers):
        yield
        return
    name = os.environ.get(LOG_LEVEL_ENV, "INFO").strip().upper()
    level = logging.getLevelName(name)
    known = isinstance(level, int)
    if known and os.environ.get("RANK", "0") != "0":
        level = max(level, logging.WARNING)
    handler = _CommandHandler(sys.stderr)
    handler.setFormatter(_CommandFormatter(prog))
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(level if known else logging.INFO)
    try:
        if not known:
            logger.warning(
                "%s=%s is not a level (DEBUG, INFO, WARNING, ERROR): using INFO", LOG_LEVEL_ENV, name
            )
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
