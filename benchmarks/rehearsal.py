#!/usr/bin/env python
# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""The NIH rehearsal's measurements at the paper's shapes and a projection to the full data set, written as the
`rehearsal` section of BENCHMARKS.md (only the lines between its markers are replaced).

    clarity rehearse --output-dir /tmp/rehearsal --metadata-dir ../shared/nih \
        --dicom tests/fixtures/siim_pneumothorax_example.dcm               # the stage table (stages.json)
    python benchmarks/rehearsal.py --rehearsal-dir /tmp/rehearsal       # measures the rest, writes the section

Measured here (this CPU): every rehearsal stage's wall time, images/s, s/optimizer step and peak memory; cache disk
per 1,000 images at 224 and 512; cache build seconds per image per process; images/s of one loader worker at 512
(CPU and device augmentation paths, median of 3 with range and load); FLOPs per training image of both stages
(`torch.utils.flop_counter.FlopCounterMode`, forward + backward, the student's including the online teacher's
forward). Projected (not measured): cache build time for 112,120 images by core count, training time of both stages on 1 and 8 H100/H200-class GPUs, loader workers per GPU
for the CPU and the device augmentation paths.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- BEGIN rehearsal -->", "<!-- END rehearsal -->"
NIH_IMAGES = 112120
OFFICIAL_TRAIN_VAL = 86524
VALIDATION_FRACTION = 0.1  # prepare_chestxray14.py's default carve of train_val
GPU_BF16_DENSE_PEAK = (
    989e12  # H100 SXM / H200 bf16 dense tensor-core peak (NVIDIA data sheets; 1,979 with sparsity)
)
MFU_RANGE = (0.35, 0.45)  # sustained fraction of that peak assumed for training (see METHOD)
CORE_COUNTS = (2, 8, 16, 32, 64)
METHOD = """\
**Method (a projection, not a measurement).** Training time = training images x epochs x FLOPs per training image /
(GPUs x {peak:.0f} TFLOP/s x MFU), plus one validation forward pass per epoch. FLOPs per image are counted by
`torch.utils.flop_counter.FlopCounterMode` on one 512 px image (matmuls, convolutions and attention; element-wise
work is not counted, which is one reason the sustained fraction is below 1): the teacher's forward + backward; the
student's forward + backward plus the frozen teacher's forward on the same augmented view (the 512 recipe augments,
so the teacher runs online). {peak:.0f} TFLOP/s is the bf16 dense tensor-core peak of an H100 SXM (H200: the same
compute; NVIDIA data sheets). MFU (model FLOPs utilisation) {lo:.0%}-{hi:.0%} is an assumption (the measured one is
in the table above this note): the published training MFUs of large dense transformers are 46% (PaLM 540B,
Chowdhery et al. 2022, TPU v4) and 55% (ViT-22B, Dehghani et al. 2023, TPU v4); a 22M-parameter ViT-S at batch 16 per GPU and a ConvNeXt with depthwise
convolutions sit below those, so we take {lo:.0%}-{hi:.0%} (the table shows both ends). 8 GPUs assume linear data-parallel
scaling (all-reduce of 22M / 88M parameters overlaps with the backward pass). Training images = (112,120 - 25,596
official test) x (1 - {val:.0%} validation carve) = {train:,}. Cache build = 112,120 x the measured seconds per image
per process (decode the 1024 px PNG, resize, encode) / cores (reading ~45 GB of PNGs is assumed not to be the
bottleneck). Loader workers per GPU = one GPU's projected training images/s / the measured images/s of one loader
worker at 512 from the PGM cache (`clarity prepare`'s default), for the per-sample CPU augmentation path and the
device path (the worker only decodes to uint8 and draws the parameters; the warp runs batched on the GPU). This CPU may be slower than a data-centre host core,
so both are upper bounds; the device path's batched warp, timed on this CPU, is what a worker no longer pays. The
ConvNeXt's depthwise convolutions and LayerNorms are memory-bound, so its sustained fraction is likely at or below
the low end: read the teacher's row as a lower bound on time."""


