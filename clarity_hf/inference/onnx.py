# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""ONNX export of a CLARiTy model: `pixel_values` (batch, 3, S, S) in, `logits` (batch, C) and `heatmaps`
(batch, C, h, w) out, with a dynamic batch axis.

    python -m clarity_hf export-onnx MODEL_DIR --output clarity.onnx [--check IMAGE ...]

Needs the `onnx` extra (`pip install "clarity_hf[onnx]"`: onnx, onnxscript for torch's exporter, onnxruntime to
check and run it). The class names, the input size and how logits become scores are stored in the file's metadata
(`id2label`, `image_size`, `problem_type` and `score_function`: sigmoid, softmax or identity), so a runtime needs
only the processor's preprocessing (or `preprocessor_config.json`) beside it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..image_processing_clarity import score_function

__all__ = ["OnnxExportError", "check_opset", "check_output", "export_onnx", "onnx_session", "run_onnx"]

ONNX_EXTRA_HINT = 'pip install "clarity_hf[onnx]"'
INPUT_NAME = "pixel_values"
OUTPUT_NAMES = ("logits", "heatmaps")
# torch's exporter implements its ops from opset 18 on; below, its version converter may fail and silently keep 18
MIN_OPSET = 18


class OnnxExportError(ValueError):
    """The export cannot be done as asked (an opset out of range, an output that cannot be written); the message
    names the option or the file."""


def check_opset(opset) -> int:
    """`opset` as an int in [MIN_OPSET, the newest opset the installed onnx knows]; else `OnnxExportError`."""
    onnx = _require("onnx")
    newest = int(onnx.defs.onnx_opset_version())
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise OnnxExportError(
            f"--opset {opset!r} is not supported: torch's exporter writes opsets {MIN_OPSET} to {newest} (the newest "
            f"this onnx {onnx.__version__} knows)"
        )
    return opset


def check_output(output: Path) -> None:
    """The .onnx target can be written: its folder exists (made) and takes a file, and it is not a folder."""
    from ..files import writable_folder

    if output.is_dir():
        raise OnnxExportError(f"--output {str(output)!r} is a folder; give a file name such as model.onnx")
    try:
        writable_folder(output.parent, "--output folder")
    except ValueError as err:
        raise OnnxExportError(str(err)) from err


def _require(module: str):
    try:
        return __import__(module)
    except ImportError as err:
        raise ImportError(f"ONNX export and inference need {module}: `{ONNX_EXTRA_HINT}`") from err


class _LogitsAndHeatmaps(torch.nn.Module):
    """The model's forward as a plain (logits, heatmaps) tuple, the two outputs of the ONNX graph."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = self.model(pixel_values=pixel_values)
        return outputs.logits, outputs.heatmaps


def export_onnx(model, output: str | Path, opset: int = 18, batch_size: int = 2) -> Path:
    """Export `model` (a `ClarityForMultiLabelLocalization`, or a model folder) to `output` with torch's exporter
    (`torch.onnx.export(..., dynamo=True)`) and check the graph with `onnx.checker`. Returns the path."""
    onnx = _require("onnx")
    _require("onnxscript")
    if isinstance(model, (str, Path)):
        from ..loading import load_for_inference

        model = load_for_inference(model).model
    opset = check_opset(opset)
    output = Path(output)
    check_output(output)
    model = model.eval().float().cpu()
    size = int(model.config.image_size)
    example = torch.zeros(batch_size, 3, size, size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.onnx.export(
        _LogitsAndHeatmaps(model).eval(),
        (example,),
        input_names=[INPUT_NAME],
        output_names=list(OUTPUT_NAMES),
        dynamic_shapes=({0: batch},),
        opset_version=opset,
        dynamo=True,
        verbose=False,
    )
    from ..files import atomic_output

    try:  # the file is written beside the target and renamed: a full disk leaves no truncated .onnx
        with atomic_output(output) as temporary:
            program.save(str(temporary))
            proto = onnx.load(str(temporary))
            onnx.checker.check_model(proto)
            written = {entry.domain: entry.version for entry in proto.opset_import}.get("", None)
            if written != opset:
                raise OnnxExportError(f"--opset {opset}: the exporter wrote opset {written} instead")
            metadata = {
                "id2label": json.dumps({str(k): v for k, v in model.config.id2label.items()}),
                # How a consumer turns the `logits` output into scores: the same function as every other path.
                "problem_type": str(model.config.problem_type),
                "score_function": score_function(model.config.problem_type),
                "image_size": str(size),
                "producer": "clarity_hf",
            }
            for key, value in metadata.items():
                entry = proto.metadata_props.add()
                entry.key, entry.value = key, value
            onnx.save(proto, str(temporary))
    except OSError as err:
        raise OnnxExportError(
            f"cannot write {output} ({err.strerror or err}); nothing was left there"
        ) from err
    return output


def onnx_session(path: str | Path, threads: int | None = None):
    """An onnxruntime CPU session for an exported file."""
    ort = _require("onnxruntime")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def run_onnx(session, pixel_values) -> dict[str, np.ndarray]:
    """`pixel_values` (B, 3, S, S) -> {"logits", "heatmaps"} as numpy arrays."""
    pixel_values = np.ascontiguousarray(np.asarray(pixel_values, dtype=np.float32))
    return dict(zip(OUTPUT_NAMES, session.run(list(OUTPUT_NAMES), {INPUT_NAME: pixel_values})))
