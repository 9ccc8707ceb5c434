# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Training-step throughput of the student alone, with an online teacher, and with cached teacher logits.

Each mode times full optimizer steps (forward, float32 loss, backward, clipping, AdamW; median over interleaved
steps) of the CLARiTy student on random images; the online mode adds the frozen teacher's forward pass under
`no_grad` on the same batch, the cached mode feeds precomputed logits. Numbers are images per second of this
machine; the ratios are what transfers.

    python -m benchmarks.training_step                       # ViT-S/16 student, ConvNeXtV2-Base teacher, 224, batch 8
    python -m benchmarks.training_step --teacher-preset convnextv2-tiny --steps 5
"""

from __future__ import annotations

import argparse
import platform
from functools import partial
from types import SimpleNamespace

import torch

from clarity_hf.baselines import build_teacher
from clarity_hf.configuration_clarity import NIH_PATHOLOGIES, ClarityConfig
from clarity_hf.evaluation.tables import markdown_table
from clarity_hf.modeling_clarity import ClarityForMultiLabelLocalization
from clarity_hf.training.models import freeze
from clarity_hf.training.optim import create_optimizer

from .measure import time_interleaved


def _student(
    preset: str, image_size: int, distillation_weight: float | None
) -> ClarityForMultiLabelLocalization:
    overrides = {} if distillation_weight is None else {"distillation_loss_weight": distillation_weight}
    return ClarityForMultiLabelLocalization(
        ClarityConfig.from_preset(preset, image_size=image_size, **overrides)
    )


def benchmark_training(
    student_preset: str = "clarity-s-16-224",
    teacher_preset: str = "convnextv2-base",
    image_size: int = 224,
    batch_size: int = 8,
    steps: int = 3,
    warmup: int = 1,
) -> list[dict]:
    """Rows `{"mode", "images_per_second", "seconds_per_step"}` for the three modes."""
    optim_config = SimpleNamespace(
        weight_decay=0.05, layer_decay=None, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8
    )
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(batch_size, 3, image_size, image_size, generator=generator)
    labels = (torch.rand(batch_size, len(NIH_PATHOLOGIES), generator=generator) < 0.2).float()
    cached_logits = torch.randn(batch_size, len(NIH_PATHOLOGIES), generator=generator)
    teacher = freeze(build_teacher(teacher_preset, image_size=image_size))
    modes = ("student alone", "student + online teacher", "student + cached teacher logits")
    students, optimizers = {}, {}
    for mode in modes:
        torch.manual_seed(0)
        # The distillation weight of the preset's configuration (0 for the student alone).
        weight = 0.0 if mode == "student alone" else None
        students[mode] = _student(student_preset, image_size, weight).train()
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
    timings = time_interleaved(
        {mode: partial(step, mode) for mode in modes}, torch.device("cpu"), steps, warmup
    )
    rows = []
    for mode in modes:
        seconds = timings[mode].median
        rows.append(
            {
                "mode": mode,
                "seconds_per_step": seconds,
                "images_per_second": batch_size / seconds,
                "timing": timings[mode],
                "batch_size": batch_size,
            }
        )
    return rows


def format_markdown(rows: list[dict], title: str) -> str:
    base = rows[0]["images_per_second"]
    table = markdown_table(
        ["mode", "images/s: median (range) [load]", "s/step", "ratio to student alone"],
        [
            [
                row["mode"],
                row["timing"].rate_cell(row["batch_size"], 2),
                f"{row['seconds_per_step']:.3f}",
                f"{row['images_per_second'] / base:.2f}",
            ]
            for row in rows
        ],
        align=["", "right", "right", "right"],
    )
    return f"{title}\n\n{table}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--student-preset", default="clarity-s-16-224")
    parser.add_argument("--teacher-preset", default="convnextv2-base")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args(argv)
    rows = benchmark_training(
        args.student_preset, args.teacher_preset, args.image_size, args.batch_size, args.steps, args.warmup
    )
    title = (
        f"Training throughput, {args.student_preset} student, {args.teacher_preset} teacher, {args.image_size}px, "
        f"batch {args.batch_size}, median of {args.steps} interleaved steps, float32, "
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"
    )
    print(format_markdown(rows, title))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
