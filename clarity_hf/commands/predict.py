# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""`clarity predict` (alias `clarity-predict`): one image -> JSON on stdout and an overlay PNG, or files and folders
-> a table (`--output-dir`, see `clarity_hf.inference.archive`). `--device` is checked first, so that a device this
machine lacks is one line, not a traceback from deep inside torch."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .errors import check_device

__all__ = ["build_parser", "main"]

EPILOG = """\
examples:
  clarity-predict chest.dcm --model clarity-demo-output/model                  # JSON on stdout + chest_overlay.png
  clarity-predict /archive/2024 more.dcm --model M --output-dir results/      # predictions.csv + errors.csv
  clarity-predict /archive --model M --output-dir results/ --heatmaps npz --overlays --parquet --num-workers 4
"""


def unit_interval(text: str) -> float:
    """argparse type: a finite number in [0, 1]."""
    from ..heatmaps import check_unit_interval

    try:
        return check_unit_interval(text, "the value")
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from err
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clarity-predict",
        description="Scores, boxes and heatmaps of chest X-rays (PNG, JPEG or DICOM, also without extension). One "
        "image: JSON on stdout and an overlay PNG. Files and folders with --output-dir: predictions.csv (a row per "
        "image: path, height, width, one probability column per class, boxes as JSON, heatmap and overlay files) "
        "and errors.csv (path, reason), resumable.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "paths", nargs="+", metavar="PATH", help="image files, folders (recursive) or DICOMDIRs"
    )
    parser.add_argument(
        "--model", required=True, help="a model folder (e.g. clarity-demo-output/model) or Hub id"
    )
    parser.add_argument(
        "--threshold",
        type=unit_interval,
        default=0.5,
        help="smallest box score kept, in [0, 1] (%(default)s)",
    )
    parser.add_argument(
        "--heatmap-threshold",
        type=unit_interval,
        default=None,
        help="threshold on the normalised heatmap, in [0, 1] (default: the processor's, tuned by the demo)",
    )
    one = parser.add_argument_group("one image")
    one.add_argument("--output", default=None, help="overlay PNG (default: <image stem>_overlay.png here)")
    many = parser.add_argument_group("archive (--output-dir)")
    many.add_argument("--output-dir", default=None, help="write the tables here (created; resumable)")
    many.add_argument(
        "--batch-size", type=_int_at_least(1), default=8, help="images per forward (%(default)s)"
    )
    many.add_argument(
        "--num-workers",
        type=_int_at_least(0),
        default=2,
        help="decoding processes (%(default)s; 0: in-process)",
    )
    many.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    many.add_argument("--bf16", action="store_true", help="run the model in bfloat16 autocast")
    many.add_argument(
        "--parquet", action="store_true", help="also write predictions.parquet and errors.parquet"
    )
    many.add_argument(
        "--heatmaps",
        choices=("npz", "png"),
        default=None,
        help="write each image's heatmaps (uint8, original size)",
    )
    many.add_argument(
        "--heatmap-classes", default=None, help="comma-separated classes for --heatmaps (default: all)"
    )
    many.add_argument(
        "--overlays", action="store_true", help="write an overlay PNG of the top class per image"
    )
    many.add_argument("--retry-errors", action="store_true", help="try the files of errors.csv again")
    many.add_argument("--overwrite", action="store_true", help="discard the folder's earlier results")
    many.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _fail(message: Any) -> int:
    print(f"clarity-predict: {message}", file=sys.stderr)
    return 2


def _checked_then_loaded(model: str, check_output: Callable[[], None], device: str | None = None):
    """The inference pipeline of `model`, loaded only after `check_output` (which raises `ValueError` for an
    output that cannot be written) passed, so that a bad output fails in a second, not after a model load; None
    (with the reason on stderr) when either fails."""
    from ..loading import load_for_inference

    try:
        check_output()
    except ValueError as err:
        _fail(err)
        return None
    try:
        return load_for_inference(model, device=device)
    except (OSError, ValueError) as err:
        _fail(f"cannot load model {model!r}: {err}")
        return None