def _section(lines: list[str]) -> str:
    return "\n".join([BEGIN, *lines, END])


def replace_section(path: Path, body: str) -> None:
    """Replace the text between the rehearsal markers (append the section when absent)."""
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + body + tail
    else:
        text = text.rstrip("\n") + "\n\n" + body + "\n"
    path.write_text(text, encoding="utf-8")


def training_flops(image_size: int = 512) -> dict[str, float]:
    """FLOPs per image: teacher forward + backward, student forward + backward, teacher forward (batch 1, fp32)."""
    from torch.utils.flop_counter import FlopCounterMode

    from clarity_hf import ClarityConfig, ClarityForMultiLabelLocalization
    from clarity_hf.baselines import build_teacher

    teacher = build_teacher("convnextv2-base", image_size=image_size)
    student = ClarityForMultiLabelLocalization(ClarityConfig.from_preset(f"clarity-s-16-{image_size}"))
    pixels, labels = torch.randn(1, 3, image_size, image_size), torch.zeros(1, 14)
    result = {}
    for name, model in (("teacher", teacher), ("student", student)):
        with FlopCounterMode(display=False) as counter:
            model(pixel_values=pixels, labels=labels).loss.backward()
        result[f"{name}_train"] = counter.get_total_flops()
        model.zero_grad(set_to_none=True)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        teacher(pixel_values=pixels)
    result["teacher_forward"] = counter.get_total_flops()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        student(pixel_values=pixels)
    result["student_forward"] = counter.get_total_flops()
    # FlopCounterMode counts the weight gradient of a grouped (depthwise) convolution as a dense one (257x the
    # forward for a 256-channel depthwise 7x7, measured), so the ConvNeXt's counted backward is not usable: its
    # training FLOPs are taken as forward x 3 (backward = 2 x forward), the ratio the ViT's exact count shows.
    result["teacher_train_used"] = 3 * result["teacher_forward"]
    result["student_train_used"] = result["student_train"]
    return result


def cache_measurements(folder: Path, num_images: int, work: Path) -> dict:
    """Disk per 1,000 images at 224 and 512 (PNG, prepare_chestxray14.py's default, and PGM) and seconds per image
    per process of the 512 build."""
    from clarity_hf.data.cache import build_cache
    from clarity_hf.data.chestxray14 import build_chestxray14

    dataset = build_chestxray14(folder)
    subset = dataset["train"].select(range(min(num_images, len(dataset["train"]))))
    result = {"images": len(subset)}
    for size in (224, 512):
        for image_format in ("png", "pgm"):
            out = work / f"cache-{size}-{image_format}"
            start = time.perf_counter()
            build_cache(subset, out, image_size=size, num_proc=1, image_format=image_format, progress=False)
            seconds = time.perf_counter() - start
            disk = sum(p.stat().st_size for p in out.rglob("*.parquet"))
            result[f"{size}_{image_format}_mb_per_1000"] = disk / len(subset) * 1000 / 1e6
            result[f"{size}_{image_format}_s_per_image"] = seconds / len(subset)
            if size != 512:
                shutil.rmtree(out)
    result["cache_512"] = {fmt: str(work / f"cache-512-{fmt}") for fmt in ("png", "pgm")}
    return result


