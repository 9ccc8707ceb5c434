#!/usr/bin/env python
# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Benchmark CLARiTy's speed and memory and (re)write BENCHMARKS.md.

    python scripts/benchmark.py                 # the full run (~8 minutes on 2 CPU cores)
    python scripts/benchmark.py --quick         # smoke run on tiny models (< 60 s); does not overwrite BENCHMARKS.md
    python scripts/benchmark.py --device cuda   # the same table on a GPU
    python scripts/benchmark.py --include-training  # also the training step and data loading (cache vs PNG)

The logic lives in `clarity_hf.benchmarking`.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clarity_hf.benchmarking import BenchmarkSettings, format_command, run_benchmark  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="smoke run on tiny models, every code path")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="Markdown file (default: BENCHMARKS.md, or stdout with --quick)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the raw figures as JSON")
    parser.add_argument(
        "--include-training",
        action="store_true",
        help="add the training-step (student / + teacher / cached logits) and data-loading rows",
    )
    args = parser.parse_args(argv)
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda given but CUDA is not available")
    if args.quick:
        settings = BenchmarkSettings.quick(device=args.device, threads=args.threads)
    else:
        settings = BenchmarkSettings(device=args.device, threads=args.threads)
    settings.include_training = args.include_training
    report, results = run_benchmark(settings, command=format_command(argv))
    output = args.output
    if output is None and not args.quick:
        output = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
    if output is None:
        print(report)
    else:
        output.write_text(report)
        print(f"wrote {output}", file=sys.stderr)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
