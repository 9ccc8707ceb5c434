# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Decoding for archive runs: a map-style dataset over file paths that decodes and preprocesses in DataLoader
workers through the model's image processor, and a collate function that turns a bad file into an error record.

An item is never an exception: a file that cannot be read (corrupt, empty, not an image, a compressed DICOM
without its decoder, ...) becomes `{"path", "error"}` with the reader's message, so one bad file never stops a
run or a batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..xray_io import load_unit_gray, resolve_max_image_pixels

__all__ = ["ArchiveDataset", "collate_archive", "decode_unit_gray"]


def decode_unit_gray(processor, path: str | Path) -> np.ndarray:
    """A file -> the (H, W) float32 grayscale image the processor sees before resizing (in [0, 1] when it
    rescales), read by the processor's own reader with its settings (DICOM windowing, MONOCHROME1 inversion,
    bit-depth scaling)."""
    max_image_pixels = resolve_max_image_pixels(getattr(processor, "max_image_pixels", None))
    return load_unit_gray(
        str(path), 0, processor.do_rescale, processor.intensity_scaling, max_image_pixels, dtype=np.float32
    )


class ArchiveDataset(Dataset):
    """Paths -> preprocessed items.

    Each item is `{"path": str, "pixel_values": (3, S, S) float32 tensor, "original_size": (H, W),
    "display": (H, W) uint8 array or None}`, or `{"path": str, "error": str}` for a file that cannot be read.
    `with_display=True` keeps the decoded 8-bit image at its original size (for overlays); the file is decoded once
    either way.
    """

    def __init__(self, paths: Sequence[str | Path], processor, with_display: bool = False):
        self.paths = [str(p) for p in paths]
        self.processor = processor
        self.with_display = with_display

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        path = self.paths[index]
        try:
            gray = decode_unit_gray(self.processor, path)
            # The decoded image is already scaled: the processor's rescaling leaves it as it is (bit_depth keeps
            # floats in [0, 1], minmax of a min-max scaled image is itself), then resizes and normalises as always.
            pixel_values = self.processor(images=gray, return_tensors="np")["pixel_values"][0]
        except Exception as err:  # noqa: BLE001 - any reader failure is this file's error, never the run's
            message = str(err) if isinstance(err, ValueError) else f"{type(err).__name__}: {err}"
            return {"path": path, "error": message or type(err).__name__}
        display = None
        if self.with_display:
            display = np.round(np.clip(gray, 0.0, 1.0) * 255.0).astype(np.uint8)
        return {
            "path": path,
            "pixel_values": torch.from_numpy(np.ascontiguousarray(pixel_values, dtype=np.float32)),
            "original_size": (int(gray.shape[0]), int(gray.shape[1])),
            "display": display,
        }


def collate_archive(items: Sequence[dict]) -> dict:
    """A list of items -> `{"paths", "pixel_values" (B, 3, S, S) or None, "original_sizes", "displays",
    "errors": [(path, reason), ...]}`; the good items keep their order."""
    good = [item for item in items if "error" not in item]
    return {
        "paths": [item["path"] for item in good],
        "pixel_values": torch.stack([item["pixel_values"] for item in good]) if good else None,
        "original_sizes": [item["original_size"] for item in good],
        "displays": [item["display"] for item in good],
        "errors": [(item["path"], item["error"]) for item in items if "error" in item],
    }
