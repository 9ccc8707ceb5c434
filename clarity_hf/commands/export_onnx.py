# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""`clarity export-onnx MODEL --output FILE [--opset N] [--check IMAGE ...]` (the export is
`clarity_hf.inference.onnx`)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import HfArgumentParser

from ..inference.onnx import (
    ONNX_EXTRA_HINT,
    OnnxExportError,
    check_opset,
    check_output,
    export_onnx,
    onnx_session,
    run_onnx,
)
from .arguments import parse_into_dataclass

__all__ = ["main"]


DESCRIPTION = (
    "Export a CLARiTy model folder (or Hub id) to ONNX: pixel_values -> logits, heatmaps, dynamic "
    f"batch. Needs `{ONNX_EXTRA_HINT}`."
)


@dataclass
class ExportOnnxArguments:
    """`clarity export-onnx` options (`HfArgumentParser`). `model` (positional) and `--check` (zero or more
    images: `HfArgumentParser` gives a list field nargs="+") are added to the parser by hand and filled in."""

    output: str = field(metadata={"help": "the .onnx file to write"})
    opset: int = field(default=18, metadata={"help": "ONNX opset (%(default)s)"})
    model: str = field(
        init=False,
        default="",
        metadata={"help": "a model folder (e.g. clarity-demo-output/model) or Hub repo id"},
    )
    check: list[str] = field(
        init=False,
        default_factory=list,
        metadata={"help": "images to run through PyTorch and onnxruntime; prints the largest differences"},
    )


def build_parser() -> HfArgumentParser:
    # argparse's own formatter: the help stays as it was (HfArgumentParser's default appends every default).
    parser = HfArgumentParser(
        ExportOnnxArguments,
        prog="clarity export-onnx",
        description=DESCRIPTION,
        formatter_class=argparse.HelpFormatter,
    )
    by_hand = ExportOnnxArguments.__dataclass_fields__
    parser.add_argument("model", help=by_hand["model"].metadata["help"])
    parser.add_argument(
        "--check", nargs="*", default=[], metavar="IMAGE", help=by_hand["check"].metadata["help"]
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> ExportOnnxArguments:
    return parse_into_dataclass(build_parser(), argv)


def main(argv: Sequence[str] | None = None) -> int:
    """`clarity export-onnx MODEL --output FILE [--check IMAGE ...]`: prints the file, its size and (with
    `--check`) the largest differences from PyTorch as JSON."""
    args = parse_args(argv)
    from ..loading import load_for_inference

    try:  # the options first: a wrong one fails in a second, not after loading the model
        check_opset(args.opset)
        check_output(Path(args.output))
    except ImportError as err:  # the onnx extra is missing: its message says what to install
        raise OnnxExportError(str(err)) from err
    pipe = load_for_inference(args.model)  # a bad folder raises InvalidModelFolderError naming it
    # The check images are read before the export: a bad one (ImageDecodeError naming it) leaves no .onnx behind.
    images = [str(p) for p in args.check]
    pixel_values = pipe.image_processor(images, return_tensors="pt")["pixel_values"] if images else None
    try:
        path = export_onnx(pipe.model, args.output, opset=args.opset)
    except ImportError as err:
        raise OnnxExportError(str(err)) from err
    report = {"onnx": str(path), "bytes": path.stat().st_size}
    if args.check:
        with torch.no_grad():
            expected = pipe.model(pixel_values=pixel_values)
        got = run_onnx(onnx_session(path), pixel_values.numpy())
        report["max_abs_difference"] = {
            "logits": float(np.abs(got["logits"] - expected.logits.numpy()).max()),
            "heatmaps": float(np.abs(got["heatmaps"] - expected.heatmaps.numpy()).max()),
        }
    print(json.dumps(report, indent=2))
    return 0
