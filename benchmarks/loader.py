# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Loader worker throughput at 512: the CPU augmentation path against the device path, side by side, and the loader
workers per GPU they imply; written as the `loader` section of BENCHMARKS.md.

    python -m benchmarks.loader                       # 512 px PNG cache of real X-rays, 1 torch thread
    python -m benchmarks.loader --images 8 --size 64 --output -   # smoke run, prints the section

One loader worker's work per image, on one thread, interleaved in rounds (`benchmarks.measure.time_interleaved`:
a warm-up round, then at least 3 timed rounds; median, range and load average):

* `augment_on: cpu`: read the row from the Parquet cache, decode the PNG to float gray, crop-resize, rotate, jitter,
  normalise (`ClarityTransform.transform_one`, the per-sample path);
* `augment_on: device` (worker): read the row, decode to uint8, draw the parameters (`ClarityTransform.source_one`);
  collation (`source_batch`) is included;
* the device path's batched warp (`BatchAugmenter`), run here on the CPU, per image: what the device does instead
  of the worker, and what a worker would pay if it ran the warp itself.

Projection. Images/s one GPU trains at (bf16 dense peak x MFU 40% / training FLOPs per image, as
`benchmarks/rehearsal.py` computes them) / images/s of one worker = loader workers per GPU. With the device path,
the batched warp's CPU cost bounds the saving from below: a worker that also ran it on the host would need
1 / (1 / decode rate + warp seconds per image) images/s per worker.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from PIL import Image

from clarity_hf.evaluation.tables import markdown_table

from .measure import MIN_REPEATS, Timing, load_average, time_interleaved
from .report import publish

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared" / "realdata"
# Training FLOPs per 512 px image (forward + backward; the student's with the online teacher's forward), as
# `benchmarks/rehearsal.py::training_flops` counts them; the rehearsal section records the run that counted them.
TRAINING_GFLOPS_512 = {"teacher (ConvNeXtV2-B)": 481.0, "student (CLARiTy-S-16 + online teacher)": 297.0}
GPU_BF16_DENSE_PEAK = 989e12
MFU = 0.40


def real_xrays(size: int) -> list[bytes]:
    """The repository's real chest X-rays (`../shared/realdata`), resized to `size`, as PNG bytes; a synthetic
    radiograph when they are absent."""
    files = sorted(SHARED.glob("nih/*.png")) + sorted(SHARED.glob("tbx11k/imgs/*/*.png"))
    images = []
    for path in files:
        with Image.open(path) as image:
            images.append(image.convert("L").resize((size, size), Image.BILINEAR))
    if not images:
        from clarity_hf.data.synthetic import render_synthetic_cxr

        images = [Image.fromarray(render_synthetic_cxr(0, "train", 0, size).image)]
    out = []
    for image in images:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def cache_split(num_images: int, size: int, work: Path, image_format: str = "png"):
    """A `size` px cache (`clarity_hf.data.cache.build_cache`) of `num_images` images in `image_format` ("png",
    compact, or "pgm", raw: `clarity prepare`'s default)."""
    from datasets import Image as DatasetImage

    from clarity_hf.data.cache import build_cache

    from .data_loading import png_dataset

    sources = real_xrays(size)
    paths = [work / f"{i:05d}.png" for i in range(num_images)]
    for i, path in enumerate(paths):
        if not path.exists():
            path.write_bytes(sources[i % len(sources)])
    dataset = png_dataset(paths, size)
    split = build_cache(
        dataset, work / f"cache-{image_format}", image_size=size, progress=False, image_format=image_format
    )["train"]
    # Undecoded, as the training data set reads it: the worker decodes (and a bad file is caught there).
    return split.cast_column("image", DatasetImage(decode=False))


def loader_timings(
    splits: dict, size: int, num_images: int, batch_size: int = 16, repeats: int = MIN_REPEATS
):
    """{name: Timing of one round over `num_images` images}: for each cache format of `splits` ({format: split}),
    the CPU path (`cpu/<format>`) and the device path's worker (`device/<format>`); and the device path's warp on
    the CPU (`warp`, batches of `batch_size`); all interleaved, with the 512 recipe's augmentation."""
    from clarity_hf.data.device_augment import BatchAugmenter
    from clarity_hf.data.transforms import source_batch
    from clarity_hf.training import parse_training_config
    from clarity_hf.training.data import make_transform

    config = parse_training_config(["--config", "clarity_s16_512.yaml"])
    transform = make_transform(config, size, augment=True)
    augmenter = BatchAugmenter.like(transform)
    count = min([num_images, *(len(split) for split in splits.values())])
    chunks = [range(start, min(start + batch_size, count)) for start in range(0, count, batch_size)]

    def cpu_path(split):
        for i in range(count):
            transform.transform_one(split[i]["image"], rng=transform.sample_rng(0, i))

    def device_worker(split):
        return [
            source_batch(
                [transform.source_one(split[i]["image"], rng=transform.sample_rng(0, i)) for i in chunk]
            )
            for chunk in chunks
        ]

    batches = device_worker(next(iter(splits.values())))

    def device_warp():
        for batch in batches:
            augmenter(batch["source"], batch["source_size"], batch["augment"])

    cases = {}
    for image_format, split in splits.items():
        cases[f"cpu/{image_format}"] = partial(cpu_path, split)
        cases[f"device/{image_format}"] = partial(device_worker, split)
    cases["warp"] = device_warp
    return time_interleaved(cases, torch.device("cpu"), repeats)


