# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""What the teacher's Grad-CAM costs per boxed test image under the localization protocol, before and after computing
only the maps the protocol reads (ConvNeXtV2-B, random weights, 14 classes, 4 stages):

- *before*: every class on every stage for every boxed image (images explained two at a time, the old chunk at
  512 px), plus a second teacher forward pass for CAM;
- *after, tune half*: every stage (for the stage choice), only the image's boxed classes, CAM from the same
  forward pass, one image at a time;
- *after, eval half*: the chosen stage only (stage 0 is the dearest, the one whose backward pass crosses the most of
  the network), the image's boxed classes, CAM shared;
- the class gradients as one backward pass per class (a loop, what the evaluation uses) or one vectorised pass
  (`torch.autograd.grad(..., is_grads_batched=True)`); per class = (3 classes - 1 class) / 2.

    python -m benchmarks.gradcam_protocol                    # 512 px, median and range of 3 (about 10 min, 2 cores)
    python -m benchmarks.gradcam_protocol --resolution 64 --preset convnextv2-test --repeats 1   # smoke run

Prints a Markdown table (seconds per boxed image, median (min-max)) with the load average before and after, and a
JSON line with every timing.
"""

from __future__ import annotations

import argparse
import json
import os
from functools import partial

import torch

from clarity_hf.baselines import GradCAM, build_teacher, teacher_cam, teacher_gradcam_stages, teacher_stages

from .measure import time_interleaved


def _read(classes: int, num_labels: int = 14) -> torch.Tensor:
    read = torch.zeros(1, num_labels, dtype=torch.bool)
    read[0, :classes] = True
    return read


def cases(teacher, resolution: int) -> dict[str, tuple[callable, int]]:
    """name -> (call, images per call)."""
    torch.manual_seed(0)
    two = torch.randn(2, 3, resolution, resolution)
    one = two[:1].clone()
    stages = teacher_stages(teacher)

    def before():
        teacher_gradcam_stages(teacher, two)  # 14 classes, 4 stages
        teacher_cam(teacher, two)

    def batched(classes: int):
        GradCAM(teacher, stages, batched_gradients=True, max_batch_pixels=1)(one, read=_read(classes))

    return {
        "before: 4 stages x 14 classes, + CAM forward": (before, 2),
        "after, tune half: 4 stages x 1 class, CAM shared": (
            partial(teacher_gradcam_stages, teacher, one, read=_read(1), cam=True),
            1,
        ),
        "after, eval half: stage 0 x 1 class, CAM shared": (
            partial(teacher_gradcam_stages, teacher, one, stages=[0], read=_read(1), cam=True),
            1,
        ),
        "after, eval half: stage 2 x 1 class, CAM shared": (
            partial(teacher_gradcam_stages, teacher, one, stages=[2], read=_read(1), cam=True),
            1,
        ),
        "loop: 4 stages x 3 classes": (partial(teacher_gradcam_stages, teacher, one, read=_read(3)), 1),
        "batched: 4 stages x 1 class": (partial(batched, 1), 1),
        "batched: 4 stages x 3 classes": (partial(batched, 3), 1),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--preset", default="convnextv2-base")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    teacher = build_teacher(args.preset, image_size=args.resolution).eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    table = cases(teacher, args.resolution)
    load_start = os.getloadavg()
    with torch.no_grad():  # warm-up (allocator, kernels)
        teacher(torch.randn(1, 3, args.resolution, args.resolution))
    timings = time_interleaved(
        {name: call for name, (call, _) in table.items()}, torch.device("cpu"), args.repeats, warmup=0
    )
    load_end = os.getloadavg()
    per_image = {name: [t / table[name][1] for t in timings[name].times] for name in table}
    one_class = timings["after, tune half: 4 stages x 1 class, CAM shared"].times
    per_class = {
        "loop": [(a - b) / 2 for a, b in zip(timings["loop: 4 stages x 3 classes"].times, one_class)],
        "batched": [
            (a - b) / 2
            for a, b in zip(
                timings["batched: 4 stages x 3 classes"].times, timings["batched: 4 stages x 1 class"].times
            )
        ],
    }

    def cell(values):
        values = sorted(values)
        return f"{values[len(values) // 2]:.2f} ({values[0]:.2f}-{values[-1]:.2f})"

    print(
        f"ConvNeXtV2 {args.preset} at {args.resolution} px, {torch.get_num_threads()} threads, {args.repeats} "
        f"repeats; load average (1, 5, 15 min) at start {load_start}, at end {load_end}\n"
    )
    print("| case | s per boxed image |\n|---|---|")
    for name, values in per_image.items():
        print(f"| {name} | {cell(values)} |")
    for name, values in per_class.items():
        print(f"| per extra class ({name}), 4 stages | {cell(values)} |")
    print(
        "JSON "
        + json.dumps(
            {"per_image": per_image, "per_class": per_class, "load": [load_start, load_end], **vars(args)}
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
