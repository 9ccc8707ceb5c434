# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""A training output_dir belongs to one run: an exclusive lock, a run id and config hash, refusal of another run's
folder, `resume latest` of the same config only, atomic checkpoint rotation (a SIGKILL while pruning never leaves a
complete checkpoint without weights) and options refused before any data or model is built."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from training_helpers import cli_args, subprocess_env, tiny_config, train_command

from clarity_hf.files import FolderInUseError, exclusive_lock
from clarity_hf.training import ClarityTrainingConfig, train
from clarity_hf.training import trainer as trainer_module
from clarity_hf.training.checkpointing import (
    COMPLETE_MARKER,
    list_checkpoints,
    read_training_state,
    remove_checkpoint,
)
from clarity_hf.training.run_folder import LOCK_FILE, RUN_FILE, config_hash
from clarity_hf.training.trackers import read_jsonl


# ------------------------------------------------------------------------------------------------ early validation
@pytest.mark.parametrize(
    "option, value",
    [
        ("learning_rate", -1e-3),
        ("learning_rate", 0.0),
        ("learning_rate", float("nan")),
        ("per_device_train_batch_size", 0),
        ("per_device_eval_batch_size", -2),
        ("max_steps", 0),
        ("num_train_epochs", 0),
        ("gradient_accumulation_steps", 0),
        ("logging_steps", 0),
        ("save_total_limit", -1),
        ("warmup_steps", -5),
        ("image_std", [0.2, 0.0, 0.2]),
        ("image_size", -32),
        ("max_train_samples", 0),
    ],
)
def test_impossible_options_are_refused_naming_them(tmp_path, option, value):
    with pytest.raises(ValueError, match=option):
        tiny_config(tmp_path, **{option: value})


def test_unwritable_output_dir_is_refused_before_data_and_model(tmp_path, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("data or model built before output_dir was checked")

    monkeypatch.setattr(trainer_module, "load_datasets", never)
    monkeypatch.setattr(trainer_module, "build_model", never)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ValueError, match="output_dir .*a-file/run.* is not a writable folder"):
        train(tiny_config(blocker / "run"))
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "read-only"
        locked.mkdir(mode=0o500)
        with pytest.raises(ValueError, match="not a writable folder"):
            train(tiny_config(locked))


# ------------------------------------------------------------------------------------------------ the run folder
def test_a_folder_holds_one_run(tmp_path, tiny_data):
    first = train(tiny_config(tmp_path, max_steps=2, save_total_limit=1), datasets=tiny_data)
    run = json.loads((tmp_path / RUN_FILE).read_text())
    config = tiny_config(tmp_path, max_steps=2, learning_rate=2e-3)
    assert run["config_hash"] == config_hash(tiny_config(tmp_path, max_steps=2)) != config_hash(config)
    assert read_training_state(first.last_checkpoint)["run_id"] == run["run_id"]

    # a new run refuses the folder; `resume latest` refuses a run of another config and names what differs
    with pytest.raises(ValueError, match=f"holds checkpoints or a best model of run {run['run_id']}"):
        train(config, datasets=tiny_data)
    with pytest.raises(ValueError, match=r"another config \(learning_rate: 0.001 -> 0.002\)"):
        train(tiny_config(tmp_path, max_steps=2, learning_rate=2e-3, resume_from_checkpoint="latest"))
    # a second run while the folder is locked fails at once
    with exclusive_lock(tmp_path / LOCK_FILE, "test"), pytest.raises(FolderInUseError, match="in use"):
        train(config, datasets=tiny_data)

    # overwrite_output_dir replaces the old run: only the new run's checkpoints remain, under a new run id
    second = train(
        tiny_config(tmp_path, max_steps=2, learning_rate=2e-3, overwrite_output_dir=True), datasets=tiny_data
    )
    new_run = json.loads((tmp_path / RUN_FILE).read_text())
    assert new_run["run_id"] != run["run_id"] and new_run["config_hash"] == config_hash(config)
    assert [read_training_state(p)["run_id"] for p in list_checkpoints(tmp_path)] == [new_run["run_id"]]
    steps = [r["step"] for r in read_jsonl(tmp_path / "logs" / "metrics.jsonl") if "train/loss" in r]
    assert steps == [1, 2] and second.global_step == 2
    # a resume of the same config keeps the run id (nothing left to do: max_steps reached)
    again = train(tiny_config(tmp_path, max_steps=2, learning_rate=2e-3, resume_from_checkpoint="latest"))
    assert json.loads((tmp_path / RUN_FILE).read_text())["run_id"] == new_run["run_id"]
    assert again.global_step == 2
    assert [r["step"] for r in read_jsonl(tmp_path / "logs" / "metrics.jsonl") if "train/loss" in r] == [1, 2]


