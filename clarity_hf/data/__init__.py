# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Chest X-ray data for clarity_hf: NIH ChestX-ray14, generic sources, a synthetic benchmark, transforms, a cache.

Every builder returns the same features (`clarity_features`); see `clarity_hf.data.features` for the schema.
"""

from .cache import build_cache, load_cache, resize_for_cache
from .chestxray14 import build_chestxray14
from .features import (
    BuildReport,
    clarity_features,
    get_box_frame,
    get_build_report,
    get_label_names,
    get_metadata,
    stratified_group_split,
)
from .generic import load_coco_dataset, load_csv_dataset, load_image_folder
from .synthetic import build_synthetic_cxr, render_synthetic_cxr
from .transforms import (
    ClarityCollator,
    ClarityTransform,
    collate_fn,
    eval_transform,
    train_transform,
    with_clarity_transform,
)

__all__ = [
    "BuildReport",
    "ClarityCollator",
    "ClarityTransform",
    "build_cache",
    "build_chestxray14",
    "build_synthetic_cxr",
    "clarity_features",
    "collate_fn",
    "eval_transform",
    "get_box_frame",
    "get_build_report",
    "get_label_names",
    "get_metadata",
    "load_cache",
    "load_coco_dataset",
    "load_csv_dataset",
    "load_image_folder",
    "render_synthetic_cxr",
    "resize_for_cache",
    "stratified_group_split",
    "train_transform",
    "with_clarity_transform",
]
