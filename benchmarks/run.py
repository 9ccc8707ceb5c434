# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Benchmark CLARiTy's speed and memory and update its sections of BENCHMARKS.md.

    python -m benchmarks.run                     # the full run (~8 minutes on 2 CPU cores)
    python -m benchmarks.run --quick             # smoke run on tiny models (< 60 s); prints the page
    python -m benchmarks.run --device cuda       # the same tables on a GPU
    python -m benchmarks.run --include-training  # also the training step and data loading (cache vs PNG)

Only this benchmark's sections of BENCHMARKS.md (between their `<!-- BEGIN name -->` / `<!-- END name -->`
markers) are replaced; the other sections of the page are kept.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

from .data_loading import benchmark_data_loading
from .measure import (
    BenchmarkSettings,
    Timing,
    load_average,
    machine_info,
    measure_flops,
    measure_gradcam,
    measure_memory,
    measure_speed,
)
from .report import PAGE_TITLE, render_sections, write_sections
from .training_step import benchmark_training

REPO_ROOT = Path(__file__).resolve().parents[1]


def _log(start: float, verbose: bool):
    def log(message: str) -> None:
        if verbose:
            print(f"[{time.perf_counter() - start:6.1f}s] {message}", file=sys.stderr, flush=True)

    return log


def run_benchmark(settings: BenchmarkSettings, verbose: bool = True) -> dict:
    """Every measurement of the page; the rows hold `Timing`s (see `to_json`)."""
    start = time.perf_counter()
    log = _log(start, verbose)
    device = torch.device(settings.device)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    torch.manual_seed(0)
    results: dict = {"machine": machine_info(device), "settings": {"quick": settings.model_overrides != {}}}
    load_start = load_average()
    # First, before any timing: the memory subprocesses must not compete with the timed cases for the cores.
    log("memory cases (fresh subprocesses)")
    results["memory"] = measure_memory(settings)
    results["speed"] = measure_speed(settings, device, log)
    results["gradcam"] = measure_gradcam(settings, device, log)
    results["flops"], results["matmul_gflops"] = measure_flops(settings, device, results["speed"], log)
    if settings.include_training:
        log("training step")
        results["training"] = benchmark_training(
            settings.training_student_preset,
            settings.training_teacher_preset,
            settings.training_image_size,
            settings.training_batch_size,
            settings.training_steps,
            settings.warmup,
        )
        log("data loading")
        results["data_loading"] = benchmark_data_loading(
            settings.data_num_images,
            settings.data_source_size,
            settings.data_image_size,
            settings.data_batch_size,
            settings.data_batches,
        )
    results["load_average"] = (load_start, load_average())
    results["seconds"] = time.perf_counter() - start
    log("done")
    return results


def to_json(results: dict) -> str:
    """The raw figures as JSON (a timing as its median and its samples, in seconds)."""

    def default(value):
        if isinstance(value, Timing):
            return value.to_dict()
        raise TypeError(f"not JSON serialisable: {type(value).__name__}")

    return json.dumps(results, indent=2, default=default)


def format_command(argv: list[str]) -> str:
    return " ".join(shlex.quote(arg) for arg in ["python", "-m", "benchmarks.run", *argv])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
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
        help="Markdown page to update (default: BENCHMARKS.md; stdout with --quick)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the raw figures as JSON")
    parser.add_argument(
        "--include-training",
        action="store_true",
        help="add the training-step (student / + teacher / cached logits) and data-loading rows",
    )
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda given but CUDA is not available")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    settings = (BenchmarkSettings.quick if args.quick else BenchmarkSettings)(
        device=args.device, threads=args.threads
    )
    settings.include_training = args.include_training
    results = run_benchmark(settings)
    sections = render_sections(results, settings, format_command(argv))
    output = args.output
    if output is None and not args.quick:
        output = REPO_ROOT / "BENCHMARKS.md"
    if output is None:
        print("\n\n".join([PAGE_TITLE, *sections.values()]))
    else:
        write_sections(output, sections)
        print(f"updated {len(sections)} sections of {output}", file=sys.stderr)
    if args.json is not None:
        args.json.write_text(to_json(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
