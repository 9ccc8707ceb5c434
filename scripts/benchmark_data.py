#!/usr/bin/env python
# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Benchmark: reading a batch from the preprocessing cache vs decoding 1024x1024 PNGs (goal: >= 5x faster).

Writes `--num-images` synthetic 1024x1024 8-bit PNGs, caches them at `--image-size`, then times reading
`--batches` batches of `--batch-size` decoded images both ways (`clarity_hf.benchmarking.benchmark_data_loading`).
Prints the rates and the ratios; `scripts/benchmark.py --include-training` puts the same rows in BENCHMARKS.md.

    python scripts/benchmark_data.py --num-images 64 --image-size 224
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clarity_hf.benchmarking import benchmark_data_loading  # noqa: E402


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
        print(f"{row['source']:>22}: {row['images_per_second']:8.0f} images/s ({row['speedup']:.1f}x)")


if __name__ == "__main__":
    main()
