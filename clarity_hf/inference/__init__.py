# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Inference at archive scale: folders and DICOM trees to a table of scores, boxes and heatmaps
(`clarity-predict PATH... --output-dir OUT`, [`run_archive`]), and ONNX export ([`export_onnx`]).

Nothing here is a Hub code file: these modules may use tqdm, pyarrow and onnx(runtime) (lazily, where used).
"""

from .archive import ArchiveOptions, ArchiveSummary, run_archive
from .discovery import find_images

__all__ = ["ArchiveOptions", "ArchiveSummary", "find_images", "run_archive"]
