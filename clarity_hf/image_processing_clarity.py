# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Image processor for CLARiTy: chest X-ray files in, pixel_values out; logits / heatmaps in, scores, heatmaps and
boxes out. Imports only numpy, PIL, torch and transformers (scipy and pydicom lazily, where used)."""

import numpy as np
import torch


def _require_scipy_ndimage():
    try:
        from scipy import ndimage
    except ImportError as err:  # pragma: no cover - scipy is a dependency of clarity_hf
        raise ImportError("heatmap-to-box conversion needs scipy: `pip install scipy`") from err
    return ndimage


def upsample_heatmaps(heatmaps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, C, h, w) or (C, h, w) heatmaps -> the same at `size` = (H, W), bilinear, in float32."""
    squeeze = heatmaps.dim() == 3
    if squeeze:
        heatmaps = heatmaps[None]
    out = torch.nn.functional.interpolate(
        heatmaps.float(), size=(int(size[0]), int(size[1])), mode="bilinear", align_corners=False
    )
    return out[0] if squeeze else out


def normalize_heatmap(heatmap: np.ndarray) -> np.ndarray:
    """Min-max normalise one 2-D heatmap to [0, 1]; a constant map becomes all zeros."""
    heatmap = np.asarray(heatmap, dtype=np.float32)
    low, high = float(heatmap.min()), float(heatmap.max())
    if not np.isfinite(low) or not np.isfinite(high) or high - low <= 1e-12:
        return np.zeros_like(heatmap)
    return (heatmap - low) / (high - low)


def heatmap_to_boxes(heatmap: np.ndarray, threshold: float, normalize: bool = True, min_area: int = 1):
    """One 2-D heatmap -> boxes of its connected components above `threshold`.

    The map is min-max normalised to [0, 1] first (unless `normalize=False`), thresholded (`>= threshold`), and
    split into 8-connected components (scipy.ndimage.label). Returns `boxes` (K, 4) float32 xyxy in the map's pixel
    frame (x1, y1 exclusive, so a one-pixel component at (x, y) is (x, y, x + 1, y + 1)) and `scores` (K,) float32,
    the peak normalised value inside each component; components are sorted by score, highest first.
    """
    ndimage = _require_scipy_ndimage()
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.ndim != 2:
        raise ValueError(f"heatmap_to_boxes expects a 2-D heatmap, got shape {heatmap.shape}")
    values = normalize_heatmap(heatmap) if normalize else heatmap
    mask = values >= threshold
    if not mask.any() or (normalize and values.max() <= 0):
        return np.zeros((0, 4), dtype=np.float32), np.zeros((0,), dtype=np.float32)
    labeled, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    indices = np.arange(1, count + 1)
    areas = np.bincount(labeled.ravel(), minlength=count + 1)[1:]
    peaks = ndimage.maximum(values, labels=labeled, index=indices)
    boxes, scores = [], []
    for region, area, peak in zip(ndimage.find_objects(labeled), areas, np.atleast_1d(peaks)):
        if region is None or area < min_area:
            continue
        ys, xs = region
        boxes.append((xs.start, ys.start, xs.stop, ys.stop))
        scores.append(float(peak))
    if not boxes:
        return np.zeros((0, 4), dtype=np.float32), np.zeros((0,), dtype=np.float32)
    order = np.argsort(-np.asarray(scores), kind="stable")
    return np.asarray(boxes, dtype=np.float32)[order], np.asarray(scores, dtype=np.float32)[order]
