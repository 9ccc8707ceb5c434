# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""The `clarity` console script: `clarity <command> [options]`, one module per command in `clarity_hf/commands/`
(imported only when its command runs). `clarity-demo` and `clarity-predict` are aliases of `clarity demo` and
`clarity predict`; `python -m clarity_hf <command>` is the same entry point. Every command runs inside one error
boundary (`errors.py`): an expected failure prints one line and exits 2."""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
from collections.abc import Sequence

from .demo import ABLATIONS, DemoConfig, parse_ablations, run_demo
from .errors import run_with_boundary
from .logs import command_logging

__all__ = ["COMMANDS", "demo_main", "export_onnx_main", "predict_main", "main"]

DEMO_EPILOG = """\
examples:
  clarity-demo                                   # synthetic data, CPU, about 9 minutes on 2 cores
  clarity-demo --quick --output-dir /tmp/demo    # a smoke run (under 2 minutes)
  clarity-demo --ablations all --ablation-seeds 0 1
                                                 # + 11 students, each as long as the default student
                                                 # (about 35 minutes in all on 2 cores)
  clarity-demo --data-dir /data/ChestX-ray14     # the same job on a real NIH ChestX-ray14 download
  accelerate launch -m clarity_hf demo --data-dir /data/ChestX-ray14 --preset clarity-s-16-512
                                                 # the paper's configuration on GPUs (training is distributed by
                                                 # Accelerate; evaluation and export run on the main process)
"""


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """An argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value


def build_demo_parser() -> argparse.ArgumentParser:
    defaults = DemoConfig()
    parser = argparse.ArgumentParser(
        prog="clarity-demo",
        description="Train a ConvNeXtV2 teacher and a CLARiTy student, evaluate them against Grad-CAM, CAM and "
        "plain-ViT attention baselines on the same data, write the report, figures and a Hub-ready model folder, "
        "and prove the folder reloads with trust_remote_code in a fresh process. No download: by default the data "
        "are the embedded synthetic chest X-ray benchmark.",
        epilog=DEMO_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--output-dir", default=defaults.output_dir, help="where everything is written (%(default)s)"
    )
    parser.add_argument(
        "--data-dir", default=None, help="a NIH ChestX-ray14 download (default: synthetic data)"
    )
    parser.add_argument(
        "--preset",
        default=defaults.preset,
        help="student preset: clarity-tiny (CPU demo, default), clarity-s-16-224 or clarity-s-16-512 (the paper's "
        "shipped training configs, GPUs)",
    )
    parser.add_argument("--quick", action="store_true", help="a tiny schedule for tests (< 2 minutes)")
    parser.add_argument(
        "--ablations",
        default=None,
        help=f"'none' (default), 'all' or a comma-separated list of {', '.join(ABLATIONS)}: each switch and the "
        "full model are trained on the full student schedule from every seed of --ablation-seeds (long: "
        "2 x (1 + switches) students by default)",
    )
    parser.add_argument(
        "--ablation-seeds",
        type=non_negative_int,
        nargs="+",
        default=None,
        help=f"training seeds of every ablation variant (default: {' '.join(map(str, defaults.ablation_seeds))})",
    )
    parser.add_argument(
        "--image-size",
        type=positive_int,
        default=None,
        help="input side (default: the preset's training config, 96 for clarity-tiny; 64 with --quick)",
    )
    for name in (
        "num-train",
        "num-validation",
        "num-test",
        "teacher-steps",
        "student-steps",
        "baseline-steps",
        "ablation-steps",
        "batch-size",
        "n-bootstrap",
    ):
        parser.add_argument(f"--{name}", type=positive_int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=non_negative_int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--learning-rate", type=positive_float, default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--per-class-thresholds",
        action="store_true",
        help="tune one heatmap threshold per class instead of one for all (for CLARiTy and every baseline alike)",
    )
    parser.add_argument("--no-reload-check", action="store_true", help="skip the fresh-process reload")
    return parser


