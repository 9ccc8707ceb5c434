# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Which files an archive run reads: files and folders (recursively), DICOMDIR indexes expanded, in sorted order.

Every regular file found is a candidate: PNG, JPEG and DICOM (with or without extension: the reader sniffs the
`DICM` preamble) are decoded, anything else reaches the errors table with the reader's reason, so that nothing in
an archive is skipped silently. Hidden files and folders (names starting with '.') and the run's own output
folder are left out.
"""

from __future__ import annotations

import os
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


def _walk(folder: Path, exclude: set[Path]) -> Iterable[Path]:
    for root, dirs, files in os.walk(folder, followlinks=False):
        root_path = Path(root)
        dirs[:] = sorted(
            d for d in dirs if not d.startswith(".") and (root_path / d).resolve() not in exclude
        )
        for name in sorted(files):
            if not name.startswith("."):
                yield root_path / name


def find_images(
    paths: Iterable[str | os.PathLike], exclude: Iterable[str | os.PathLike] = ()
) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Files and folders -> (candidate files, problems).

    Candidates are absolute paths, each once, sorted by their string (the run's output order). A DICOMDIR is
    replaced by the files it references. Problems are (path, reason) pairs for inputs that cannot even be listed:
    a missing path, an unreadable DICOMDIR, a file a DICOMDIR names that does not exist.
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
        path = Path(given).expanduser()
        if path.is_dir():
            for found in _walk(path, excluded):
                if found.is_file():
                    add(found)
        elif path.is_file():
            add(path)
        else:
            problems[Path(os.path.abspath(path))] = f"file '{path}': no such file or folder"
    for path in candidates:
        problems.pop(path, None)
    return sorted(candidates, key=str), sorted(problems.items(), key=lambda item: str(item[0]))
