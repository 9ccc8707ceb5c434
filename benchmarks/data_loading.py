# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Data loading: reading batches from the preprocessing cache vs decoding the original PNGs.

python -m benchmarks.data_loading --num-images 64 --image-size 224
"""

from __future__ import annotations

import argparse
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from PIL import Image

from clarity_hf import NIH_PATHOLOGIES
from clarity_hf.data.cache import build_cache
from clarity_hf.data.features import attach_metadata, clarity_features, make_metadata
from clarity_hf.data.synthetic import render_synthetic_cxr

from .measure import MIN_REPEATS, time_interleaved


def png_dataset(paths: list[Path], size: int, labels: list[list[float]] | None = None) -> Dataset:
    """A clarity_hf data set (`clarity_features`, one split's rows) of the PNG files `paths`, all `size` px square,
    with `labels` (default: alternating first label) and empty metadata: what `build_cache` reads."""
    rows: dict[str, list] = {key: [] for key in clarity_features(14)}
    for i, path in enumerate(paths):
        values = dict(
            image=str(path),
            labels=labels[i] if labels is not None else [float(i % 2)] + [0.0] * 13,
            image_id=path.name,
            patient_id=str(i),
            age=None,
            sex="",
            view_position="",
            follow_up=0,
            original_size=[size, size],
            pixel_spacing=[0.0, 0.0],
            boxes=[],
            box_split="",
        )
        for key, value in values.items():
            rows[key].append(value)
    return attach_metadata(
        Dataset.from_dict(rows, features=clarity_features(14)), make_metadata(NIH_PATHOLOGIES, "bench")
    )


def benchmark_data_loading(
    num_images: int = 64,
    source_size: int = 1024,
    image_size: int = 224,
    batch_size: int = 32,
    batches: int = 4,
    seed: int = 0,
) -> list[dict]:
    """Images per second of reading batches of decoded, model-sized images (a) from the original PNGs (open,
    decode, grayscale, resize: training without a cache) and (b) from the preprocessing cache
    (`clarity_hf.data.cache.build_cache`, PNG and raw PGM). The PNGs are synthetic radiographs rendered at
    `source_size`, so they compress like real ones. Rows `{"source", "images_per_second", "speedup"}`."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths, labels = [], []
        for i in range(num_images):
            sample = render_synthetic_cxr(seed, "train", i, source_size)
            paths.append(root / f"{i:05d}.png")
            Image.fromarray(sample.image).save(paths[-1])
            labels.append(sample.labels.tolist())
        dataset = png_dataset(paths, source_size, labels)
        caches = {
            fmt: build_cache(dataset, root / fmt, image_size=image_size, progress=False, image_format=fmt)[
                "train"
            ]
            for fmt in ("png", "pgm")
        }
        rng = np.random.default_rng(seed)
        chosen = [rng.choice(num_images, batch_size) for _ in range(batches)]

        def original() -> None:
            for batch in chosen:
                for i in batch:
                    with Image.open(paths[i]) as image:
                        image.convert("L").resize((image_size,) * 2, Image.BILINEAR)

        def from_cache(cached) -> None:
            for batch in chosen:
                for image in cached[[int(i) for i in batch]]["image"]:
                    np.asarray(image)

        runs = [(f"original {source_size}px PNG", original)]
        runs += [
            (f"cache {image_size}px {fmt}", partial(from_cache, cached)) for fmt, cached in caches.items()
        ]
        # The warm-up round also warms the page cache.
        timings = time_interleaved(dict(runs), torch.device("cpu"), MIN_REPEATS)
    reference = timings[runs[0][0]].median
    return [
        {
            "source": name,
            "images_per_second": batch_size * batches / timing.median,
            "speedup": reference / timing.median,
            "timing": timing,
            "images": batch_size * batches,
        }
        for name, timing in timings.items()
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--num-images", type=int, default=64)
    parser.add_argument("--source-size", type=int, default=1024)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=4)
    args = parser.parse_args(argv)
    rows = benchmark_data_loading(
        args.num_images, args.source_size, args.image_size, args.batch_size, args.batches
    )
    for row in rows:
        print(
            f"{row['source']:>22}: {row['timing'].rate_cell(row['images'], 0)} images/s ({row['speedup']:.1f}x)"
        )


if __name__ == "__main__":
    main()
