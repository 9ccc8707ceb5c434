# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""The ConvNeXtV2 teacher (built once here for training, evaluation and benchmarks) and its two localization
baselines.

- [`build_teacher`]: a randomly initialised `ConvNextV2ForImageClassification` from a preset of
  [`CONVNEXTV2_PRESETS`] (ConvNeXtV2-Base is the paper's teacher) for multi-label classification.
- **Grad-CAM of the teacher** ([`teacher_gradcam`]): [`GradCAM`] on one encoder stage, the last by default (one map
  per class, ReLU, min-max normalised). [`teacher_gradcam_stages`] gives the maps of every stage from one forward pass
  and one backward pass per class: ConvNeXt's stages halve the grid one after the other (image side / 4, / 8, / 16,
  / 32), so the evaluation can pick the stage whose grid and maps localise best instead of being held to the coarsest
  one (`clarity_hf.evaluation.selection`).
- **CAM of the teacher** ([`teacher_cam`], Zhou et al. 2016): the classifier weights applied to the last-stage
  feature map *before* pooling. transformers' ConvNeXtV2 head is `Linear(LayerNorm(mean_hw F))`; the LayerNorm is an
  affine map of the pooled vector, so the exact per-location decomposition of the logit is

      CAM_c(h, w) = sum_k W[c, k] * gamma[k] * (F[k, h, w] - mean_k F[:, h, w])

  (logit_c = mean_hw CAM_c / sigma + const, sigma the pooled vector's std). The map is min-max normalised per
  (image, class) to [0, 1] (no ReLU, as in CAM). CAM exists on the last stage only: the classifier's weights are
  defined on that stage's channels.

Heatmaps are (B, C, h, w) float32 in [0, 1] at the model's own low resolution.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import ConvNextV2Config, ConvNextV2ForImageClassification
from transformers.utils import ModelOutput

from ..configuration_clarity import NIH_PATHOLOGIES
from ..heatmaps import normalize_heatmaps
from .gradcam import GradCAM

__all__ = [
    "BaselineOutput",
    "CONVNEXTV2_PRESETS",
    "build_teacher",
    "teacher_cam",
    "teacher_gradcam",
    "teacher_gradcam_stages",
    "teacher_stages",
]

CONVNEXTV2_PRESETS = {
    # Paper configuration of the teacher (ConvNeXtV2-Base).
    "convnextv2-base": {"depths": [3, 3, 27, 3], "hidden_sizes": [128, 256, 512, 1024]},
    "convnextv2-tiny": {"depths": [3, 3, 9, 3], "hidden_sizes": [96, 192, 384, 768]},
    "convnextv2-nano": {"depths": [2, 2, 8, 2], "hidden_sizes": [80, 160, 320, 640]},
    # Tests and CPU demos only.
    "convnextv2-test": {"depths": [1, 1, 1, 1], "hidden_sizes": [16, 32, 64, 128]},
}


def build_teacher(
    preset: str = "convnextv2-base", label_names: Sequence[str] = NIH_PATHOLOGIES, **overrides: Any
) -> ConvNextV2ForImageClassification:
    """A randomly initialised multi-label ConvNeXtV2 classifier of `preset` over `label_names`; `overrides` are
    `ConvNextV2Config` fields (e.g. `image_size`, `drop_path_rate`)."""
    if preset not in CONVNEXTV2_PRESETS:
        raise ValueError(f"unknown ConvNeXtV2 preset {preset!r}; known: {sorted(CONVNEXTV2_PRESETS)}")
    label_names = list(label_names)
    config = ConvNextV2Config(
        **{**CONVNEXTV2_PRESETS[preset], **overrides},
        problem_type="multi_label_classification",
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id={name: index for index, name in enumerate(label_names)},
    )
    return ConvNextV2ForImageClassification(config)


@dataclass
class BaselineOutput(ModelOutput):
    """`logits` (B, C) and `heatmaps` (B, C, h, w) float32 in [0, 1]."""

    logits: torch.Tensor | None = None
    heatmaps: torch.Tensor | None = None


def teacher_stages(teacher: nn.Module) -> list[nn.Module]:
    """The encoder stages of a ConvNeXt(V2) classifier, first (finest grid) to last (coarsest)."""
    base = getattr(teacher, getattr(teacher, "base_model_prefix", ""), None)
    stages = getattr(getattr(base, "encoder", None), "stages", None)
    if stages is None or len(stages) == 0:
        raise ValueError(f"{type(teacher).__name__} has no ConvNeXt encoder stages (`<base>.encoder.stages`)")
    return list(stages)


def teacher_gradcam(teacher: nn.Module, pixel_values: torch.Tensor, stage: int = -1) -> BaselineOutput:
    """Grad-CAM maps of every class of a ConvNeXt(V2) classifier on encoder stage `stage` (default: the last):
    (B, C, h, w) in [0, 1]."""
    output = GradCAM(teacher, teacher_stages(teacher)[stage])(pixel_values)
    return BaselineOutput(logits=output.logits.float(), heatmaps=output.heatmaps.float())


def teacher_gradcam_stages(
    teacher: nn.Module,
    pixel_values: torch.Tensor,
    stages: Sequence[int] | None = None,
    read: torch.Tensor | None = None,
    cam: bool = False,
) -> dict[int | str, BaselineOutput]:
    """Grad-CAM maps of every class on each of `stages` (default: all, first to last), from one forward pass and one
    backward pass per class: stage index (0-based) -> (B, C, h_s, w_s) maps in [0, 1] with the shared logits.

    `read` ((B, C) bool, *optional*): the only maps wanted; a class no image reads gets no backward pass and the
    maps not read are NaN. `cam`: also the teacher's CAM from the same forward pass, under the key "cam" (the
    same maps and logits as [`teacher_cam`])."""
    modules = teacher_stages(teacher)
    indices = list(range(len(modules))) if stages is None else [int(s) % len(modules) for s in stages]
    gradcam = GradCAM(teacher, [modules[i] for i in indices], feature_layer=modules[-1] if cam else None)
    output = gradcam(pixel_values, read=read)
    logits = output.logits.float()
    result: dict[int | str, BaselineOutput] = {
        i: BaselineOutput(logits=logits, heatmaps=maps.float())
        for i, maps in zip(indices, output.layer_heatmaps)
    }
    if cam:
        with torch.no_grad():  # the classifier's weights require gradients when training
            result["cam"] = BaselineOutput(logits=logits, heatmaps=_cam(teacher, output.features))
    return result


def _cam(teacher: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """CAM maps (B, C, h, w) in [0, 1] from the last-stage feature map (B, K, h, w) (see the module docstring)."""
    base = getattr(teacher, teacher.base_model_prefix)
    weights = teacher.classifier.weight.float() * base.layernorm.weight.float()[None]  # (C, K)
    features = features.float()
    centred = features - features.mean(dim=1, keepdim=True)
    return normalize_heatmaps(torch.einsum("ck,bkhw->bchw", weights, centred))


@torch.no_grad()
def teacher_cam(teacher: nn.Module, pixel_values: torch.Tensor) -> BaselineOutput:
    """CAM of every class of a transformers ConvNeXt(V2) classifier (see the module docstring): (B, C, h, w) in
    [0, 1], from the same forward pass as the logits."""
    base = getattr(teacher, teacher.base_model_prefix)
    outputs = base(pixel_values)
    logits = teacher.classifier(outputs.pooler_output).float()
    return BaselineOutput(logits=logits, heatmaps=_cam(teacher, outputs.last_hidden_state))
