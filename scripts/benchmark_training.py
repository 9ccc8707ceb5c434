#!/usr/bin/env python
# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Training throughput: student alone / + online teacher / + cached teacher logits, as a Markdown table.

    python scripts/benchmark_training.py                       # ViT-S/16 student, ConvNeXtV2-Base teacher, 224, batch 8
    python scripts/benchmark_training.py --teacher_preset convnextv2-tiny --steps 5
"""

import argparse
import platform
import sys

import torch

from clarity_hf.training.benchmark import benchmark_training, format_markdown


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student_preset", default="clarity-s-16-224")
    parser.add_argument("--teacher_preset", default="convnextv2-base")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args(argv)
    rows = benchmark_training(
        args.student_preset, args.teacher_preset, args.image_size, args.batch_size, args.steps, args.warmup
    )
    title = (
        f"Training throughput, {args.student_preset} student, {args.teacher_preset} teacher, {args.image_size}px, "
        f"batch {args.batch_size}, {args.steps} timed steps, float32, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads"
    )
    print(format_markdown(rows, title))
    return 0


if __name__ == "__main__":
    sys.exit(main())