PRUNE = textwrap.dedent(
    """
    import os, shutil, sys, time
    from clarity_hf.training import checkpointing

    root, marker = sys.argv[1], sys.argv[2]
    real_rmtree = shutil.rmtree

    def slow_rmtree(path, *args, **kwargs):
        # delete the weights, then stop as a kill would stop a slow delete half-way
        weights = os.path.join(path, "model.safetensors")
        if os.path.exists(weights):
            os.remove(weights)
            open(marker, "w").close()
            time.sleep(600)
        real_rmtree(path, *args, **kwargs)

    checkpointing.shutil.rmtree = slow_rmtree
    checkpointing.prune_checkpoints(root, total_limit=1)
    """
)


def test_sigkill_while_pruning_never_leaves_a_complete_checkpoint_without_weights(tmp_path):
    for step in (2, 4):
        folder = tmp_path / "checkpoints" / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"weights")
        (folder / "training_state.json").write_text("{}")
        (folder / COMPLETE_MARKER).write_text(str(step))
    script, marker = tmp_path / "prune.py", tmp_path / "deleting"
    script.write_text(PRUNE)
    process = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path), str(marker)], env=subprocess_env()
    )
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert process.poll() is None and time.monotonic() < deadline, "pruning never started"
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    complete = list_checkpoints(tmp_path)
    assert [p.name for p in complete] == ["checkpoint-4"]
    assert all((p / "model.safetensors").is_file() for p in complete)


# ------------------------------------------------------------------------------------------------ real processes
RUN = {
    "model": "clarity",
    "model_preset": "clarity-tiny",
    "image_size": 32,
    "model_config_overrides": {"patch_size": 8, "num_hidden_layers": 2, "num_attention_map_layers": 1},
    "distillation_loss_weight": 0.0,
    "dataset": "synthetic",
    "synthetic_num_train": 32,
    "synthetic_num_validation": 9,
    "synthetic_image_size": 32,
    "per_device_train_batch_size": 8,
    "max_steps": 400,  # far more than the test lets it run
    "checkpointing_steps": 2,
    "logging_steps": 1,
    "report_to": ["jsonl"],
    "disable_tqdm": "true",
}


@pytest.mark.slow
def test_a_concurrent_run_is_refused_at_once(tmp_path):
    env = subprocess_env(threads=1)
    output = tmp_path / "run"
    args = [*cli_args(RUN), "--output_dir", str(output)]
    victim = subprocess.Popen(
        train_command(*args), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 300
        while not list_checkpoints(output):
            assert victim.poll() is None, "the run ended before its first checkpoint"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        run_id = json.loads((output / RUN_FILE).read_text())["run_id"]
        intruder = subprocess.run(train_command(*args), env=env, capture_output=True, text=True, timeout=300)
        assert victim.poll() is None, "the first run must still be running for this check"
        assert intruder.returncode != 0
        assert "is in use by another process" in intruder.stderr, intruder.stderr[-2000:]
    finally:
        victim.kill()
        victim.wait()
    # the killed run's checkpoints are its own; the refusals of a stale folder are checked in-process above
    assert all(read_training_state(p)["run_id"] == run_id for p in list_checkpoints(output))


def test_config_hash_ignores_only_bookkeeping_options(tmp_path):
    base = tiny_config(tmp_path)
    same = tiny_config(
        tmp_path / "elsewhere",
        logging_steps=5,
        disable_tqdm=False,
        resume_from_checkpoint="latest",
        decoded_memory_mb=0,  # where the pixels come from, not what they are
    )
    assert config_hash(base) == config_hash(same)
    assert config_hash(base) != config_hash(tiny_config(tmp_path, seed=1))
    assert isinstance(ClarityTrainingConfig(output_dir="x").overwrite_output_dir, bool)


def test_resume_does_not_repeat_logged_steps(tmp_path, tiny_data):
    """Steps 3-4 were logged but their checkpoint is lost (as after a SIGKILL): the resumed run logs them once."""
    config = dict(max_steps=4, checkpointing_steps=2, eval_every_epoch=False)
    train(tiny_config(tmp_path, **config), datasets=tiny_data)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-4"]
    remove_checkpoint(tmp_path / "checkpoints" / "checkpoint-4")
    result = train(tiny_config(tmp_path, resume_from_checkpoint="latest", **config), datasets=tiny_data)
    assert result.global_step == 4
    steps = [r["step"] for r in read_jsonl(tmp_path / "logs" / "metrics.jsonl") if "train/loss" in r]
    assert steps == [1, 2, 3, 4]
