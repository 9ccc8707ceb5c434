# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Training: one Accelerate loop for the ConvNeXtV2 teacher and the distilled CLARiTy student.

    from clarity_hf.training import ClarityTrainingConfig, parse_training_config, train
    result = train(parse_training_config(["--config", "tiny_cpu.yaml", "--output_dir", "runs/tiny"]))
"""

from .arguments import ClarityTrainingConfig, parse_training_config, resolve_config_path
from .checkpointing import find_latest_checkpoint, list_checkpoints
from .trainer import NonFiniteLossError, TrainResult, evaluate, train

__all__ = [
    "ClarityTrainingConfig",
    "parse_training_config",
    "resolve_config_path",
    "train",
    "evaluate",
    "TrainResult",
    "NonFiniteLossError",
    "find_latest_checkpoint",
    "list_checkpoints",
]
