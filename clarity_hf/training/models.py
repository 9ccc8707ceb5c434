# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Building the trained model (CLARiTy student or ConvNeXtV2 teacher) and loading a frozen teacher.

Label sets. `id2label` comes from the run's label names. Starting from a saved model with another label set
(`model_name_or_path` + new `label_names`) uses `ignore_mismatched_sizes=True`: every tensor whose shape depends
on the number of labels is re-initialised: for CLARiTy these are the class tokens and their position embeddings
(one per label: `clarity.embeddings.class_tokens`, `clarity.embeddings.class_position_embeddings`), the per-class
heads (`token_classifier`, `pooled_classifier`) and the SegmentCAM class convolution; the patch embedding, the
encoder, the patch position embeddings, the foreground head and the norms are kept. With the *same number* of
labels nothing is re-initialised: tokens and heads are reused by position, whatever the new names are.
"""

from __future__ import annotations

import os

import torch
from transformers import AutoConfig, AutoModelForImageClassification, ConvNextV2ForImageClassification

from ..baselines.teacher import build_teacher
from ..configuration_clarity import ClarityConfig
from ..convert import convert_dino_checkpoint
from ..modeling_clarity import ClarityForMultiLabelLocalization


def label_maps(label_names: list[str]) -> dict:
    return {
        "num_labels": len(label_names),
        "id2label": dict(enumerate(label_names)),
        "label2id": {name: index for index, name in enumerate(label_names)},
    }


def build_model(config, label_names: list[str]) -> torch.nn.Module:
    """The model to train, from a preset, a saved folder or a DINO checkpoint (see the module docstring)."""
    overrides = dict(config.model_config_overrides or {})
    if config.drop_path_rate is not None:
        overrides["drop_path_rate"] = config.drop_path_rate
    if config.image_size is not None:
        overrides["image_size"] = config.image_size
    if config.model == "clarity" and config.distillation_loss_weight is not None:
        overrides["distillation_loss_weight"] = config.distillation_loss_weight
    labels = label_maps(label_names)

    if config.model == "convnextv2":
        if config.model_name_or_path:
            return ConvNextV2ForImageClassification.from_pretrained(
                config.model_name_or_path,
                ignore_mismatched_sizes=True,
                problem_type="multi_label_classification",
                **labels,
                **overrides,
            )
        return build_teacher(config.model_preset, label_names, **overrides)

    if config.model_name_or_path:
        model = ClarityForMultiLabelLocalization.from_pretrained(
            config.model_name_or_path, ignore_mismatched_sizes=True, **labels, **overrides
        )
        if not os.path.isdir(config.model_name_or_path):
            # a Hub model is the base of this one; a local folder passes on the base it records (if any)
            model.config.base_model_id = config.model_name_or_path
        return model
    model_config = ClarityConfig.from_preset(config.model_preset, **labels, **overrides)
    if config.init_from_dino:
        return convert_dino_checkpoint(config.init_from_dino, model_config, seed=config.seed)
    return ClarityForMultiLabelLocalization(model_config)


def set_pos_weight(model: torch.nn.Module, pos_weight: list[float]) -> None:
    """Give the BCE of a CLARiTy model (or the plain-ViT baseline: any model with a `pos_weight` buffer) per-class
    positive weights; saved in the config, the buffer is not a weight."""
    if not hasattr(model, "pos_weight"):
        raise ValueError(f"{type(model).__name__} has no pos_weight for its loss")
    if len(pos_weight) != model.config.num_labels:
        raise ValueError(f"pos_weight has {len(pos_weight)} entries for {model.config.num_labels} labels")
    model.config.pos_weight = [float(w) for w in pos_weight]
    model.pos_weight = torch.tensor(model.config.pos_weight, dtype=torch.float32, device=model.device)


def classifier_biases(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The bias vectors (C,) of a model's classification head(s): CLARiTy's token and pooled classifiers, the
    `classifier` Linear of the ConvNeXtV2 teacher and of the plain-ViT baseline."""
    heads = [getattr(model, name, None) for name in ("token_classifier", "pooled_classifier", "classifier")]
    biases = [head.bias for head in heads if head is not None and getattr(head, "bias", None) is not None]
    if not biases:
        raise ValueError(f"{type(model).__name__} has no classifier bias to initialise")
    return biases


@torch.no_grad()
def init_classifier_bias(model: torch.nn.Module, logits: list[float]) -> None:
    """Set every classifier bias to the given per-class constant logits (`data.prior_logits`); the weights are
    kept, so the head starts by predicting the label prior and learns the image-dependent part."""
    for bias in classifier_biases(model):
        if bias.shape != (len(logits),):
            raise ValueError(f"{len(logits)} prior logits for a classifier bias of shape {tuple(bias.shape)}")
        bias.copy_(torch.tensor(logits, dtype=bias.dtype, device=bias.device))


def head_is_new(config, label_names: list[str]) -> bool:
    """Whether `build_model(config, label_names)` gives a freshly initialised head: always from a preset or a DINO
    checkpoint; from `model_name_or_path` only when its number of labels differs (see the module docstring)."""
    if not config.model_name_or_path:
        return True
    saved = AutoConfig.from_pretrained(config.model_name_or_path)
    return saved.num_labels != len(label_names)


def load_teacher(path: str, label_names: list[str]) -> torch.nn.Module:
    """A trained teacher folder, checked against the student's labels, frozen and in eval mode."""
    teacher = AutoModelForImageClassification.from_pretrained(path)
    teacher_labels = [teacher.config.id2label[i] for i in range(teacher.config.num_labels)]
    if teacher_labels != list(label_names):
        raise ValueError(
            f"teacher {path} predicts labels {teacher_labels}, the student {list(label_names)}: the distillation "
            "targets would be misaligned"
        )
    return freeze(teacher)


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model
