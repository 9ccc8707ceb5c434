# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Shared helpers of the training tests: tiny configs, subprocess environment, weight comparison."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from clarity_hf.training import ClarityTrainingConfig

ROOT = Path(__file__).resolve().parents[1]


def tiny_config(output_dir, **overrides) -> ClarityTrainingConfig:
    values = dict(
        model="clarity",
        model_preset="clarity-tiny",
        image_size=32,
        model_config_overrides={"patch_size": 8, "num_hidden_layers": 2, "num_attention_map_layers": 1},
        distillation_loss_weight=0.0,
        drop_path_rate=0.0,
        dataset="synthetic",
        synthetic_num_train=48,
        synthetic_num_validation=25,
        synthetic_image_size=32,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=8,
        num_train_epochs=1,
        learning_rate=1e-3,
        warmup_steps=2,
        logging_steps=1,
        report_to=["jsonl"],
        disable_tqdm=True,
        output_dir=str(output_dir),
    )
    values.update(overrides)
    return ClarityTrainingConfig(**values)


def subprocess_env(threads: int = 1) -> dict:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        TOKENIZERS_PARALLELISM="false",
    )
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "ACCELERATE_USE_CPU"):
        env.pop(key, None)
    return env


def cli_args(config: dict) -> list[str]:
    args = []
    for key, value in config.items():
        if isinstance(value, (list, tuple)):
            args += [f"--{key}", *map(str, value)]
        elif isinstance(value, dict):
            import json

            args += [f"--{key}", json.dumps(value)]
        else:
            args += [f"--{key}", str(value)]
    return args


def train_command(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "scripts" / "train.py"), *args]


def checkpoint_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(checkpoint) / "model.safetensors"))
