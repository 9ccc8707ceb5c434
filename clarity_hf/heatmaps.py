# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Class heatmaps of CLARiTy: min-max normalisation, bilinear upsampling to the image's size and boxes from
connected components. The Hub image processor's post-processing and the localization evaluation both use these
functions, so evaluation and inference extract boxes identically.

This file is shipped with the Hub code files: it imports only numpy and torch (scipy lazily, for the boxes).
"""

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


def normalize_heatmaps(maps: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each (H, W) map of a (..., H, W) tensor to [0, 1]; a constant map, or one holding NaN or
    infinite values, becomes zeros (a model that produced non-finite heat localises nothing)."""
    low = maps.amin(dim=(-2, -1), keepdim=True)
    high = maps.amax(dim=(-2, -1), keepdim=True)
    span = high - low
    # NaN anywhere in a map makes its min / max NaN; an infinite end makes the span non-finite.
    flat = ~(torch.isfinite(low) & torch.isfinite(high) & (span > 1e-12))
    return torch.where(
        flat, torch.zeros_like(maps), (maps - low) / torch.where(flat, torch.ones_like(span), span)
    )


def normalize_heatmap(heatmap: np.ndarray) -> np.ndarray:
    """Min-max normalise one 2-D heatmap to [0, 1] (float32; numpy in, numpy out; see `normalize_heatmaps`)."""
    heatmap = np.ascontiguousarray(heatmap, dtype=np.float32)
    return normalize_heatmaps(torch.from_numpy(heatmap)).numpy()


def upsampled_normalized_heatmap(heatmap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One low-resolution (h, w) heatmap -> the same at `size` = (H, W), bilinear, min-max normalised (float32)."""
    tensor = torch.from_numpy(np.ascontiguousarray(heatmap, dtype=np.float32))
    if tuple(tensor.shape) != (int(size[0]), int(size[1])):
        tensor = upsample_heatmaps(tensor[None], size)[0]
    return normalize_heatmaps(tensor).numpy()


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


__all__ = [
    "heatmap_to_boxes",
    "normalize_heatmap",
    "normalize_heatmaps",
    "upsample_heatmaps",
    "upsampled_normalized_heatmap",
]
