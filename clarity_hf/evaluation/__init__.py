# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Evaluation of CLARiTy models: AUROC with bootstrap intervals, the weakly-supervised localization protocol, reports
and overlay figures. The same metrics load offline as `evaluate` modules from `metric_path(...)`."""

from pathlib import Path

from .classification import AurocResult, auroc_per_class, bootstrap_auroc, compute_auroc
from .figures import overlay_grid, overlay_heatmap, save_overlay_grid
from .localization import (
    DEFAULT_THRESHOLD_GRID,
    IOBB_THRESHOLDS,
    IOU_THRESHOLDS,
    WANG2017_THRESHOLDS,
    LocalizationEvaluator,
    LocalizationResult,
    TuningResult,
    box_iobb,
    box_iou,
    heatmap_boxes_in_frame,
    xywh_to_xyxy,
)
from .report import PUBLISHED_RESULTS, build_report, load_report, render_markdown, write_report

METRICS_DIR = Path(__file__).resolve().parent / "metrics"


def metric_path(name: str = "clarity_localization") -> str:
    """Local folder of a bundled `evaluate` metric ("clarity_localization" or "clarity_auroc"), for
    `evaluate.load(metric_path(...))`, which works offline."""
    path = METRICS_DIR / name
    if not (path / f"{name}.py").is_file():
        raise ValueError(
            f"no bundled metric {name!r}; available: {sorted(p.name for p in METRICS_DIR.iterdir())}"
        )
    return str(path)


__all__ = [
    "AurocResult",
    "auroc_per_class",
    "bootstrap_auroc",
    "compute_auroc",
    "DEFAULT_THRESHOLD_GRID",
    "IOBB_THRESHOLDS",
    "IOU_THRESHOLDS",
    "WANG2017_THRESHOLDS",
    "LocalizationEvaluator",
    "LocalizationResult",
    "TuningResult",
    "box_iobb",
    "box_iou",
    "heatmap_boxes_in_frame",
    "xywh_to_xyxy",
    "overlay_grid",
    "overlay_heatmap",
    "save_overlay_grid",
    "PUBLISHED_RESULTS",
    "build_report",
    "load_report",
    "render_markdown",
    "write_report",
    "metric_path",
    "METRICS_DIR",
]
