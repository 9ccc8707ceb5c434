# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Training-step throughput of the student alone, with an online teacher, and with cached teacher logits.

Each mode times full optimizer steps (forward, float32 loss, backward, clipping, AdamW) of the CLARiTy student on
random images; the online mode adds the frozen teacher's forward pass under `no_grad` on the same batch, the cached
mode feeds precomputed logits. Numbers are images per second of this machine; the ratios are what transfers.
"""

from __future__ import annotations

import time

import torch

from ..configuration_clarity import ClarityConfig, NIH_PATHOLOGIES
from ..modeling_clarity import ClarityForMultiLabelLocalization
from .models import CONVNEXTV2_PRESETS, freeze, label_maps
from .optim import create_optimizer


def _student(preset: str, image_size: int, distillation_weight: float) -> ClarityForMultiLabelLocalization:
    return ClarityForMultiLabelLocalization(
        ClarityConfig.from_preset(preset, image_size=image_size, distillation_loss_weight=distillation_weight)
    )


def _teacher(preset: str, image_size: int) -> torch.nn.Module:
    from transformers import ConvNextV2Config, ConvNextV2ForImageClassification

    config = ConvNextV2Config(
        **CONVNEXTV2_PRESETS[preset], image_size=image_size, problem_type="multi_label_classification",
        **label_maps(list(NIH_PATHOLOGIES)),
    )
    return freeze(ConvNextV2ForImageClassification(config))


def benchmark_training(
    student_preset: str = "clarity-s-16-224",
    teacher_preset: str = "convnextv2-base",
    image_size: int = 224,
    batch_size: int = 8,
    steps: int = 3,
    warmup: int = 1,
) -> list[dict]:
    """Rows `{"mode", "images_per_second", "seconds_per_step"}` for the three modes."""
    from types import SimpleNamespace

    optim_config = SimpleNamespace(weight_decay=0.05, layer_decay=None, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8)
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(batch_size, 3, image_size, image_size, generator=generator)
    labels = (torch.rand(batch_size, len(NIH_PATHOLOGIES), generator=generator) < 0.2).float()
    cached_logits = torch.randn(batch_size, len(NIH_PATHOLOGIES), generator=generator)
    teacher = _teacher(teacher_preset, image_size)
    rows = []
    for mode in ("student alone", "student + online teacher", "student + cached teacher logits"):
        student = _student(student_preset, image_size, 0.0 if mode == "student alone" else 0.5).train()
        optimizer = create_optimizer(student, optim_config, 5e-4)

        def step():
            teacher_logits = None
            if mode == "student + online teacher":
                with torch.no_grad():
                    teacher_logits = teacher(pixel_values=pixels).logits.float()
            elif mode == "student + cached teacher logits":
                teacher_logits = cached_logits
            loss = student(pixel_values=pixels, labels=labels, teacher_logits=teacher_logits).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        for _ in range(warmup):
            step()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        seconds = (time.perf_counter() - start) / steps
        rows.append({"mode": mode, "seconds_per_step": seconds, "images_per_second": batch_size / seconds})
    return rows


def format_markdown(rows: list[dict], title: str) -> str:
    base = rows[0]["images_per_second"]
    lines = [title, "", "| mode | images/s | s/step | ratio to student alone |", "|---|---:|---:|---:|"]
    for row in rows:
        lines.append(
            f"| {row['mode']} | {row['images_per_second']:.2f} | {row['seconds_per_step']:.3f} | "
            f"{row['images_per_second'] / base:.2f} |"
        )
    return "\n".join(lines)
