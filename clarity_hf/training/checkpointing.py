# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Atomic Accelerate checkpoints: `save_state` into `checkpoints/.tmp-checkpoint-N`, then a `training_state.json`
and a `COMPLETE` marker, then a rename to `checkpoints/checkpoint-N`. Only folders with the marker count, so a run
killed while writing never leaves a half-written "latest" checkpoint.

(Accelerate's own `automatic_checkpoint_naming` writes straight into the final folder and `load_state()` takes the
highest-numbered one, complete or not; that is why the naming and the `total_limit` pruning are done here.)
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

COMPLETE_MARKER = "COMPLETE"
STATE_FILE = "training_state.json"
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_root(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = CHECKPOINT_PATTERN.match(path.name)
        if match and (path / COMPLETE_MARKER).is_file():
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def find_latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1] if checkpoints else None


def resolve_resume_path(resume: str, output_dir: str | os.PathLike) -> Path | None:
    """`latest` -> the newest complete checkpoint of `output_dir` (None when there is none); else the folder."""
    if resume == "latest":
        return find_latest_checkpoint(output_dir)
    path = Path(resume)
    if not (path / COMPLETE_MARKER).is_file():
        raise FileNotFoundError(f"{path} is not a complete checkpoint (no {COMPLETE_MARKER} marker)")
    return path


def save_checkpoint(accelerator, output_dir: str | os.PathLike, step: int, state: dict, total_limit: int) -> Path:
    """Write checkpoint `step` atomically on every process (Accelerate saves per-process RNG states) and prune."""
    root = checkpoint_root(output_dir)
    final = root / f"checkpoint-{step}"
    temporary = root / f".tmp-checkpoint-{step}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(temporary, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        with open(temporary / STATE_FILE, "w", encoding="utf-8") as handle:
            json.dump(state, handle, indent=2)
        (temporary / COMPLETE_MARKER).write_text(str(step))
        if final.exists():
            shutil.rmtree(final)
        os.replace(temporary, final)
        prune_checkpoints(output_dir, total_limit)
    accelerator.wait_for_everyone()
    return final


def prune_checkpoints(output_dir: str | os.PathLike, total_limit: int) -> None:
    """Keep the newest `total_limit` complete checkpoints; remove leftovers of interrupted writes."""
    root = checkpoint_root(output_dir)
    for leftover in root.glob(".tmp-checkpoint-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    checkpoints = list_checkpoints(output_dir)
    if total_limit > 0:
        for path in checkpoints[:-total_limit]:
            shutil.rmtree(path, ignore_errors=True)


def read_training_state(checkpoint: Path) -> dict:
    with open(checkpoint / STATE_FILE, encoding="utf-8") as handle:
        return json.load(handle)