def loader_rates(caches: dict[str, str], num_images: int) -> dict[str, dict]:
    """One loader worker's images/s at 512 (1 torch thread) from each 512 cache ({format: folder}), for the CPU
    augmentation path and the device path's worker (`benchmarks.loader.loader_timings`, interleaved, median of 3
    after a warm-up): {row: {"times": seconds per round, "load": (start, end), "images": n}}."""
    from datasets import Image as DatasetImage

    from clarity_hf.data.cache import load_cache

    from .loader import loader_timings

    splits = {
        fmt: load_cache(folder)["train"].cast_column("image", DatasetImage(decode=False))
        for fmt, folder in caches.items()
    }
    count = min([num_images, *(len(split) for split in splits.values())])
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        timings = loader_timings(splits, 512, count)
    finally:
        torch.set_num_threads(previous)
    return {name: {"times": t.times, "load": list(t.load), "images": count} for name, t in timings.items()}


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def projection(flops: dict, configs: dict, cache: dict, rates: dict[str, float]) -> list[str]:
    """Training time of both stages, and the loader workers per GPU that feed them: GPU images/s / one worker's
    images/s, for the CPU augmentation path and the device path (`rates`: {"cpu": ..., "device": ...}, from the
    PGM cache `clarity prepare` writes by default)."""
    train_images = round(OFFICIAL_TRAIN_VAL * (1 - VALIDATION_FRACTION))
    val_images = OFFICIAL_TRAIN_VAL - train_images
    stages = {
        "teacher (ConvNeXtV2-B, 512)": (
            flops["teacher_train_used"],
            flops["teacher_forward"],
            configs["teacher"],
        ),
        "student (CLARiTy-S-16-512 + online teacher)": (
            flops["student_train_used"] + flops["teacher_forward"],
            flops["student_forward"],
            configs["student"],
        ),
    }
    lines = [
        "| stage | GFLOPs / training image (fwd+bwd) | epochs | 1 GPU (MFU 45% - 35%) | 8 GPUs (MFU 45% - 35%) | "
        "GPU images/s per GPU, MFU 40% | loader workers per GPU, `augment_on: cpu` / `device` |",
        "|---|---:|---:|---|---|---:|---:|",
    ]
    for name, (per_image, eval_per_image, epochs) in stages.items():
        total = epochs * (train_images * per_image + val_images * eval_per_image)
        times = {
            gpus: [total / (gpus * GPU_BF16_DENSE_PEAK * mfu) for mfu in (MFU_RANGE[1], MFU_RANGE[0])]
            for gpus in (1, 8)
        }
        rate = GPU_BF16_DENSE_PEAK * sum(MFU_RANGE) / 2 / per_image
        lines.append(
            f"| {name} | {per_image / 1e9:.0f} | {epochs} | {_hours(times[1][0])} - {_hours(times[1][1])} | "
            f"{_hours(times[8][0])} - {_hours(times[8][1])} | {rate:,.0f} | "
            f"{rate / rates['cpu']:,.1f} / {rate / rates['device']:,.1f} |"
        )
    lines += [
        "",
        "| cache build, 112,120 images at 512 | " + " | ".join(f"{c} cores" for c in CORE_COUNTS) + " |",
        "|---|" + "---:|" * len(CORE_COUNTS),
        *(
            f"| projected wall time, {fmt.upper()} | "
            + " | ".join(_hours(NIH_IMAGES * cache[f"512_{fmt}_s_per_image"] / c) for c in CORE_COUNTS)
            + " |"
            for fmt in ("pgm", "png")
        ),
        "| projected disk, PGM (prepare's default) / PNG | "
        + f"{NIH_IMAGES / 1000 * cache['512_pgm_mb_per_1000'] / 1000:.1f} GB / "
        + f"{NIH_IMAGES / 1000 * cache['512_png_mb_per_1000'] / 1000:.1f} GB"
        + " |" * len(CORE_COUNTS),
    ]
    return lines


GPU_CHECK_FIGURES = REPO_ROOT / "benchmarks" / "results" / "gpu-check-h200.json"


