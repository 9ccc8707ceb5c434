# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""A training run's folder and state: the exclusive lock, the run id, which checkpoint to resume, the metrics log.

`output_dir` belongs to one run at a time and to one run config:

* `run.lock`: an exclusive `flock` held for the whole run; a second run into the same folder fails at once.
* `run.json`: the run id and the hash of the options that determine what the run computes (`config_hash`). Every
  checkpoint records both. A new run refuses a folder that holds another run's checkpoints or best model, unless
  `overwrite_output_dir` (the previous run's outputs are deleted) or `resume_from_checkpoint`; `latest` resumes
  only a run of the same config (the refusal names the options that differ).
* `logs/metrics.jsonl`: cut back to the resumed checkpoint's step, so a resumed run never repeats a step.

`TrainState` is what a checkpoint's `training_state.json` holds besides Accelerate's states: step, epoch, batches
consumed in it, the best validation AUROC so far, the history and the skipped-image counts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import __version__
from ..files import atomic_write_json, atomic_write_text, exclusive_lock, writable_folder
from .checkpointing import checkpoint_root, list_checkpoints, read_training_state, resolve_resume_path

logger = logging.getLogger(__name__)

RUN_FILE = "run.json"
LOCK_FILE = "run.lock"
METRICS_FILE = Path("logs") / "metrics.jsonl"
BEST_MODEL = "best_model"
# What a run writes into output_dir (and `overwrite_output_dir` deletes); nothing else there is touched.
RUN_OUTPUTS = (
    "checkpoints",
    BEST_MODEL,
    ".tmp-best_model",
    ".old-best_model",
    "logs",
    "train_result.json",
    RUN_FILE,
)
# Options that change how a run is watched or stored, not what it computes: a resumed run may change them.
NON_RUN_OPTIONS = frozenset(
    {
        "output_dir",
        "overwrite_output_dir",
        "resume_from_checkpoint",
        "disable_tqdm",
        "dataloader_num_workers",
        "decoded_memory_mb",
        "report_to",
        "tracker_project_name",
        "logging_steps",
        "save_total_limit",
    }
)


def run_options(config) -> dict:
    return {key: value for key, value in config.to_dict().items() if key not in NON_RUN_OPTIONS}


def config_hash(config) -> str:
    text = json.dumps(run_options(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def check_output_dir(output_dir: str | os.PathLike | None) -> Path:
    """`output_dir` exists (created) and takes a new file, checked before any data, model or image is touched."""
    return writable_folder(output_dir, "output_dir")


@dataclass
class TrainState:
    global_step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    best_mean_auroc: float | None = None
    best_per_class_auroc: dict = field(default_factory=dict)
    best_epoch: int | None = None
    history: list = field(default_factory=list)
    skipped: dict = field(default_factory=dict)
    skipped_files: list = field(default_factory=list)
    run_id: str | None = None
    config_hash: str | None = None

    def to_checkpoint(self) -> dict:
        state = asdict(self)
        state["skipped_files"] = self.skipped_files[:100]
        return state

    @classmethod
    def from_checkpoint(cls, checkpoint: Path) -> TrainState:
        values = read_training_state(checkpoint)
        known = {key: value for key, value in values.items() if key in cls.__dataclass_fields__}
        return cls(**known)


def _differences(previous: dict, current: dict) -> list[str]:
    return [
        f"{key}: {previous.get(key)!r} -> {current.get(key)!r}"
        for key in sorted(set(previous) | set(current))
        if previous.get(key) != current.get(key)
    ]


class RunFolder:
    """The main process's hold on `output_dir` for one run (see the module docstring). Use as a context manager;
    every process calls `resume_checkpoint()`; the main process alone writes."""

    def __init__(self, config, is_main_process: bool = True):
        self.config = config
        self.path = Path(config.output_dir)
        self.is_main = is_main_process
        self.config_hash = config_hash(config)
        self.run_id: str | None = None
        self._stack = contextlib.ExitStack()

    # ------------------------------------------------------------------------------------------- lock and run id
    def __enter__(self) -> RunFolder:
        if self.is_main:
            self._stack.enter_context(exclusive_lock(self.path / LOCK_FILE, "training output_dir"))
            try:
                self._claim()
            except BaseException:
                self._stack.close()
                raise
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def _previous_run(self) -> dict | None:
        path = self.path / RUN_FILE
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{path} is damaged ({err}); pass --overwrite_output_dir to start afresh"
            ) from err

    def _has_outputs(self) -> bool:
        root = checkpoint_root(self.path)
        return (root.is_dir() and any(root.iterdir())) or (self.path / BEST_MODEL).exists()

    def _claim(self) -> None:
        config, previous = self.config, self._previous_run()
        if getattr(config, "overwrite_output_dir", False):
            if self._has_outputs() or previous:
                logger.warning("overwrite_output_dir: deleting the previous run's outputs in %s", self.path)
            for name in RUN_OUTPUTS:
                target = self.path / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
            previous = None
        same_config = previous is not None and previous.get("config_hash") == self.config_hash
        if config.resume_from_checkpoint == "latest" and previous is not None and not same_config:
            changed = _differences(previous.get("config", {}), run_options(config))
            raise ValueError(
                f"resume_from_checkpoint=latest: {self.path} holds run {previous.get('run_id')} of another config "
                f"({'; '.join(changed) or 'config hash differs'}). Resume with the same options, give a "
                "checkpoint folder explicitly, pass --overwrite_output_dir, or use another output_dir"
            )
        if not config.resume_from_checkpoint and self._has_outputs():
            who = f"run {previous.get('run_id')}" if previous else "an earlier run"
            raise ValueError(
                f"output_dir {self.path} holds checkpoints or a best model of {who}; pass "
                "--resume_from_checkpoint latest to continue it, --overwrite_output_dir to replace it, or use "
                "another output_dir"
            )
        self.run_id = previous["run_id"] if same_config else uuid.uuid4().hex[:12]
        atomic_write_json(
            self.path / RUN_FILE,
            {
                "run_id": self.run_id,
                "config_hash": self.config_hash,
                "config": run_options(config),
                "clarity_hf_version": __version__,
            },
        )

    # ------------------------------------------------------------------------------------------- resume
    def resume_checkpoint(self) -> Path | None:
        """The checkpoint to resume (None: start afresh). `latest` takes the newest complete checkpoint of this
        run config; an explicit folder of another config is accepted with a warning."""
        resume = self.config.resume_from_checkpoint
        if not resume:
            return None
        checkpoint = resolve_resume_path(resume, self.path, self.config_hash if resume == "latest" else None)
        if checkpoint is None:
            if list_checkpoints(self.path):
                raise ValueError(
                    f"resume_from_checkpoint=latest: the checkpoints in {checkpoint_root(self.path)} were written "
                    "by a run of another config; pass --overwrite_output_dir or use another output_dir"
                )
            logger.warning(
                "resume_from_checkpoint=latest but %s has no complete checkpoint: starting afresh", self.path
            )
            return None
        found = read_training_state(checkpoint).get("config_hash")
        if found not in (None, self.config_hash):
            logger.warning("resuming %s, written by a run of another config (%s)", checkpoint, found)
        return checkpoint

    def new_state(self) -> TrainState:
        return TrainState(run_id=self.run_id, config_hash=self.config_hash)

    # ------------------------------------------------------------------------------------------- metrics log
    def cut_metrics(self, step: int) -> None:
        """Drop the metrics records after `step` (the resumed checkpoint's; 0 for a fresh start), so that the
        continued run logs each step once."""
        if not self.is_main:
            return
        path = self.path / METRICS_FILE
        if not path.is_file():
            return
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
            try:
                record_step = json.loads(line).get("step")
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
            if step > 0 and (record_step is None or record_step <= step):
                kept.append(line)
        atomic_write_text(path, "".join(kept))


__all__ = ["RunFolder", "TrainState", "check_output_dir", "config_hash", "run_options"]
