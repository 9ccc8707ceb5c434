# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Two CPU processes (`torchrun --nproc_per_node 2`, Accelerate MULTI_CPU over gloo) reach the same weights as one
process with the same global batch, and the evaluation counts each of an odd number of validation images once."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
from accelerate.utils import set_seed
from training_helpers import ROOT, checkpoint_weights, cli_args, subprocess_env

from clarity_hf.configuration_clarity import NIH_PATHOLOGIES
from clarity_hf.training import ClarityTrainingConfig
from clarity_hf.training.models import build_model

STEPS = 4
RUN = {
    "model": "clarity",
    "model_preset": "clarity-tiny",
    "image_size": 32,
    "drop_path_rate": 0.0,  # no randomness in the forward pass
    "distillation_loss_weight": 0.0,
    "dataset": "synthetic",
    "synthetic_num_train": 64,
    "synthetic_num_validation": 25,  # odd: the last evaluation batch is padded on one process
    "synthetic_image_size": 32,
    "augment": "false",
    "per_device_eval_batch_size": 4,
    "max_steps": STEPS,
    "learning_rate": 1e-3,
    "warmup_steps": 1,
    "logging_steps": 1,
    "report_to": ["jsonl"],
    "disable_tqdm": "true",
}
ATOL = 1e-5


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
    env = subprocess_env(threads=1)
    script = str(ROOT / "scripts" / "train.py")
    one = subprocess.Popen(
        [
            sys.executable,
            script,
            *cli_args(RUN),
            "--per_device_train_batch_size",
            "8",
            "--output_dir",
            str(tmp_path / "one"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes",
            "1",
            "--nproc_per_node",
            "2",
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(_free_port()),
            script,
            *cli_args(RUN),
            "--per_device_train_batch_size",
            "4",
            "--output_dir",
            str(tmp_path / "two"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    out_one, _ = one.communicate(timeout=600)
    assert one.returncode == 0, out_one[-3000:]

    result_one = json.loads((tmp_path / "one" / "train_result.json").read_text())
    result_two = json.loads((tmp_path / "two" / "train_result.json").read_text())
    assert result_one["global_step"] == result_two["global_step"] == STEPS
    # Every validation image exactly once, in both runs.
    assert result_one["num_eval_samples"] == result_two["num_eval_samples"] == 25
    weights_one = checkpoint_weights(tmp_path / "one" / "checkpoints" / f"checkpoint-{STEPS}")
    weights_two = checkpoint_weights(tmp_path / "two" / "checkpoints" / f"checkpoint-{STEPS}")
    assert weights_one.keys() == weights_two.keys()
    max_diff = max((weights_one[k] - weights_two[k]).abs().max().item() for k in weights_one)
    print(f"max |w_1proc - w_2proc| after {STEPS} steps: {max_diff:.3e}")
    assert max_diff < ATOL
    # ... and training moved the weights far more than that (the comparison is not vacuous).
    set_seed(42)
    initial = build_model(
        ClarityTrainingConfig(**{**RUN, "augment": False, "disable_tqdm": True, "output_dir": "x"}),
        list(NIH_PATHOLOGIES),
    ).state_dict()
    moved = max((weights_one[k] - initial[k]).abs().max().item() for k in weights_one)
    assert moved > 100 * ATOL, moved
    assert result_one["best_mean_auroc"] == pytest.approx(result_two["best_mean_auroc"], abs=1e-4)
