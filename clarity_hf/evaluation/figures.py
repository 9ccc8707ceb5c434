# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Overlay figures with PIL and numpy only (no matplotlib): heatmaps in a jet colormap alpha-blended on the X-ray,
predicted boxes in one colour and ground-truth boxes in another, one row per class and one column per image. The
drawing primitives (`jet_colormap`, `overlay_heatmap`, `draw_boxes`) live in `clarity_hf.visualization` and are
re-exported here.

Grid layout (all sizes in pixels): a header row of height `HEADER_HEIGHT` with the legend and the image ids, a
label column of width `LABEL_WIDTH` with the class names, then `tile_size` x `tile_size` tiles. The grid is therefore
`(LABEL_WIDTH + n_images * tile_size, HEADER_HEIGHT + n_classes * tile_size)` (width, height). Each tile holds the
image scaled to fit (aspect kept, centred on black). Predicted boxes come from
`clarity_hf.evaluation.localization.heatmap_boxes_in_frame`, the evaluation's own box extraction, in the image's
original frame, and are scaled with the image.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..configuration_clarity import NIH_BOXED_PATHOLOGIES, NIH_PATHOLOGIES
from ..image_processing_clarity import normalize_heatmap, upsample_heatmaps
from ..visualization import draw_boxes, jet_colormap, overlay_heatmap
from .localization import LABEL_ALIASES, ThresholdSpec, heatmap_boxes_in_frame, threshold_levels, xywh_to_xyxy

__all__ = [
    "PRED_COLOR",
    "GT_COLOR",
    "LABEL_WIDTH",
    "HEADER_HEIGHT",
    "jet_colormap",
    "overlay_heatmap",
    "draw_boxes",
    "overlay_grid",
    "save_overlay_grid",
]

PRED_COLOR: tuple[int, int, int] = (255, 0, 255)  # magenta: not in the jet colormap
GT_COLOR: tuple[int, int, int] = (0, 255, 0)  # lime
LABEL_WIDTH = 112
HEADER_HEIGHT = 18
_BACKGROUND = (24, 24, 24)
_TEXT = (235, 235, 235)


def _to_rgb(image: Image.Image | np.ndarray) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = (
            normalize_heatmap(array.astype(np.float32)) if array.ndim == 2 else array / max(array.max(), 1)
        )
        array = np.round(np.asarray(array) * 255).astype(np.uint8)
    return Image.fromarray(array).convert("RGB")


def _overlay_normalized(image: Image.Image, heatmap: np.ndarray, alpha: float) -> Image.Image:
    """The grid's overlay: the (h, w) heatmap upsampled bilinearly (as the model's heatmaps are) to the image's size
    and min-max normalised, blended with constant opacity `alpha` by [`overlay_heatmap`]."""
    heat = torch.as_tensor(np.asarray(heatmap, dtype=np.float32))
    heat = upsample_heatmaps(heat[None], (image.height, image.width))[0].numpy()
    return overlay_heatmap(image, normalize_heatmap(heat), alpha=alpha, weighted_alpha=False)


def _fit(size: tuple[int, int], tile_size: int) -> tuple[float, int, int, int, int]:
    """(height, width) -> scale, scaled width, scaled height, x offset, y offset inside a square tile."""
    height, width = size
    scale = tile_size / max(height, width)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    return scale, new_w, new_h, (tile_size - new_w) // 2, (tile_size - new_h) // 2


def _gt_boxes_of(boxes: Iterable[Mapping[str, Any]], name: str) -> np.ndarray:
    rows = [
        [b["x"], b["y"], b["w"], b["h"]] for b in boxes if LABEL_ALIASES.get(b["label"], b["label"]) == name
    ]
    return xywh_to_xyxy(np.asarray(rows, dtype=np.float64)) if rows else np.zeros((0, 4))


def overlay_grid(
    images: Sequence[Image.Image | np.ndarray],
    heatmaps: Sequence[np.ndarray | torch.Tensor],
    boxes: Sequence[Iterable[Mapping[str, Any]]] | None = None,
    class_names: Sequence[str] = NIH_PATHOLOGIES,
    classes: Sequence[str] = NIH_BOXED_PATHOLOGIES,
    threshold: ThresholdSpec = 0.5,
    tile_size: int = 192,
    alpha: float = 0.45,
    image_ids: Sequence[str] | None = None,
) -> Image.Image:
    """Grid of heatmap overlays: one row per class of `classes`, one column per image.

    Args:
        images: the original images (PIL or arrays); their size is the frame of `boxes` and of the predicted boxes.
        heatmaps: per image, (len(class_names), h, w) heatmaps in `class_names` order (any resolution).
        boxes: per image, ground-truth boxes as dicts {label, x, y, w, h} in the original frame (or None).
        class_names: channel order of the heatmaps; classes: the rows to draw.
        threshold: heatmap threshold for the predicted boxes (a float, per-class mapping, levels or "wang2017").
        tile_size: side of each square tile in pixels.
        alpha: heatmap opacity.
        image_ids: column titles (default: the column index).
    """
    if len(images) != len(heatmaps):
        raise ValueError(f"{len(images)} images and {len(heatmaps)} heatmaps")
    class_names, classes = list(class_names), list(classes)
    levels = threshold_levels(threshold, classes)
    boxes = boxes if boxes is not None else [[] for _ in images]
    image_ids = [str(i) for i in (image_ids if image_ids is not None else range(len(images)))]
    grid = Image.new(
        "RGB", (LABEL_WIDTH + len(images) * tile_size, HEADER_HEIGHT + len(classes) * tile_size), _BACKGROUND
    )
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default()
    draw.text((4, 3), "pred", fill=PRED_COLOR, font=font)
    draw.text((40, 3), "GT", fill=GT_COLOR, font=font)
    for row, name in enumerate(classes):
        draw.text((4, HEADER_HEIGHT + row * tile_size + 4), name[: LABEL_WIDTH // 6], fill=_TEXT, font=font)
    for col, (image, heatmap) in enumerate(zip(images, heatmaps)):
        base = _to_rgb(image)
        heatmap = (
            heatmap.detach().float().cpu().numpy()
            if isinstance(heatmap, torch.Tensor)
            else np.asarray(heatmap)
        )
        frame = (base.height, base.width)
        scale, new_w, new_h, off_x, off_y = _fit(frame, tile_size)
        small = base.resize((new_w, new_h), Image.BILINEAR)
        x0 = LABEL_WIDTH + col * tile_size
        draw.text((x0 + 4, 3), image_ids[col][: tile_size // 6], fill=_TEXT, font=font)
        for row, name in enumerate(classes):
            channel = heatmap[class_names.index(name)]
            tile = Image.new("RGB", (tile_size, tile_size), (0, 0, 0))
            tile.paste(_overlay_normalized(small, channel, alpha), (off_x, off_y))
            predicted = heatmap_boxes_in_frame(channel, frame, levels[row])
            draw_boxes(
                tile, _gt_boxes_of(boxes[col], name), GT_COLOR, "GT", scale=scale, offset=(off_x, off_y)
            )
            draw_boxes(tile, predicted, PRED_COLOR, None, scale=scale, offset=(off_x, off_y))
            grid.paste(tile, (x0, HEADER_HEIGHT + row * tile_size))
    return grid


def save_overlay_grid(path: str | Path, *args: Any, **kwargs: Any) -> Path:
    """[`overlay_grid`] written to `path` as PNG; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    overlay_grid(*args, **kwargs).save(path, format="PNG")
    return path
