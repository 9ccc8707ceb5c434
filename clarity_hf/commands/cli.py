# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""The `clarity` console script: `clarity <command> [options]`, one module per command in `clarity_hf/commands/`
(imported only when its command runs). `clarity-demo` and `clarity-predict` are aliases of `clarity demo` and
`clarity predict`; `python -m clarity_hf <command>` is the same entry point. Every command runs inside one error
boundary (`errors.py`): an expected failure prints one line and exits 2."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .errors import run_with_boundary
from .logs import command_logging

__all__ = ["COMMANDS", "demo_main", "export_onnx_main", "predict_main", "main"]


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
    "demo": ("demo", "train a teacher and a student on synthetic (or NIH) data, evaluate, export, reload"),
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
