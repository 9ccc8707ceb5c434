# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""AdamW parameter groups (no weight decay on norms, biases, tokens and position embeddings; optional layer-wise
learning-rate decay) and the warm-up + cosine schedule."""

from __future__ import annotations

import re

import torch
from transformers import get_cosine_schedule_with_warmup

NO_DECAY_NAMES = ("class_tokens", "class_position_embeddings", "position_embeddings", "cls_token", "grn.")


def no_weight_decay(name: str, parameter: torch.nn.Parameter) -> bool:
    """Norm weights and biases (1-D), every bias, class tokens, position embeddings and ConvNeXtV2's GRN."""
    return parameter.ndim <= 1 or name.endswith(".bias") or any(key in name for key in NO_DECAY_NAMES)


def layer_id(name: str, num_layers: int) -> int:
    """0 for the embeddings, i + 1 for block / stage i, num_layers + 1 for the heads."""
    if "embeddings" in name:
        return 0
    match = re.search(r"encoder\.(?:layers|stages)\.(\d+)\.", name)
    if match:
        return int(match.group(1)) + 1
    return num_layers + 1


def num_model_layers(model: torch.nn.Module) -> int:
    config = model.config
    if hasattr(config, "num_hidden_layers") and config.model_type == "clarity":
        return config.num_hidden_layers
    return len(getattr(config, "depths", [])) or getattr(config, "num_hidden_layers", 0)


def parameter_groups(
    model: torch.nn.Module, learning_rate: float, weight_decay: float, layer_decay: float | None = None
) -> list[dict]:
    """AdamW groups keyed by (weight decay on/off, layer); each group carries `lr` and `lr_scale`."""
    num_layers = num_model_layers(model)
    groups: dict[tuple[bool, int], dict] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        decay = not no_weight_decay(name, parameter)
        layer = layer_id(name, num_layers) if layer_decay else 0
        scale = layer_decay ** (num_layers + 1 - layer) if layer_decay else 1.0
        group = groups.setdefault(
            (decay, layer),
            {"params": [], "names": [], "weight_decay": weight_decay if decay else 0.0, "lr": learning_rate * scale,
             "lr_scale": scale},
        )
        group["params"].append(parameter)
        group["names"].append(name)
    return [groups[key] for key in sorted(groups)]


def create_optimizer(model: torch.nn.Module, config, learning_rate: float) -> torch.optim.AdamW:
    groups = parameter_groups(model, learning_rate, config.weight_decay, config.layer_decay)
    for group in groups:
        group.pop("names")
    return torch.optim.AdamW(
        groups, lr=learning_rate, betas=(config.adam_beta1, config.adam_beta2), eps=config.adam_epsilon
    )


def create_scheduler(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int):
    return get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=warmup_steps, num_training_steps=total_steps)
