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

[`prediction_figure`] shows what the model *says*: one row per image, the classes whose probability reaches their
operating threshold (chosen on validation, e.g. `youden_thresholds`) with their boxes and probabilities, the ground
truth beside it, and every class listed as claimed or not and present or absent. A class under its operating
threshold gets no box, whatever its heatmap looks like.
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
    "CLASS_COLORS",
    "prediction_figure",
    "save_prediction_figure",
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
            computed = not np.isnan(channel).all()  # a baseline's map that no metric read is not computed
            tile.paste(_overlay_normalized(small, channel, alpha) if computed else small, (off_x, off_y))
            if not computed:
                ImageDraw.Draw(tile).text((4, tile_size - 14), "map not computed", fill=_TEXT, font=font)
            predicted = heatmap_boxes_in_frame(channel, frame, levels[row]) if computed else np.zeros((0, 4))
            draw_boxes(
                tile, _gt_boxes_of(boxes[col], name), GT_COLOR, "GT", scale=scale, offset=(off_x, off_y)
            )
            draw_boxes(tile, predicted, PRED_COLOR, None, scale=scale, offset=(off_x, off_y))
            grid.paste(tile, (x0, HEADER_HEIGHT + row * tile_size))
    return grid


# One colour per class in the prediction figure (the first eight are the NIH boxed classes' order), none grey.
CLASS_COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 64, 64),
    (64, 160, 255),
    (255, 200, 0),
    (0, 220, 120),
    (255, 0, 255),
    (0, 230, 230),
    (255, 128, 0),
    (170, 110, 255),
)
_ABSENT = (120, 120, 120)
_TEXT_WIDTH = 260


def prediction_figure(
    images: Sequence[Image.Image | np.ndarray],
    probabilities: Sequence[np.ndarray],
    heatmaps: Sequence[np.ndarray | torch.Tensor],
    boxes: Sequence[Iterable[Mapping[str, Any]]],
    operating_thresholds: Mapping[str, float],
    class_names: Sequence[str] = NIH_PATHOLOGIES,
    classes: Sequence[str] = NIH_BOXED_PATHOLOGIES,
    threshold: ThresholdSpec = 0.5,
    tile_size: int = 192,
    image_ids: Sequence[str] | None = None,
    method: str = "model",
) -> Image.Image:
    """One row per image: [the model's claims | the ground truth | every class of `classes` with its probability].

    Args:
        images: the original images (the frame of the boxes).
        probabilities: per image, (len(class_names),) class probabilities.
        heatmaps: per image, (len(class_names), h, w) heatmaps.
        boxes: per image, ground-truth boxes {label, x, y, w, h} in the original frame.
        operating_thresholds: class -> probability from which the model claims the class (one per class of
            `classes`); only claimed classes get boxes, from their heatmap at `threshold`.
        threshold: the heatmap threshold(s) of the box extraction (as in [`overlay_grid`]).
    """
    if not len(images) == len(probabilities) == len(heatmaps) == len(boxes):
        raise ValueError(
            f"{len(images)} images, {len(probabilities)} probability rows, {len(heatmaps)} heatmaps, {len(boxes)} box lists"
        )
    class_names, classes = list(class_names), list(classes)
    missing = [name for name in classes if name not in operating_thresholds]
    if missing:
        raise ValueError(f"no operating threshold for {missing}")
    levels = threshold_levels(threshold, classes)
    image_ids = [str(i) for i in (image_ids if image_ids is not None else range(len(images)))]
    colors = {name: CLASS_COLORS[i % len(CLASS_COLORS)] for i, name in enumerate(classes)}
    width = 2 * tile_size + _TEXT_WIDTH
    figure = Image.new("RGB", (width, HEADER_HEIGHT + len(images) * tile_size), _BACKGROUND)
    draw = ImageDraw.Draw(figure)
    font = ImageFont.load_default()
    draw.text((4, 3), f"{method}: claims"[: tile_size // 6], fill=_TEXT, font=font)
    draw.text((tile_size + 4, 3), "ground truth", fill=GT_COLOR, font=font)
    draw.text((2 * tile_size + 4, 3), "class: p / threshold, claimed?, GT", fill=_TEXT, font=font)
    for row, image in enumerate(images):
        base = _to_rgb(image)
        frame = (base.height, base.width)
        scale, new_w, new_h, off_x, off_y = _fit(frame, tile_size)
        small = base.resize((new_w, new_h), Image.BILINEAR)
        heatmap = heatmaps[row]
        heatmap = (
            heatmap.detach().float().cpu().numpy()
            if isinstance(heatmap, torch.Tensor)
            else np.asarray(heatmap)
        )
        probs = np.asarray(probabilities[row], dtype=np.float64)
        model_tile = Image.new("RGB", (tile_size, tile_size), (0, 0, 0))
        model_tile.paste(small, (off_x, off_y))
        truth_tile = model_tile.copy()
        top = HEADER_HEIGHT + row * tile_size
        lines = [(image_ids[row][: _TEXT_WIDTH // 6], _TEXT)]
        for c, name in enumerate(classes):
            p = float(probs[class_names.index(name)])
            claimed = p >= float(operating_thresholds[name])
            gt = _gt_boxes_of(boxes[row], name)
            if claimed:
                predicted = heatmap_boxes_in_frame(heatmap[class_names.index(name)], frame, levels[c])
                # The largest box carries the label (class and probability); the others only the colour.
                order = np.argsort(-(predicted[:, 2] - predicted[:, 0]) * (predicted[:, 3] - predicted[:, 1]))
                predicted = predicted[order]
                fit = {"scale": scale, "offset": (off_x, off_y)}
                draw_boxes(model_tile, predicted[:1], colors[name], f"{name[:4]} {p:.2f}", **fit)
                if len(predicted) > 1:
                    draw_boxes(model_tile, predicted[1:], colors[name], None, **fit)
            if len(gt):
                draw_boxes(truth_tile, gt, colors[name], name[:4], scale=scale, offset=(off_x, off_y))
            status = "claimed" if claimed else "-"
            truth = "present" if len(gt) else "absent"
            lines.append(
                (
                    f"{name[:14]:<14} {p:.2f}/{float(operating_thresholds[name]):.2f} {status:<7} {truth}",
                    colors[name] if claimed or len(gt) else _ABSENT,
                )
            )
        figure.paste(model_tile, (0, top))
        figure.paste(truth_tile, (tile_size, top))
        for i, (text, color) in enumerate(lines):
            draw.text((2 * tile_size + 4, top + 4 + 12 * i), text, fill=color, font=font)
    return figure


def save_prediction_figure(path: str | Path, *args: Any, **kwargs: Any) -> Path:
    """[`prediction_figure`] written to `path` as PNG; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prediction_figure(*args, **kwargs).save(path, format="PNG")
    return path


def save_overlay_grid(path: str | Path, *args: Any, **kwargs: Any) -> Path:
    """[`overlay_grid`] written to `path` as PNG; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    overlay_grid(*args, **kwargs).save(path, format="PNG")
    return path
