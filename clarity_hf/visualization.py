# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Heatmap overlays with boxes on chest X-rays (numpy + PIL only, no matplotlib).

Used by the demo Space and reusable by evaluation figures: `overlay_heatmap(image, heatmap, boxes)` blends a
colour-mapped heatmap over the grayscale X-ray at the X-ray's own size and draws the boxes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["decode_for_display", "jet_colormap", "overlay_heatmap"]


def jet_colormap(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] of any shape -> uint8 RGB of shape (*values.shape, 3), the classic 'jet' map."""
    values = np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0)
    red = np.clip(1.5 - np.abs(4.0 * values - 3.0), 0.0, 1.0)
    green = np.clip(1.5 - np.abs(4.0 * values - 2.0), 0.0, 1.0)
    blue = np.clip(1.5 - np.abs(4.0 * values - 1.0), 0.0, 1.0)
    return np.round(np.stack([red, green, blue], axis=-1) * 255).astype(np.uint8)


def decode_for_display(image_processor, image) -> Image.Image:
    """Any input the `ClarityImageProcessor` reads (PNG/JPEG/DICOM path, PIL image, array) -> the 8-bit grayscale
    image the model sees before resizing and normalisation, at its original size (DICOM windowing, MONOCHROME1
    inversion and bit-depth scaling exactly as the processor applies them)."""
    pixels = image_processor(images=image, do_resize=False, do_normalize=False, return_tensors="np")["pixel_values"]
    gray = np.clip(np.asarray(pixels[0, 0], dtype=np.float32), 0.0, 1.0)
    return Image.fromarray(np.round(gray * 255).astype(np.uint8), mode="L")


def _box_coordinates(box) -> tuple[float, float, float, float]:
    if isinstance(box, dict):
        box = box.get("box", box)
        return float(box["xmin"]), float(box["ymin"]), float(box["xmax"]), float(box["ymax"])
    x0, y0, x1, y1 = (float(v) for v in box)
    return x0, y0, x1, y1


def overlay_heatmap(
    image: Image.Image | np.ndarray,
    heatmap: np.ndarray,
    boxes: Iterable[dict | Sequence[float]] = (),
    alpha: float = 0.45,
    box_color: tuple[int, int, int] = (0, 255, 0),
    line_width: int | None = None,
) -> Image.Image:
    """Blend `heatmap` (H', W') in [0, 1] over `image` and draw `boxes` (xyxy in the image's pixels, or the
    pipeline's {"box": {"xmin", ...}} dicts). The heatmap is resized (bilinear) to the image when sizes differ;
    where it is 0 the X-ray shows through unchanged. Returns an RGB image of the input image's size."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    base = image.convert("RGB")
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.ndim != 2:
        raise ValueError(f"overlay_heatmap expects a 2-D heatmap, got shape {heatmap.shape}")
    if heatmap.shape != (base.height, base.width):
        heatmap = np.asarray(
            Image.fromarray(heatmap, mode="F").resize((base.width, base.height), Image.BILINEAR), dtype=np.float32
        )
    heatmap = np.clip(np.nan_to_num(heatmap), 0.0, 1.0)
    weight = (alpha * heatmap)[..., None]
    blended = (1.0 - weight) * np.asarray(base, dtype=np.float32) + weight * jet_colormap(heatmap)
    result = Image.fromarray(np.round(blended).astype(np.uint8), mode="RGB")
    draw = ImageDraw.Draw(result)
    width = line_width or max(1, round(min(base.size) / 200))
    for box in boxes:
        x0, y0, x1, y1 = _box_coordinates(box)
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=box_color, width=width)
    return result