def _demo(argv: Sequence[str] | None = None) -> int:
    """`clarity-demo`: see `clarity-demo --help`."""
    parser = build_demo_parser()
    args = parser.parse_args(argv)
    overrides = {"output_dir": args.output_dir, "data_dir": args.data_dir, "preset": args.preset}
    for key in (
        "image_size",
        "num_train",
        "num_validation",
        "num_test",
        "teacher_steps",
        "student_steps",
        "baseline_steps",
        "ablation_steps",
        "batch_size",
        "seed",
        "n_bootstrap",
        "learning_rate",
    ):
        value = getattr(args, key)
        if value is not None:
            overrides[key] = value
    if args.ablation_seeds is not None:
        overrides["ablation_seeds"] = list(dict.fromkeys(args.ablation_seeds))
    if args.ablations is not None:
        try:
            overrides["ablations"] = parse_ablations(args.ablations)
        except ValueError as err:
            parser.error(f"--ablations: {err}")
    overrides["reload_check"] = not args.no_reload_check
    overrides["per_class_thresholds"] = args.per_class_thresholds
    config = DemoConfig.quick_config(**overrides) if args.quick else DemoConfig(**overrides)
    result = run_demo(config)
    print(
        json.dumps(
            {
                "report_markdown": str(result.report_markdown),
                "report_json": str(result.report_json),
                "figures": [str(p) for p in result.figures],
                "model_dir": str(result.model_dir),
                "reload_ok": result.reload.get("ok"),
                "verdict_met": result.verdict["passed"],
                "seconds": result.timings.get("total"),
            },
            indent=2,
        )
    )
    return 0 if (result.reload.get("ok") is not False) else 1


def build_predict_parser() -> argparse.ArgumentParser:
    from .predict import build_parser

    return build_parser()


def demo_main(argv: Sequence[str] | None = None) -> int:
    """`clarity demo` / `clarity-demo`: see `clarity demo --help`."""
    return run_command("demo", argv)


def predict_main(argv: Sequence[str] | None = None) -> int:
    """`clarity predict` / `clarity-predict`: one image -> JSON + overlay, or files and folders -> a table."""
    return run_command("predict", argv)


def export_onnx_main(argv: Sequence[str] | None = None) -> int:
    """`clarity export-onnx MODEL --output FILE` (`clarity_hf.inference.onnx`)."""
    return run_command("export-onnx", argv)


# name -> (module in clarity_hf.commands with a `main(argv)`, one line for `clarity --help`)
COMMANDS = {
    "demo": ("cli", "train a teacher and a student on synthetic (or NIH) data, evaluate, export, reload"),
    "prepare": ("prepare", "build NIH ChestX-ray14 from a local download and cache it resized as Parquet"),
    "train": ("train", "train a CLARiTy student (or, with --model convnextv2, a teacher)"),
    "train-teacher": (
        "train_teacher",
        "train the ConvNeXtV2 teacher (train with --model convnextv2 enforced)",
    ),
    "cache-teacher-logits": (
        "cache_teacher_logits",
        "write a copy of a data set with a teacher_logits column",
    ),
    "evaluate": ("evaluate", "evaluate saved models on a data split: report.json, report.md, figures"),
    "predict": ("predict", "images, folders or archives -> scores, boxes, heatmaps (alias: clarity-predict)"),
    "export-onnx": ("export_onnx", "export a model folder to ONNX (pixel_values -> logits, heatmaps)"),
    "push": (
        "push",
        "export a trained model as a Hub folder with its card and upload it (--dry-run: only write)",
    ),
    "convert-dino": ("convert_dino", "convert DINO ViT-S/16 weights into a CLARiTy model folder"),
    "make-nih-rehearsal": (
        "make_nih_rehearsal",
        "write an NIH-shaped folder (real metadata, rendered pixels)",
    ),
    "rehearse": ("rehearse", "rehearse the real NIH path end to end with the installed commands"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        "usage: clarity <command> [options]   (also: python -m clarity_hf <command> ...)",
        "",
        "commands:",
        *(f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()),
        "",
        "`clarity <command> --help` shows the options of one command.",
    ]
    return "\n".join(lines)


def run_command(name: str, argv: Sequence[str] | None = None) -> int:
    """Run the command `name` with `argv` inside the error boundary, its progress logged to stderr."""
    with command_logging(f"clarity {name}"):
        if name == "demo":
            return run_with_boundary("clarity demo", _demo, argv)
        module = importlib.import_module(f"{__package__}.{COMMANDS[name][0]}")
        return run_with_boundary(f"clarity {name}", module.main, argv)


def main(argv: Sequence[str] | None = None) -> int:
    """`clarity <command> ...` / `python -m clarity_hf <command> ...`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if not argv or argv[0] not in COMMANDS:
        if argv:
            print(f"clarity: error: unknown command {argv[0]!r}", file=sys.stderr)
        print(usage(), file=sys.stderr)
        return 2
    return run_command(argv[0], argv[1:])
