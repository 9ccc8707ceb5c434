# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""The baselines CLARiTy is compared with: the plain ViT (CLS attention), the ConvNeXtV2 teacher with its CAM and
Grad-CAM maps, and the Grad-CAM implementation itself."""

from .gradcam import GradCAM, GradCAMOutput
from .teacher import (
    CONVNEXTV2_PRESETS,
    BaselineOutput,
    build_teacher,
    teacher_cam,
    teacher_gradcam,
    teacher_gradcam_stages,
    teacher_stages,
)
from .vit import PLAIN_VIT_ARCHITECTURE, PlainViTForMultiLabelClassification, PlainViTOutput, plain_vit_config

__all__ = [
    "BaselineOutput",
    "CONVNEXTV2_PRESETS",
    "GradCAM",
    "GradCAMOutput",
    "PLAIN_VIT_ARCHITECTURE",
    "PlainViTForMultiLabelClassification",
    "PlainViTOutput",
    "build_teacher",
    "plain_vit_config",
    "teacher_cam",
    "teacher_gradcam",
    "teacher_gradcam_stages",
    "teacher_stages",
]
