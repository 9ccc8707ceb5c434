# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""The plain-ViT baseline, evaluated with the same code on the same data as CLARiTy and timed against it.

**Plain ViT, CLS-token attention** ([`PlainViTForMultiLabelClassification`]): the CLARiTy backbone
  (`ClarityModel`) built with ONE class token (a plain ViT with a CLS token) and a linear 14-way head on the
  CLS output. Its heatmap, for every class, is the CLS token's last-layer attention to the patches, mean over heads
  (DINO's attention-map idiom), min-max normalised. Offline the backbone starts from random init (the same
  initialiser as the student), not from DINO weights; with a DINO checkpoint the student's DINO import applies.
  It is trained by the project's training loop: `train(config, model=PlainViTForMultiLabelClassification(...))`.
  [`PlainViTForMultiLabelClassification.classify`] gives the logits without any attention map: the reference of the
  speed benchmark (CLARiTy's kernels with one class token, so that the ratio isolates CLARiTy's extra work).

Heatmaps are (B, C, h, w) float32 in [0, 1] at the model's own low resolution; the localization evaluator upsamples
them to the box frame.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput

from ..configuration_clarity import ClarityConfig
from ..heatmaps import normalize_heatmaps
from ..modeling_clarity import ClarityModel, ClarityPreTrainedModel

__all__ = [
    "PlainViTOutput",
    "PlainViTForMultiLabelClassification",
    "PLAIN_VIT_ARCHITECTURE",
    "plain_vit_config",
]

PLAIN_VIT_ARCHITECTURE = "PlainViTForMultiLabelClassification"


@dataclass
class PlainViTOutput(ModelOutput):
    """Output of [`PlainViTForMultiLabelClassification`]: `loss`, `logits` (B, C), `heatmaps` (B, C, h, w) (the
    CLS attention map repeated for every class) and `cls_attention` (B, 1, h, w), raw."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    heatmaps: torch.Tensor | None = None
    cls_attention: torch.Tensor | None = None


def plain_vit_config(config: ClarityConfig) -> ClarityConfig:
    """A plain-ViT configuration from a CLARiTy one: the same backbone and labels, no CLARiTy heads or losses,
    class maps from the last layer only."""
    values = config.to_dict()
    for key in ("architectures", "auto_map", "transformers_version", "model_type"):
        values.pop(key, None)
    values.update(
        use_segment_cam=False,
        use_anatomical_prior=False,
        use_attention_pooling=False,
        logit_combination="token",
        heatmap_source="attention",
        distillation_loss_weight=0.0,
        orthogonal_loss_weight=0.0,
        foreground_loss_weight=0.0,
        num_attention_map_layers=1,
        attention_map_head_fusion="mean",
        use_patch_affinity_refinement=False,
    )
    plain = ClarityConfig(**values)
    plain.architectures = [PLAIN_VIT_ARCHITECTURE]
    return plain


class PlainViTForMultiLabelClassification(ClarityPreTrainedModel):
    """A plain ViT (one CLS token) with a linear multi-label head; heatmaps = CLS attention (see module doc).

    `config` carries the labels (C of them); the backbone is a `ClarityModel` with a single class token.
    """

    def __init__(self, config: ClarityConfig):
        config = copy.deepcopy(config)
        config.num_attention_map_layers = 1
        config.use_segment_cam = config.use_anatomical_prior = config.use_attention_pooling = False
        config.distillation_loss_weight = 0.0
        config.architectures = [PLAIN_VIT_ARCHITECTURE]
        config._auto_class = (
            None  # a baseline folder is read by clarity_hf, never as remote code: no auto_map
        )
        super().__init__(config)
        backbone_config = copy.deepcopy(config)
        backbone_config.pos_weight = None
        backbone_config.num_labels = 1  # one class token: the CLS token
        self.clarity = ClarityModel(backbone_config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        pos_weight = torch.tensor(config.pos_weight, dtype=torch.float32) if config.pos_weight else None
        self.register_buffer("pos_weight", pos_weight, persistent=False)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        interpolate_pos_encoding: bool | None = None,
        **kwargs,
    ) -> PlainViTOutput:
        r"""`labels` (B, C) multi-hot, optional; other keyword arguments of the training loop (`anatomy_masks`,
        `teacher_logits`) are accepted and ignored."""
        outputs = self.clarity(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
        cls_token = outputs.class_token_states[:, 0]  # (B, D)
        logits = self.classifier(cls_token)  # (B, C)
        cls_attention = outputs.class_attentions  # (B, 1, h, w): last layer, mean over heads
        heatmaps = normalize_heatmaps(cls_attention.float()).expand(-1, self.config.num_labels, -1, -1)
        loss = None
        if labels is not None:
            loss = F.binary_cross_entropy_with_logits(
                logits.float(), labels.float(), pos_weight=self.pos_weight
            )
        return PlainViTOutput(loss=loss, logits=logits, heatmaps=heatmaps, cls_attention=cls_attention)

    def classify(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        """The (B, C) logits of `forward` without computing any attention map."""
        hidden_states = self.clarity.embeddings(
            pixel_values, interpolate_pos_encoding=interpolate_pos_encoding
        )
        for layer in self.clarity.encoder.layers:
            hidden_states = layer(hidden_states, return_class_attention=False)[0]
        return self.classifier(self.clarity.layernorm(hidden_states[:, 0]))
