# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Atomic Accelerate checkpoints.

Writing: `save_state` into `checkpoints/.tmp-checkpoint-N`, then `training_state.json`, fsync of every file, a rename
to `checkpoints/checkpoint-N`, and last the `COMPLETE` marker. Pruning: the marker goes first, then the folder. Only
folders with the marker count, so a run killed at any moment (while writing or while pruning) never leaves a
"complete" checkpoint that lacks a file.

Resuming `latest` takes the newest complete checkpoint whose files are readable (`checkpoint_problem`: safetensors
headers that cover their file, zip archives whose CRCs match, JSON that parses); a damaged one is passed over with
a warning naming the file, for the previous complete one.

(Accelerate's own `automatic_checkpoint_naming` writes straight into the final folder and `load_state()` takes the
highest-numbered one, complete or not; that is why the naming and the `total_limit` pruning are done here.)
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import zipfile
from pathlib import Path

from ..files import UnusableFileError, atomic_write_text, fsync_directory, fsync_tree

logger = logging.getLogger(__name__)

COMPLETE_MARKER = "COMPLETE"
STATE_FILE = "training_state.json"
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_root(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / "checkpoints"


def _numbered(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name))]
    return sorted(found)


def list_checkpoints(output_dir: str | os.PathLike, config_hash: str | None = None) -> list[Path]:
    """Complete checkpoints, oldest first; with `config_hash`, only those written by a run of that config."""
    found = [path for _, path in _numbered(output_dir) if (path / COMPLETE_MARKER).is_file()]
    if config_hash is not None:
        found = [
            path for path in found if read_training_state(path).get("config_hash") in (None, config_hash)
        ]
    return found


def find_latest_checkpoint(output_dir: str | os.PathLike, config_hash: str | None = None) -> Path | None:
    checkpoints = list_checkpoints(output_dir, config_hash)
    return checkpoints[-1] if checkpoints else None


def _file_problem(path: Path) -> str | None:
    """Why a checkpoint file cannot be loaded (None: it looks whole). Cheap next to loading it: the safetensors
    header must parse and its tensors end exactly at the end of the file (a truncated or overwritten file fails);
    a zip (torch.save) must pass its CRC checks; JSON must parse."""
    try:
        if path.suffix == ".safetensors":
            with open(path, "rb") as handle:
                size = int.from_bytes(handle.read(8), "little")
                if size <= 0 or 8 + size > path.stat().st_size:
                    return f"its header length {size} does not fit in its {path.stat().st_size} bytes"
                header = json.loads(handle.read(size))
            ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
            if 8 + size + max(ends, default=0) != path.stat().st_size:
                return f"its tensors end at byte {8 + size + max(ends, default=0)}, the file at {path.stat().st_size}"
        elif zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
            if bad is not None:
                return f"its entry {bad} fails its CRC check"
        elif path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
        elif path.stat().st_size == 0:
            return "it is empty"
    except (OSError, ValueError, KeyError, TypeError, IndexError, zipfile.BadZipFile) as err:
        return f"{type(err).__name__}: {err}"
    return None


def checkpoint_problem(checkpoint: str | os.PathLike) -> str | None:
    """None when every file of `checkpoint` looks loadable, else the first damaged file and its problem."""
    for path in sorted(Path(checkpoint).rglob("*")):
        if path.is_file() and path.name != COMPLETE_MARKER:
            problem = _file_problem(path)
            if problem is not None:
                return f"{path} is damaged ({problem})"
    return None


def resolve_resume_path(
    resume: str, output_dir: str | os.PathLike, config_hash: str | None = None
) -> Path | None:
    """`latest` -> the newest complete, undamaged checkpoint of `output_dir` written by a run of `config_hash` (None
    when there is none; a damaged newer one is passed over with a warning naming the file); else the folder, which
    must be a complete, undamaged checkpoint (`UnusableFileError` naming the file otherwise)."""
    if resume == "latest":
        passed_over = []
        for checkpoint in reversed(list_checkpoints(output_dir, config_hash)):
            problem = checkpoint_problem(checkpoint)
            if problem is None:
                if passed_over:
                    logger.warning("resuming from the previous complete checkpoint %s instead", checkpoint)
                return checkpoint
            logger.warning("checkpoint %s cannot be resumed: %s", checkpoint, problem)
            passed_over.append(checkpoint)
        if passed_over:
            raise UnusableFileError(
                f"every complete checkpoint in {checkpoint_root(output_dir)} is damaged (newest: "
                f"{checkpoint_problem(passed_over[0])}); start afresh with --overwrite_output_dir"
            )
        return None
    path = Path(resume)
    if not (path / COMPLETE_MARKER).is_file():
        raise FileNotFoundError(f"{path} is not a complete checkpoint (no {COMPLETE_MARKER} marker)")
    problem = checkpoint_problem(path)
    if problem is not None:
        raise UnusableFileError(f"checkpoint {path} cannot be resumed: {problem}")
    return path


def save_checkpoint(
    accelerator, output_dir: str | os.PathLike, step: int, state: dict, total_limit: int
) -> Path:
    """Write checkpoint `step` atomically on every process (Accelerate saves per-process RNG states) and prune."""
    root = checkpoint_root(output_dir)
    final = root / f"checkpoint-{step}"
    temporary = root / f".tmp-checkpoint-{step}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir()  # before any process writes its RNG state into it
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        with open(temporary / STATE_FILE, "w", encoding="utf-8") as handle:
            json.dump(state, handle, indent=2)
        fsync_tree(temporary)
        if final.exists():
            remove_checkpoint(final)
        os.replace(temporary, final)
        fsync_directory(root)
        atomic_write_text(final / COMPLETE_MARKER, str(step))
        prune_checkpoints(output_dir, total_limit)
    accelerator.wait_for_everyone()
    return final


def remove_checkpoint(path: Path) -> None:
    """Unmark, then delete: a kill in the middle leaves an incomplete folder, never a complete one without files."""
    (path / COMPLETE_MARKER).unlink(missing_ok=True)
    fsync_directory(path)
    shutil.rmtree(path, ignore_errors=True)


def prune_checkpoints(output_dir: str | os.PathLike, total_limit: int) -> None:
    """Keep the newest `total_limit` complete checkpoints; remove leftovers of interrupted writes and prunes."""
    root = checkpoint_root(output_dir)
    for leftover in root.glob(".tmp-checkpoint-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    for _, path in _numbered(output_dir):
        if not (path / COMPLETE_MARKER).is_file():
            shutil.rmtree(path, ignore_errors=True)
    if total_limit > 0:
        for path in list_checkpoints(output_dir)[:-total_limit]:
            remove_checkpoint(path)


def read_training_state(checkpoint: Path) -> dict:
    with open(Path(checkpoint) / STATE_FILE, encoding="utf-8") as handle:
        return json.load(handle)