def _predict_archive(args) -> int:
    from ..inference.archive import ArchiveOptions, check_output_dir, run_archive, summary_json

    pipe = _checked_then_loaded(args.model, lambda: check_output_dir(args.output_dir))
    if pipe is None:
        return 2
    options = ArchiveOptions(
        output_dir=args.output_dir,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        device=args.device,
        bf16=args.bf16,
        threshold=args.threshold,
        heatmap_threshold=args.heatmap_threshold,
        heatmaps=args.heatmaps,
        heatmap_classes=[c.strip() for c in args.heatmap_classes.split(",")]
        if args.heatmap_classes
        else None,
        overlays=args.overlays,
        parquet=args.parquet,
        retry_errors=args.retry_errors,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    from ..files import FolderInUseError

    try:
        summary = run_archive(
            args.paths, pipe.model, pipe.image_processor, options, model_name=str(args.model)
        )
    except (ValueError, FolderInUseError) as err:  # setup errors, a damaged or busy output folder
        return _fail(err)
    if summary.extra.get("process", 0) == 0:  # one summary (the main process's) for a sharded run
        print(summary_json(summary))
    if summary.extra.get("processes", 1) > 1:
        from ..distributed import close_processes, process_state

        close_processes(process_state())
    return 0


def _predict_one(args) -> int:
    """One image through the public inference pipeline (`load_for_inference`): the same scores and box records as
    `pipeline("chest-xray-localization", ...)`, the Space and the archive table."""
    import torch

    from ..inference.archive import check_output_dir
    from ..visualization import annotated_overlay, decode_for_display

    image_path = Path(args.paths[0])
    if not image_path.is_file():
        return _fail(f"{image_path}: no such file")
    output = Path(args.output) if args.output else Path(f"{image_path.stem}_overlay.png")

    def check_output() -> None:  # the folder must take a new file, an existing overlay must be replaceable
        check_output_dir(output.parent)
        if output.is_dir() or (output.exists() and not os.access(output, os.W_OK)):
            raise ValueError(f"cannot write {output}")

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe = _checked_then_loaded(args.model, check_output, device=device)
    if pipe is None:
        return 2
    try:
        with torch.autocast(device_type=pipe.device.type, dtype=torch.bfloat16, enabled=args.bf16):
            result = pipe(str(image_path), threshold=args.threshold, heatmap_threshold=args.heatmap_threshold)
        display = decode_for_display(pipe.image_processor, str(image_path))
    except ValueError as err:  # an unreadable image (ImageDecodeError names the file and the problem)
        return _fail(err)
    scores, boxes = result["scores"], result["boxes"]
    top = max(scores, key=scores.get)
    shown = [b for b in boxes if b["label"] == top]  # the caption names the top class: only its boxes
    heatmap = result["heatmaps"][list(scores).index(top)]
    annotated_overlay(display, heatmap, top, scores[top], args.threshold, shown).save(output, format="PNG")
    height, width = heatmap.shape
    print(
        json.dumps(
            {
                "image": str(image_path),
                "model": str(args.model),
                "original_size": {"width": width, "height": height},
                "scores": {k: round(float(v), 6) for k, v in scores.items()},
                "boxes": boxes,
                "overlay": str(output),
                "overlay_class": top,
                "threshold": args.threshold,
            },
            indent=2,
        )
    )
    return 0


def _device_option(argv: Sequence[str]) -> str | None:
    for index, item in enumerate(argv):
        if item == "--device" and index + 1 < len(argv):
            return argv[index + 1]
        if item.startswith("--device="):
            return item.split("=", 1)[1]
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """`clarity predict` / `clarity-predict`: see `clarity predict --help`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    check_device(_device_option(argv))
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.output_dir is not None:
        if args.output is not None:
            parser.error("--output is for one image; with --output-dir overlays go to OUTPUT_DIR/overlays")
        return _predict_archive(args)
    if len(args.paths) != 1 or Path(args.paths[0]).is_dir():
        parser.error("several paths or a folder need --output-dir (the table's folder)")
    return _predict_one(args)
