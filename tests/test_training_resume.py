# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""A run SIGKILLed after a checkpoint and resumed with `--resume_from_checkpoint latest` ends bit-identical to an
uninterrupted run of the same length (augmentation and drop-path on, so data order and RNG states both matter)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
import torch
from training_helpers import checkpoint_weights, cli_args, subprocess_env, train_command

from clarity_hf.training.checkpointing import list_checkpoints
from clarity_hf.training.run_folder import RUN_FILE
from clarity_hf.training.trackers import read_jsonl

TOTAL_STEPS = 15
RUN = {
    "model": "clarity",
    "model_preset": "clarity-tiny",
    "image_size": 64,
    "drop_path_rate": 0.1,
    "distillation_loss_weight": 0.0,
    "dataset": "synthetic",
    "synthetic_num_train": 64,
    "synthetic_num_validation": 17,
    "synthetic_image_size": 64,
    "augment": "true",
    "per_device_train_batch_size": 8,
    "per_device_eval_batch_size": 8,
    "max_steps": TOTAL_STEPS,  # 8 batches per epoch: the resumed run crosses an epoch boundary
    "checkpointing_steps": 3,
    "save_total_limit": 2,
    "warmup_steps": 3,
    "logging_steps": 1,
    "report_to": ["jsonl"],
    "disable_tqdm": "true",
}


def _optimizer_tensors(checkpoint) -> list[torch.Tensor]:
    state = torch.load(checkpoint / "optimizer.bin", weights_only=False)["state"]
    return [
        value for key in sorted(state) for _, value in sorted(state[key].items()) if torch.is_tensor(value)
    ]


@pytest.mark.slow
def test_sigkill_and_resume_is_bit_identical(tmp_path):
    env = subprocess_env(threads=1)
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    reference = subprocess.Popen(
        train_command(*cli_args(RUN), "--output_dir", str(reference_dir)),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    victim = subprocess.Popen(
        train_command(*cli_args(RUN), "--output_dir", str(killed_dir)),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while not list_checkpoints(killed_dir):
        assert victim.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(victim.pid, signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL
    survivors = list_checkpoints(killed_dir)
    assert survivors and all(int(p.name.split("-")[1]) < TOTAL_STEPS for p in survivors), survivors
    run_id = json.loads((killed_dir / RUN_FILE).read_text())["run_id"]

    resumed = subprocess.run(
        train_command(*cli_args(RUN), "--output_dir", str(killed_dir), "--resume_from_checkpoint", "latest"),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {survivors[-1]}" in resumed.stdout + resumed.stderr
    _, reference_err = reference.communicate(timeout=600)
    assert reference.returncode == 0, reference_err.decode()[-3000:]

    final_a = reference_dir / "checkpoints" / f"checkpoint-{TOTAL_STEPS}"
    final_b = killed_dir / "checkpoints" / f"checkpoint-{TOTAL_STEPS}"
    weights_a, weights_b = checkpoint_weights(final_a), checkpoint_weights(final_b)
    assert weights_a.keys() == weights_b.keys()
    for key in weights_a:
        assert torch.equal(weights_a[key], weights_b[key]), key
    for tensor_a, tensor_b in zip(_optimizer_tensors(final_a), _optimizer_tensors(final_b), strict=True):
        assert torch.equal(tensor_a, tensor_b)
    # The resumed run is the same run, and its metrics log holds every step once, as the uninterrupted run's does.
    assert json.loads((killed_dir / RUN_FILE).read_text())["run_id"] == run_id
    for folder in (reference_dir, killed_dir):
        steps = [r["step"] for r in read_jsonl(folder / "logs" / "metrics.jsonl") if "train/loss" in r]
        assert steps == list(range(1, TOTAL_STEPS + 1)), (folder.name, steps)
    # Only the last `save_total_limit` checkpoints are kept.
    assert [p.name for p in list_checkpoints(killed_dir)][-1] == f"checkpoint-{TOTAL_STEPS}"
    assert len(list_checkpoints(killed_dir)) <= 2
