# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Which files an archive run reads: files and folders (recursively), DICOMDIR indexes expanded, in sorted order.

Every regular file found (also through a symbolic link) is a candidate: PNG, JPEG and DICOM (with or without
extension: the reader sniffs the `DICM` preamble) are decoded, anything else reaches the errors table with the
reader's reason, so that nothing in an archive is skipped silently. An entry that is not read at all gets a problem
with its reason too: a dangling symbolic link, a symbolic link loop, a FIFO, socket or device (never opened: a FIFO
would block the run), a folder that cannot be listed, a symbolic link to a folder (not followed, so a tree cannot
loop or lead outside itself; give the folder itself as a PATH to read it). Hidden files and folders (names
starting with '.') and the run's own output folder are left out. Paths are `str` as `os.fsdecode` gives them (a
non-UTF-8 name holds surrogate escapes).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from ..files import PathOutsideFolderError, confined_path

__all__ = ["find_images", "is_dicomdir", "dicomdir_references"]


def is_dicomdir(path: Path) -> bool:
    """A DICOM media directory index: by its standard file name, DICOMDIR (case-insensitive)."""
    return path.name.upper() == "DICOMDIR"


def dicomdir_references(path: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The image files a DICOMDIR lists (its records' Referenced File IDs, relative to its folder), and the
    (reference, reason) pairs of those refused because they lead outside that folder (an absolute path, `..` or a
    symbolic link out: see `clarity_hf.files.confined_path`).

    Raises `ValueError` naming the file when it cannot be read as a DICOMDIR."""
    import pydicom

    try:
        ds = pydicom.dcmread(str(path), force=True, stop_before_pixels=True)
        records = ds.DirectoryRecordSequence
    except Exception as err:  # pydicom raises many types for damaged files
        raise ValueError(f"file '{path}': is not a readable DICOMDIR ({type(err).__name__}: {err})") from err
    found, refused = [], []
    for record in records:
        file_id = record.get("ReferencedFileID")
        if file_id is None:
            continue
        parts = [file_id] if isinstance(file_id, str) else list(file_id)
        relative = "/".join(str(part).strip() for part in parts)
        try:
            found.append(confined_path(path.parent, relative, f"file listed in DICOMDIR '{path}'"))
        except PathOutsideFolderError as err:
            refused.append((Path(os.path.normpath(os.path.join(path.parent, relative))), str(err)))
    return found, refused


def _not_a_file(path: Path) -> str | None:
    """None for a regular file (through symbolic links); else why `path` is not read."""
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        if err.errno == errno.ENOENT and os.path.islink(path):
            return f"'{path}': is a symbolic link to '{os.readlink(path)}', which does not exist"
        if err.errno == errno.ENOENT:
            return f"'{path}': no such file or folder"
        if err.errno == errno.ELOOP:
            return f"'{path}': is a symbolic link loop ({err.strerror})"
        return f"'{path}': cannot be read ({err.strerror or err})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return (
            f"'{path}': is a symbolic link to a folder, which is not followed (give the folder itself as a PATH to "
            "read it)"
        )
    kind = {
        stat.S_IFIFO: "a FIFO (named pipe)",
        stat.S_IFSOCK: "a socket",
        stat.S_IFCHR: "a character device",
        stat.S_IFBLK: "a block device",
    }.get(stat.S_IFMT(mode), "not a regular file")
    return f"'{path}': is {kind}, not an image file; it is not opened"


def _walk(folder: Path, exclude: set[Path]) -> Iterable[tuple[Path, str | None]]:
    """(path, None) for every file under `folder` to read, (path, reason) for every entry that is not read."""
    unlisted: list[OSError] = []
    for root, dirs, files in os.walk(folder, followlinks=False, onerror=unlisted.append):
        for err in unlisted:
            yield Path(err.filename), f"'{err.filename}': folder cannot be listed ({err.strerror or err})"
        unlisted.clear()
        root_path = Path(root)
        kept = []
        for name in sorted(dirs):
            path = root_path / name
            if name.startswith(".") or path.resolve() in exclude:
                continue
            if path.is_symlink():
                yield path, _not_a_file(path)
            else:
                kept.append(name)
        dirs[:] = kept
        for name in sorted(files):
            if not name.startswith("."):
                path = root_path / name
                yield path, _not_a_file(path)
    for err in unlisted:  # the last folder os.walk tried
        yield Path(err.filename), f"'{err.filename}': folder cannot be listed ({err.strerror or err})"


def find_images(
    paths: Iterable[str | os.PathLike], exclude: Iterable[str | os.PathLike] = ()
) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Files and folders -> (candidate files, problems).

    Candidates are absolute paths, each once, sorted by their string (the run's output order). A DICOMDIR is
    replaced by the files it references. Problems are (path, reason) pairs for inputs that are not read: a missing
    path, an unreadable DICOMDIR, a file a DICOMDIR names that does not exist, and the entries `_not_a_file` and
    `_walk` describe (dangling or looping links, FIFOs, folders that cannot be listed).
    """
    excluded = {Path(p).resolve() for p in exclude}
    candidates: set[Path] = set()
    problems: dict[Path, str] = {}

    def add(path: Path) -> None:
        path = Path(os.path.abspath(path))
        if is_dicomdir(path):
            try:
                references, refused = dicomdir_references(path)
            except ValueError as err:
                problems[path] = str(err)
                return
            problems.update(refused)
            for reference in references:
                if reference.is_file():
                    candidates.add(Path(os.path.abspath(reference)))
                else:
                    problems[Path(os.path.abspath(reference))] = (
                        f"file '{reference}': listed in DICOMDIR '{path}' but missing"
                    )
            return
        candidates.add(path)

    for given in paths:
        path = Path(os.fsdecode(given)).expanduser()
        if path.is_dir():
            for found, reason in _walk(path, excluded):
                if reason is None:
                    add(found)
                else:
                    problems[Path(os.path.abspath(found))] = reason
        elif (reason := _not_a_file(path)) is None:
            add(path)
        else:
            problems[Path(os.path.abspath(path))] = reason
    for path in candidates:
        problems.pop(path, None)
    return sorted(candidates, key=str), sorted(problems.items(), key=lambda item: str(item[0]))
