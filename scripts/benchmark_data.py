#!/usr/bin/env python
"""Benchmark: reading a batch from the preprocessing cache vs decoding 1024x1024 PNGs (goal: >= 5x faster).

Writes `--num-images` synthetic 1024x1024 8-bit PNGs (rendered by the synthetic generator at 1024 px, so they
compress like real radiographs rather than flat test patterns), caches them at `--image-size`, then times reading
`--batches` batches of `--batch-size` decoded images both ways: (a) open + decode the original PNG + grayscale +
resize to the model size (what training does without a cache), (b) read the row from the Parquet cache + decode
the small image (PNG and raw PGM caches). Prints the rates and the ratios. Not a test; nothing is asserted.

    python scripts/benchmark_data.py --num-images 64 --image-size 224
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from datasets import Dataset
from PIL import Image

from clarity_hf.data.cache import build_cache
from clarity_hf.data.features import attach_metadata, clarity_features, make_metadata
from clarity_hf.data.synthetic import render_synthetic_cxr


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--num-images", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rows = {key: [] for key in clarity_features(14)}
        for i in range(args.num_images):
            sample = render_synthetic_cxr(0, "train", i, 1024)
            path = root / f"{i:05d}.png"
            Image.fromarray(sample.image).save(path)
            values = dict(
                image=str(path),
                labels=sample.labels.tolist(),
                image_id=path.name,
                patient_id=str(i),
                age=None,
                sex="",
                view_position="",
                follow_up=0,
                original_size=[1024, 1024],
                pixel_spacing=[0.0, 0.0],
                boxes=[],
                box_split="",
            )
            for key, value in values.items():
                rows[key].append(value)
        dataset = attach_metadata(
            Dataset.from_dict(rows, features=clarity_features(14)), make_metadata([], "bench")
        )
        caches = {
            fmt: build_cache(
                dataset, root / fmt, image_size=args.image_size, progress=False, image_format=fmt
            )["train"]
            for fmt in ("png", "pgm")
        }
        rng = np.random.default_rng(0)
        batches = [rng.choice(args.num_images, args.batch_size) for _ in range(args.batches)]

        def original() -> None:
            for batch in batches:
                for i in batch:
                    with Image.open(rows["image"][i]) as image:
                        image.convert("L").resize((args.image_size,) * 2, Image.BILINEAR)

        def from_cache(cached: Dataset) -> None:
            for batch in batches:
                for image in cached[[int(i) for i in batch]]["image"]:
                    np.asarray(image)

        timings = {}
        runs = [("original 1024px PNG", original)]
        runs += [(f"cache {args.image_size}px {fmt}", lambda c=c: from_cache(c)) for fmt, c in caches.items()]
        for name, fn in runs:
            fn()  # warm the page cache
            start = time.perf_counter()
            fn()
            timings[name] = time.perf_counter() - start
        images = args.batch_size * args.batches
        for name, seconds in timings.items():
            print(f"{name:>22}: {images / seconds:8.0f} images/s")
        values = list(timings.values())
        for name, seconds in list(timings.items())[1:]:
            print(f"speed-up of the {name}: {values[0] / seconds:.1f}x")


if __name__ == "__main__":
    main()
