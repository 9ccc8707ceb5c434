# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Training-step throughput of the student alone, with an online teacher, and with cached teacher logits.

Each mode times full optimizer steps (median over interleaved steps) (forward, float32 loss, backward, clipping, AdamW) of the CLARiTy student on
random images; the online mode adds the frozen teacher's forward pass under `no_grad` on the same batch, the cached
mode feeds precomputed logits. Numbers are images per second of this machine; the ratios are what transfers.
"""

from __future__ import annotations

import statistics
import time

import torch

from clarity_hf.configuration_clarity import NIH_PATHOLOGIES, ClarityConfig
from clarity_hf.modeling_clarity import ClarityForMultiLabelLocalization
from clarity_hf.training.models import CONVNEXTV2_PRESETS, freeze, label_maps
from clarity_hf.training.optim import create_optimizer


def _student(preset: str, image_size: int, distillation_weight: float) -> ClarityForMultiLabelLocalization:
    return ClarityForMultiLabelLocalization(
        ClarityConfig.from_preset(preset, image_size=image_size, distillation_loss_weight=distillation_weight)
    )


def _teacher(preset: str, image_size: int) -> torch.nn.Module:
    from transformers import ConvNextV2Config, ConvNextV2ForImageClassification

    config = ConvNextV2Config(
        **CONVNEXTV2_PRESETS[preset],
        image_size=image_size,
        problem_type="multi_label_classification",
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

    optim_config = SimpleNamespace(
        weight_decay=0.05, layer_decay=None, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8
    )
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(batch_size, 3, image_size, image_size, generator=generator)
    labels = (torch.rand(batch_size, len(NIH_PATHOLOGIES), generator=generator) < 0.2).float()
    cached_logits = torch.randn(batch_size, len(NIH_PATHOLOGIES), generator=generator)
    teacher = _teacher(teacher_preset, image_size)
    modes = ("student alone", "student + online teacher", "student + cached teacher logits")
    students, optimizers = {}, {}
    for mode in modes:
        torch.manual_seed(0)
        students[mode] = _student(student_preset, image_size, 0.0 if mode == "student alone" else 0.5).train()
        optimizers[mode] = create_optimizer(students[mode], optim_config, 5e-4)

    def step(mode: str) -> None:
        student, optimizer = students[mode], optimizers[mode]
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

    # Modes are interleaved step by step and the median is kept, so that a change of machine load during the
    # benchmark affects all modes alike.
    for _ in range(warmup):
        for mode in modes:
            step(mode)
    times = {mode: [] for mode in modes}
    for _ in range(steps):
        for mode in modes:
            start = time.perf_counter()
            step(mode)
            times[mode].append(time.perf_counter() - start)
    rows = []
    for mode in modes:
        seconds = statistics.median(times[mode])
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
