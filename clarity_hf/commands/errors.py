# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""The error boundary of every `clarity` command: an expected failure (a missing or unwritable path, a full disk, a
bad model folder, an undecodable image, a bad device or repo id) prints ONE line naming the input and the remedy to
stderr and exits 2; anything else keeps its traceback (a bug to report)."""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable, Sequence
from contextlib import contextmanager

__all__ = [
    "EXIT_USAGE",
    "CommandError",
    "check_device",
    "expected_errors",
    "is_expected",
    "one_line",
    "run_with_boundary",
]

EXIT_USAGE = 2


class CommandError(ValueError):
    """A command's own check of its arguments failed; the message names the option and the remedy."""


def expected_errors() -> tuple[type[BaseException], ...]:
    """The exception classes that are a user's input problem, not a bug (imported lazily: the CLI starts fast)."""
    from huggingface_hub.errors import HFValidationError

    from ..files import FolderInUseError, PathOutsideFolderError, UnusableFileError
    from ..hub.export import ExportError
    from ..inference.archive import ArchiveSetupError
    from ..inference.onnx import OnnxExportError
    from ..loading import InvalidModelFolderError
    from ..xray_io import ImageDecodeError

    return (
        OSError,
        CommandError,
        ExportError,
        InvalidModelFolderError,
        ImageDecodeError,
        PathOutsideFolderError,
        FolderInUseError,
        HFValidationError,
        OnnxExportError,
        ArchiveSetupError,
        UnusableFileError,
    )


_OS_REMEDIES = {
    errno.ENOENT: "check the path",
    errno.EACCES: "choose a location you can write to (or fix its permissions)",
    errno.EPERM: "choose a location you can write to (or fix its permissions)",
    errno.EROFS: "choose a location on a writable file system",
    errno.ENOSPC: "free disk space or choose another location",
    errno.EDQUOT: "free disk space (quota) or choose another location",
    errno.EISDIR: "give a file, not a folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EEXIST: "choose a new path or remove the existing one",
}


def is_expected(error: BaseException) -> bool:
    """An input problem: one of `expected_errors()`, or a ValueError the package raised about a file it could not
    read or write (its cause is the OSError)."""
    if isinstance(error, expected_errors()):
        return True
    return isinstance(error, ValueError) and isinstance(error.__cause__, OSError)


@contextmanager
def as_input_errors(**renames: str):
    """Inside: every ValueError is an input problem (for code whose ValueErrors all name a bad input: the data
    builders, the training config's checks). `renames` turns a Python argument in a message into its option
    (`skip_missing=True` -> `--skip-missing`)."""
    try:
        yield
    except ValueError as error:
        if isinstance(error, CommandError):
            raise
        text = str(error)
        for python, option in renames.items():
            text = text.replace(python, option)
        raise CommandError(text) from error


def one_line(error: BaseException) -> str:
    """`error` as one line that names the input (an OSError's file) and, where known, the remedy."""
    if isinstance(error, OSError) and error.errno in _OS_REMEDIES:
        where = error.filename if error.filename is not None else ""
        reason = error.strerror or str(error)
        if error.errno == errno.EEXIST and where and os.path.isfile(where):
            reason = "is a file, where a folder is needed"
        text = f"{where}: {reason}" if where else reason
        text = f"{text} ({_OS_REMEDIES[error.errno]})"
    elif isinstance(error, ValueError) and isinstance(error.__cause__, OSError) and error.__cause__.errno:
        text = f"{error} ({_OS_REMEDIES.get(error.__cause__.errno, 'check the path')})"
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())


def check_device(device: str | None, option: str = "--device") -> str | None:
    """`device` if torch can use it here, else a `CommandError` naming the option and the devices there are."""
    if device is None:
        return None
    import torch

    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise CommandError(f"{option} {device!r} is not a device; use cpu, cuda, cuda:N or mps") from None
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not available.get(parsed.type, False):
        there = ", ".join(name for name, ok in available.items() if ok)
        raise CommandError(
            f"{option} {device!r}: no such device in this torch build/machine; use one of: {there}"
        )
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise CommandError(
            f"{option} {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s); use cuda:0 .. "
            f"cuda:{torch.cuda.device_count() - 1}"
        )
    return device


def run_with_boundary(prog: str, command: Callable[[Sequence[str] | None], int | None], argv=None) -> int:
    """Run `command(argv)`; an expected failure becomes `prog: error: ...` on stderr and exit code 2."""
    try:
        return int(command(argv) or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if not is_expected(error):
            raise  # a bug: the traceback is the report
        print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
        return EXIT_USAGE