def measured_on_gpu(flops: dict, configs: dict, figures: Path = GPU_CHECK_FIGURES) -> list[str]:
    """The projection's inputs as measured by the GPU check (`benchmarks.gpu_check --json`): each stage's faster
    training images/s (eager or compiled), the model FLOP rate it implies, that rate as a fraction of the assumed
    peak (the MFU the projection assumes), and the training time at that rate; [] when there are no figures."""
    if not figures.is_file():
        return []
    from .gpu_check import GpuCheckSettings, results_from_json, training_rates

    results, settings, _ = results_from_json(json.loads(figures.read_text()), GpuCheckSettings())
    train_images = round(OFFICIAL_TRAIN_VAL * (1 - VALIDATION_FRACTION))
    stages = {
        "teacher": ("teacher", flops["teacher_train_used"], configs["teacher"]),
        "student + online teacher": (
            "student",
            flops["student_train_used"] + flops["teacher_forward"],
            configs["student"],
        ),
    }
    lines = [
        f"**Measured on one {results['device_name']} (GPU check section, batch {settings.train_batch_size}, bf16 "
        f"autocast, `{figures.relative_to(REPO_ROOT) if figures.is_relative_to(REPO_ROOT) else figures}`)**",
        "",
        "| stage | training images/s (faster of eager / compiled) | model TFLOP/s | MFU (of "
        f"{GPU_BF16_DENSE_PEAK / 1e12:.0f}) | 1 GPU / 8 GPUs at this rate (training images only) |",
        "|---|---:|---:|---:|---|",
    ]
    for stage, rate in training_rates(results["training"], settings).items():
        name, per_image, epochs = stages[stage]
        seconds = epochs * train_images / rate
        lines.append(
            f"| {name} | {rate:,.0f} | {rate * per_image / 1e12:,.0f} | {rate * per_image / GPU_BF16_DENSE_PEAK:.1%} | "
            f"{_hours(seconds)} / {_hours(seconds / 8)} |"
        )
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rehearsal-dir", required=True, help="output folder of `clarity rehearse`")
    parser.add_argument("--images", type=int, default=24, help="images for the cache and loader measurements")
    parser.add_argument("--output", default=str(REPO_ROOT / "BENCHMARKS.md"))
    parser.add_argument(
        "--measurements",
        default=None,
        help="JSON file: reuse the cache / loader / FLOP measurements it holds, else measure and write it there",
    )
    args = parser.parse_args(argv)
    from clarity_hf.commands.rehearse import Stage, format_stage_table
    from clarity_hf.training import parse_training_config

    start, load_start = time.perf_counter(), os.getloadavg()[0]
    run = Path(args.rehearsal_dir)
    table = json.loads((run / "stages.json").read_text())
    fields = set(Stage.__dataclass_fields__)
    stages = [Stage(**{k: v for k, v in row.items() if k in fields}) for row in table["stages"]]
    saved = Path(args.measurements) if args.measurements else None
    if saved is not None and saved.is_file():
        measured = json.loads(saved.read_text())
    else:
        with tempfile.TemporaryDirectory() as work:
            cache = cache_measurements(run / "nih", args.images, Path(work))
            rates = loader_rates(cache["cache_512"], args.images)
        measured = {"cache": cache, "rates": rates, "flops": training_flops(512), "folder": str(run / "nih")}
        measured["run"] = {"seconds": time.perf_counter() - start, "load_start": load_start}
        if saved is not None:
            saved.write_text(json.dumps(measured, indent=2))
    cache, rates, flops = measured["cache"], measured["rates"], measured["flops"]
    from .measure import Timing

    timings = {name: Timing.from_dict(row) for name, row in rates.items()}
    images = next(iter(rates.values()))["images"]
    # The projection's workers read the cache `clarity prepare` writes by default (PGM).
    worker_rate = {path: images / timings[f"{path}/pgm"].median for path in ("cpu", "device")}
    configs = {
        name: parse_training_config(["--config", file]).num_train_epochs
        for name, file in (("teacher", "teacher_512.yaml"), ("student", "clarity_s16_512.yaml"))
    }
    rc = table["config"]
    command = " ".join(
        ["python", "-m", "benchmarks.rehearsal", *(argv if argv is not None else sys.argv[1:])]
    )
    lines = [
        "## NIH rehearsal at the paper's shapes (CPU) and a projection to the full data set",
        "",
        f"Produced by `clarity rehearse --output-dir {rc['output_dir']} --num-images {rc['num_images']} "
        f"--steps {rc['steps']}` then `{command}`. The rehearsal runs the README's real path on an NIH-shaped folder "
        "(the real metadata rows and boxes, rendered 1024 px pixels) with the shipped `teacher_512.yaml` / "
        f"`clarity_s16_512.yaml` (full-size models at 512, bf16 autocast) and schedule overrides only: {rc['steps']} "
        f"optimizer steps of {rc['train_batch_size']} images x {rc['gradient_accumulation_steps']} accumulation per "
        f"process, the student on {rc['num_processes']} CPU processes (torchrun, gloo). Machine: {table['cpu_count']} "
        f"cores, 1/5/15-min load average at the end of the rehearsal "
        f"{', '.join(f'{x:.1f}' for x in table['load_average'])}; torch {table['torch']}. Wall times include process "
        "start, model build and the per-stage validation, so images/s is a floor.",
        "",
        format_stage_table(stages),
        "",
        f"Total {table['total_seconds']:.0f} s.",
        "",
        "| measured on this CPU | value |",
        "|---|---:|",
        f"| FLOPs per image, teacher forward + backward (ConvNeXtV2-B, 512), as counted / as used (3 x forward: "
        f"the counter takes a depthwise convolution's weight gradient for a dense one) | "
        f"{flops['teacher_train'] / 1e9:.0f} G / {flops['teacher_train_used'] / 1e9:.0f} G |",
        f"| FLOPs per image, teacher forward | {flops['teacher_forward'] / 1e9:.0f} G |",
        f"| FLOPs per image, student forward + backward (CLARiTy-S-16-512) | {flops['student_train'] / 1e9:.0f} G |",
        f"| FLOPs per image, student forward | {flops['student_forward'] / 1e9:.0f} G |",
        f"| images measured for the cache and loader rows (from {measured['folder']}) | {cache['images']} |",
        f"| cache disk per 1,000 images, 224 px PNG / PGM | {cache['224_png_mb_per_1000']:.0f} MB / "
        f"{cache['224_pgm_mb_per_1000']:.0f} MB |",
        f"| cache disk per 1,000 images, 512 px PNG / PGM | {cache['512_png_mb_per_1000']:.0f} MB / "
        f"{cache['512_pgm_mb_per_1000']:.0f} MB |",
        f"| cache build, s per image per process, 512 PNG (decode 1024 px, resize, encode) | "
        f"{cache['512_png_s_per_image']:.3f} |",
        *(
            f"| images/s of one loader worker at 512 (1 thread), {fmt.upper()} cache, `augment_on: {path}`: median "
            f"(range) [load start/end] of 3 interleaved repeats after a warm-up | "
            f"{timings[f'{path}/{fmt}'].rate_cell(images)} |"
            for fmt in ("png", "pgm")
            for path in ("cpu", "device")
        ),
        f"| the device path's batched warp run on this CPU, ms per image | "
        f"{1e3 * timings['warp'].median / images:.2f} |",
        "",
        "**Projection to 112,120 images (computed, not measured)**",
        "",
        *projection(flops, configs, cache, worker_rate),
        "",
        *measured_on_gpu(flops, configs),
        "",
        METHOD.format(
            peak=GPU_BF16_DENSE_PEAK / 1e12,
            lo=MFU_RANGE[0],
            hi=MFU_RANGE[1],
            val=VALIDATION_FRACTION,
            train=round(OFFICIAL_TRAIN_VAL * (1 - VALIDATION_FRACTION)),
        ),
        "",
        "Memory at the configs' full batch (16 per device at 512) was not run here (the 2-core machine has 23 "
        "GB); the stage table's peak RSS is at the rehearsal's batch. Measured GPU rows (one H200, the same models "
        "at 512 in bf16) and the loader workers per GPU at those measured rates are in the GPU check section "
        "below: read them beside this projection.",
        "",
        # The measuring run's own time and load, also when the measurements are read back from --measurements.
        "(benchmark run {seconds:.0f} s; 1-min load average {load_start:.1f} at its start)".format(
            **measured.get("run", {"seconds": time.perf_counter() - start, "load_start": load_start})
        ),
    ]
    replace_section(Path(args.output), _section(lines))
    print(f"wrote the rehearsal section of {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
