# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Crash-safe file operations shared by the preprocessing cache and the training run folder: an exclusive
(non-blocking) lock on a folder, and writes that are either complete or absent after a crash or SIGKILL
(write a temporary file, fsync it, rename it over the target, fsync the folder).

Confinement: every path the package derives from an input (a label name in a file name, an export manifest entry,
a DICOMDIR reference, a COCO `file_name`) goes through [`confined_path`], which refuses anything that would resolve
outside its base folder, and a label becomes a file name only through [`safe_filename`]."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

try:  # POSIX; elsewhere folders are not locked (with a warning)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

logger = logging.getLogger(__name__)


class FolderInUseError(RuntimeError):
    """Another process holds the folder's lock (a second training run or cache build into the same folder)."""


class PathOutsideFolderError(ValueError):
    """A path taken from an input would lead outside the folder it must stay in (absolute, `..`, a symbolic link
    out of the folder, or not a valid name)."""


def confined_path(base: str | os.PathLike, relative: str | os.PathLike, what: str = "path") -> Path:
    """`base / relative`, refused with [`PathOutsideFolderError`] (naming `what`, the value and `base`) unless it
    stays inside `base`: `relative` must be a non-empty relative path without NUL bytes or `..` components, and
    the path with every symbolic link resolved (of `base` too) must lie inside the resolved `base`. The path need
    not exist; the returned path is `base / relative` (not resolved), so it names what the input named."""
    text = os.fspath(relative)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    base = Path(base)

    def refuse(reason: str) -> PathOutsideFolderError:
        return PathOutsideFolderError(f"{what} {text!r} {reason}; it must stay inside {str(base)!r}")

    if not text.strip() or "\x00" in text:
        raise refuse("is not a valid relative path")
    candidate = Path(text)
    if candidate.is_absolute() or candidate.drive or candidate.anchor:
        raise refuse("is an absolute path")
    if ".." in candidate.parts:
        raise refuse("climbs out with '..'")
    root = base.resolve()
    try:
        resolved = (base / candidate).resolve()
    except (OSError, RuntimeError) as err:  # a symlink loop
        raise refuse(f"cannot be resolved ({err})") from err
    if resolved != root and root not in resolved.parents:
        raise refuse(f"resolves to {str(resolved)!r} (a symbolic link out of the folder)")
    return base / candidate


_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._+-]+")


def safe_filename(label: str, max_length: int = 80) -> str:
    """A file name for a label (a class name from a model's config: any text): runs of characters other than
    letters, digits and `._+-` become `_`, leading dots are dropped (no hidden files, no `..`), and when anything
    was changed a short hash of the label is appended so that two labels never share a file name. The label itself
    is kept unchanged wherever it is data (table columns, npz `labels`)."""
    text = str(label)
    name = _UNSAFE_NAME.sub("_", text).lstrip(".")[:max_length] or "_"
    if name != text:
        digest = hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        name = f"{name}-{digest}"
    return name


def writable_folder(folder: str | os.PathLike | None, name: str = "output_dir") -> Path:
    """`folder`, created if needed, after proving a file can be written in it (before a long job starts); else a
    `ValueError` naming the option `name` and the folder."""
    if folder is None or str(folder) == "":
        raise ValueError(f"{name} is required")
    path = Path(folder).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as err:
        raise ValueError(f"{name} {str(folder)!r} is not a writable folder ({err})") from err
    return path


def fsync_directory(path: str | os.PathLike) -> None:
    """Make a rename or unlink inside `path` durable (a no-op where directories cannot be opened)."""
    try:
        handle = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def fsync_tree(path: str | os.PathLike) -> None:
    """fsync every file and folder under `path` (before a folder is renamed into place)."""
    for folder, _, files in os.walk(path):
        for name in files:
            with open(os.path.join(folder, name), "rb") as handle:
                os.fsync(handle.fileno())
        fsync_directory(folder)


class UnusableFileError(ValueError):
    """A file the package wrote earlier (a lock, a manifest, a table, a checkpoint) cannot be used as it is; the
    message names the file and what to do (usually another folder or `--overwrite`)."""


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in `path`'s folder to write; when the block ends normally the file is fsync'd and
    renamed over `path`, so a crash, a full disk or an exception leaves either the old file or the whole new one at
    `path` and no temporary behind (it is removed on any error, `KeyboardInterrupt` included)."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    # os.open with 0o666 and the umask, as open() would make it (mkstemp's 0o600 would hide the results)
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield temporary
        with open(temporary, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` so that a crash or a full disk leaves either the old file or the new one, never a
    partial one and no temporary file."""
    with atomic_output(path) as temporary, open(temporary, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, value: Any) -> None:
    """JSON with sorted keys, so the same value always gives the same bytes."""
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def exclusive_lock(lock_file: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold an exclusive `flock` on `lock_file` (created) for the block; fail at once if another process holds it.

    The kernel drops the lock when the holder exits, even on SIGKILL, so a stale lock file never blocks a rerun."""
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    if lock_file.is_dir() or (lock_file.exists() and not lock_file.is_file()):
        raise UnusableFileError(
            f"{what} {lock_file.parent}: its lock file {lock_file} is not a regular file (a run only ever makes a "
            "file there); remove it and run again"
        )
    handle = open(lock_file, "a")  # noqa: SIM115 - held open for the lock's lifetime
    try:
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as err:
                raise FolderInUseError(
                    f"{what} {lock_file.parent} is in use by another process (it holds {lock_file}); "
                    "wait for it to finish or use another folder"
                ) from err
            except OSError as err:  # a file system without locks (some network mounts)
                logger.warning(
                    "cannot lock %s (%s): a second process could write into it too", lock_file, err
                )
        else:
            logger.warning("no flock on this platform: %s is not locked against a second process", lock_file)
        yield
    finally:
        handle.close()  # releases the lock


__all__ = [
    "FolderInUseError",
    "PathOutsideFolderError",
    "UnusableFileError",
    "atomic_output",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "confined_path",
    "exclusive_lock",
    "fsync_directory",
    "fsync_tree",
    "safe_filename",
]