def workers_per_gpu(rate: float, gflops: float) -> float:
    return GPU_BF16_DENSE_PEAK * MFU / (gflops * 1e9) / rate


def section(timings: dict[str, Timing], count: int, size: int, command: str, threads: int) -> str:
    rate = {name: count / timing.median for name, timing in timings.items()}
    formats = [name.split("/")[1] for name in timings if name.startswith("cpu/")]
    rows = []
    for image_format in formats:
        cpu, device = timings[f"cpu/{image_format}"], timings[f"device/{image_format}"]
        rows.append(
            [
                f"{size} px {image_format.upper()} cache",
                cpu.rate_cell(count),
                device.rate_cell(count),
                f"{rate[f'device/{image_format}'] / rate[f'cpu/{image_format}']:.1f}x",
            ]
        )
    measured = markdown_table(
        [
            "cache",
            "`augment_on: cpu` worker: decode float, crop-resize, rotate, jitter, normalise",
            "`augment_on: device` worker: decode uint8, draw parameters, collate",
            "device / cpu",
        ],
        rows,
        align=["", "right", "right", "right"],
    )
    warp = timings["warp"]
    best = max(formats, key=lambda f: rate[f"device/{f}"])
    with_warp = 1 / (1 / rate[f"device/{best}"] + 1 / rate["warp"])
    projection = markdown_table(
        [
            "stage",
            "GFLOPs / training image",
            "images/s per GPU (MFU 40%)",
            *(f"workers per GPU, `cpu`, {f.upper()}" for f in formats),
            *(f"workers per GPU, `device`, {f.upper()}" for f in formats),
            f"`device` worker + the batched warp on the host, {best.upper()}",
        ],
        [
            [
                name,
                f"{gflops:.0f}",
                f"{GPU_BF16_DENSE_PEAK * MFU / (gflops * 1e9):,.0f}",
                *(f"{workers_per_gpu(rate[f'cpu/{f}'], gflops):,.1f}" for f in formats),
                *(f"{workers_per_gpu(rate[f'device/{f}'], gflops):,.2f}" for f in formats),
                f"{workers_per_gpu(with_warp, gflops):,.2f}",
            ]
            for name, gflops in TRAINING_GFLOPS_512.items()
        ],
        align=["", *["right"] * (3 + 2 * len(formats))],
    )
    cores = os.cpu_count() or 1
    return "\n".join(
        [
            f"## Loader workers at {size}: CPU augmentation path vs device path",
            "",
            f"Produced by `{command}` ({count} images of {size} px PNG and PGM caches of real chest X-rays, "
            f"{threads} torch thread, {cores} cores). Each row: one round over the {count} "
            f"images, a warm-up round then {len(cpu.times)} timed rounds interleaved across the rows; median, "
            "range (slowest-fastest round) and the 1-minute load average at the start/end of the rounds; `noisy` "
            f"when the range exceeds 25% of the median or the load average exceeded the {cores} cores. A noisy row "
            "says the machine was busy; the ratio of rows measured in the same rounds still holds.",
            "",
            measured,
            "",
            f"The device path's batched warp (`BatchAugmenter`, batches of 16), run on this CPU instead of the "
            f"device: {warp.rate_cell(count)} images/s, {1e3 / rate['warp']:.2f} ms per image. On the device it is no "
            "worker's cost; a host that ran this batched warp itself would need the workers of the last projection "
            "column (the decode-only rate slowed by this cost): the device path's worker count is the floor, the "
            "host-side warp's the ceiling.",
            "",
            "**Loader workers per GPU at 512 (computed from the rows above, not measured on a GPU)**",
            "",
            projection,
            "",
            "GPU images/s = 989 TFLOP/s (H100/H200 bf16 dense peak) x 40% MFU / training FLOPs per image (the "
            "rehearsal section's counts: the teacher's forward + backward; the student's forward + backward plus the "
            "online teacher's forward). Workers per GPU = that / one worker's images/s above; a data-centre host's "
            "core may be faster than this machine's, so the worker counts are upper bounds. The GPU check section has "
            "the same count at an H200's measured training rate, from its own host's loader rows.",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=MIN_REPEATS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--output", default=str(REPO_ROOT / "BENCHMARKS.md"), help="page to update, or - to print"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start, load_start = time.perf_counter(), load_average()
    with tempfile.TemporaryDirectory() as work:
        splits = {fmt: cache_split(args.images, args.size, Path(work), fmt) for fmt in ("png", "pgm")}
        timings = loader_timings(splits, args.size, args.images, repeats=args.repeats)
        count = min(args.images, len(splits["png"]))
    command = " ".join(["python", "-m", "benchmarks.loader", *(sys.argv[1:] if argv is None else argv)])
    body = section(timings, count, args.size, command, args.threads)
    body += (
        f"\n\n(run {time.perf_counter() - start:.0f} s; 1-min load average {load_start:.1f} at its start, "
        f"{load_average():.1f} at its end)"
    )
    publish(args.output, "loader", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
