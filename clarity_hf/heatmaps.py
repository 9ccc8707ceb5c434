# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Class heatmaps of CLARiTy: min-max normalisation, bilinear upsampling to the image's size and boxes from
connected components. The Hub image processor's post-processing and the localization evaluation both use these
functions, so evaluation and inference extract boxes identically.

This file is shipped with the Hub code files: it imports only numpy and torch (scipy lazily, for the boxes).
"""

import math

import numpy as np
import torch

# Longest side of the frame in which `post_process_object_detection` finds boxes by default: boxes are computed
# there and scaled to the original size, so a 2000-pixel image costs what a 512-pixel one does, and box edges move by
# at most about one frame pixel (0.2% of the image side) against the exact computation at the original size.
DEFAULT_BOX_RESOLUTION = 512


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
    labeled, _ = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    boxes, scores = [], []
    for label, region in enumerate(ndimage.find_objects(labeled), start=1):
        if region is None:
            continue
        # Area and peak read inside the component's bounding box only: over a whole 1024 px frame, a scatter-max
        # (np.maximum.at) cost ten times the labelling, and the localization protocol calls this per threshold.
        inside = labeled[region] == label
        if np.count_nonzero(inside) < min_area:
            continue
        ys, xs = region
        boxes.append((xs.start, ys.start, xs.stop, ys.stop))
        scores.append(float(values[region][inside].max()))
    if not boxes:
        return np.zeros((0, 4), dtype=np.float32), np.zeros((0,), dtype=np.float32)
    order = np.argsort(-np.asarray(scores), kind="stable")
    return np.asarray(boxes, dtype=np.float32)[order], np.asarray(scores, dtype=np.float32)[order]


def check_unit_interval(value, name: str) -> float:
    """`value` as a float in [0, 1]; a `ValueError` naming `name` otherwise (NaN and infinities included)."""
    try:
        number = float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}") from err
    if not math.isfinite(number) or not 0.0 <= number <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return number


def box_frame_size(size: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """The (h, w) frame boxes of an image of `size` = (H, W) are computed in: `size` itself when `max_side` is None
    or not smaller than its longest side, else `size` scaled (aspect kept) so that its longest side is `max_side`."""
    height, width = int(size[0]), int(size[1])
    if max_side is None or max(height, width) <= max_side:
        return height, width
    scale = max_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _bilinear_rows(out_size: int, in_size: int, indices: torch.Tensor) -> torch.Tensor:
    """The (len(indices), in_size) matrix of `interpolate(..., mode="bilinear", align_corners=False)` along one axis
    resized from `in_size` to `out_size`, for the output positions `indices` only (same arithmetic as torch's)."""
    source = ((indices.double() + 0.5) * (in_size / out_size) - 0.5).clamp(min=0.0)
    low = source.floor().long().clamp(max=in_size - 1)
    high = (low + 1).clamp(max=in_size - 1)
    weight = (source - low.double()).float()
    matrix = torch.zeros(len(indices), in_size)
    matrix[torch.arange(len(indices)), low] += 1.0 - weight
    matrix[torch.arange(len(indices)), high] += weight
    return matrix


def _extreme_positions(out_size: int, in_size: int) -> torch.Tensor:
    """Output positions where a bilinear upsampling along one axis can reach its extremes: the first and last
    position of every source interval (the interpolant is linear in between) and both ends."""
    positions = torch.arange(out_size)
    cells = ((positions.double() + 0.5) * (in_size / out_size) - 0.5).clamp(min=0.0).floor().long()
    change = torch.nonzero(cells[1:] != cells[:-1]).flatten()
    return torch.unique(torch.cat([torch.tensor([0, out_size - 1]), change, change + 1]))


def upsampled_range(heatmaps: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The min and max of each (h, w) map of `heatmaps` (K, h, w) after bilinear upsampling to `size`, computed on
    the few rows and columns where they can lie instead of the whole (H, W) map: (K,) and (K,)."""
    height, width = int(size[0]), int(size[1])
    grid_h, grid_w = heatmaps.shape[-2:]
    rows = _bilinear_rows(height, grid_h, _extreme_positions(height, grid_h))
    cols = _bilinear_rows(width, grid_w, _extreme_positions(width, grid_w))
    values = torch.einsum("rh,khw,cw->krc", rows, heatmaps.float(), cols)
    return values.amin(dim=(-2, -1)), values.amax(dim=(-2, -1))


def class_boxes(
    heatmaps: torch.Tensor,
    thresholds: list[float],
    size: tuple[int, int] | None,
    min_area: int = 1,
    max_side: int | None = DEFAULT_BOX_RESOLUTION,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Boxes of K model-grid heatmaps (K, h, w), one map per entry of `thresholds`.

    Each map is upsampled (bilinear) to the frame `box_frame_size(size, max_side)`, min-max normalised and split
    into connected components above its threshold (`heatmap_to_boxes`); the boxes are then scaled from the frame to
    `size` (original pixels). The normalisation uses the min and max the map has at `size` (`upsampled_range`), so
    the frame's values are those of the full-size map at the frame's positions. `max_side=None` computes at `size`
    itself (exact); `size=None` gives boxes relative to the image, in [0, 1], computed on the model's grid.
    `min_area` is in original pixels (scaled to the frame's). Returns per map (boxes (N, 4) float32 xyxy, peaks
    (N,) float32).
    """
    heatmaps = heatmaps.detach().float().cpu()
    if heatmaps.shape[0] == 0:  # no class asked for
        return []
    grid = tuple(heatmaps.shape[-2:])
    frame = grid if size is None else box_frame_size(size, max_side)
    if size is None or frame == tuple(int(v) for v in size):  # the exact computation
        maps = heatmaps if frame == grid else upsample_heatmaps(heatmaps, frame)
        scale = np.ones(4, dtype=np.float32)
        if size is None:  # frame pixels -> fractions of the image
            scale = 1.0 / np.asarray([frame[1], frame[0]] * 2, dtype=np.float32)
        results = []
        for values, threshold in zip(maps, thresholds):
            boxes, peaks = heatmap_to_boxes(values.numpy(), threshold, normalize=True, min_area=int(min_area))
            results.append(((boxes * scale).astype(np.float32), peaks))
        return results
    low, high = upsampled_range(heatmaps, size)
    maps = upsample_heatmaps(heatmaps, frame)
    span = high - low
    flat = ~(torch.isfinite(low) & torch.isfinite(high) & (span > 1e-12))
    maps = (
        (maps - low[:, None, None]) / torch.where(flat, torch.ones_like(span), span)[:, None, None]
    ).clamp(0, 1)
    area = max(1, math.ceil(int(min_area) * (frame[0] * frame[1]) / (int(size[0]) * int(size[1]))))
    scale = np.asarray([int(size[1]) / frame[1], int(size[0]) / frame[0]] * 2, dtype=np.float32)
    results = []
    for values, threshold, constant in zip(maps, thresholds, flat.tolist()):
        if constant:  # as the exact path: a constant (or non-finite) map localises nothing
            results.append((np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)))
            continue
        boxes, peaks = heatmap_to_boxes(values.numpy(), threshold, normalize=False, min_area=area)
        # The full-size maximum (1) lies within a frame pixel of the frame's highest sample: peaks relative to that
        # sample give the hottest component a peak of exactly 1, as at the full size.
        top = float(values.max())
        results.append(
            ((boxes * scale).astype(np.float32), (peaks / top if top > 0 else peaks).astype(np.float32))
        )
    return results


def heatmaps_at_size(
    heatmaps: torch.Tensor, size: tuple[int, int] | None, normalize: bool = True, as_uint8: bool = False
) -> torch.Tensor:
    """(K, h, w) model-grid heatmaps -> (K, H, W) at `size` (bilinear; None keeps the grid), min-max normalised when
    `normalize`; `as_uint8` gives round(255 * normalised) in uint8 and upsamples one map at a time, so no float map of
    more than one class at the original size is ever held."""
    heatmaps = heatmaps.detach().float().cpu()
    if heatmaps.shape[0] == 0:  # no class asked for
        height, width = tuple(heatmaps.shape[-2:]) if size is None else (int(size[0]), int(size[1]))
        return torch.zeros((0, height, width), dtype=torch.uint8 if as_uint8 else torch.float32)
    if not as_uint8:
        maps = heatmaps if size is None else upsample_heatmaps(heatmaps, size)
        return (normalize_heatmaps(maps) if normalize else maps).float().contiguous()
    if not normalize:
        raise ValueError("uint8 heatmaps are normalised ones: pass normalize=True with as_uint8=True")
    height, width = tuple(heatmaps.shape[-2:]) if size is None else (int(size[0]), int(size[1]))
    out = torch.empty((heatmaps.shape[0], height, width), dtype=torch.uint8)
    for index, grid_map in enumerate(heatmaps):
        values = grid_map if size is None else upsample_heatmaps(grid_map[None, None], size)[0, 0]
        out[index] = torch.round(normalize_heatmaps(values) * 255.0).to(torch.uint8)
    return out


__all__ = [
    "DEFAULT_BOX_RESOLUTION",
    "box_frame_size",
    "check_unit_interval",
    "class_boxes",
    "heatmaps_at_size",
    "heatmap_to_boxes",
    "upsampled_range",
    "normalize_heatmap",
    "normalize_heatmaps",
    "upsample_heatmaps",
    "upsampled_normalized_heatmap",
]
