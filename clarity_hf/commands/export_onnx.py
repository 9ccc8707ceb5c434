# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""`clarity export-onnx MODEL --output FILE [--opset N] [--check IMAGE ...]` (the export is
`clarity_hf.inference.onnx`)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..inference.onnx import (
    ONNX_EXTRA_HINT,
    OnnxExportError,
    check_opset,
    check_output,
    export_onnx,
    onnx_session,
    run_onnx,
)

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """`clarity export-onnx MODEL --output FILE [--check IMAGE ...]`: prints the file, its size and (with
    `--check`) the largest differences from PyTorch as JSON."""
    parser = argparse.ArgumentParser(
        prog="clarity export-onnx",
        description="Export a CLARiTy model folder (or Hub id) to ONNX: pixel_values -> logits, heatmaps, dynamic "
        f"batch. Needs `{ONNX_EXTRA_HINT}`.",
    )
    parser.add_argument("model", help="a model folder (e.g. clarity-demo-output/model) or Hub repo id")
    parser.add_argument("--output", required=True, help="the .onnx file to write")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (%(default)s)")
    parser.add_argument(
        "--check",
        nargs="*",
        default=[],
        metavar="IMAGE",
        help="images to run through PyTorch and onnxruntime; prints the largest differences",
    )
    args = parser.parse_args(argv)
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
