# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""`clarity export-onnx MODEL --output FILE [--opset N] [--check IMAGE ...]` (`clarity_hf.inference.onnx`)."""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from ..inference.onnx import main as export_onnx

    return export_onnx(argv)
