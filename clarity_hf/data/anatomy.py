# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""The population anatomical atlas: a thorax probability map averaged over real chest X-ray lung masks.

CLARiTy's SegmentCAM foreground head G is trained against an anatomical prior (lungs + heart). When a dataset has no
per-image masks, the model uses a population atlas stored as its `anatomical_prior` buffer. The atlas shipped with
the package (`lung_atlas_64.npy`) is built by `scripts/build_atlas.py` from the 517 V7 Labs lung mask images (435 non-empty) in
`shared/anatomy/semantic_masks_v7labs_lungs.zip` as follows, per mask:

1. decode as 8-bit grayscale (PNG or JPEG, any size) and binarise at half the mask's maximum value, which is robust
   to JPEG ringing and to masks stored as 0/1 or 0/255. In this archive lungs are 255 and some masks carry a second
   label at 127 (tubes, pacemakers, other devices); these are not lung and fall below the threshold;
2. skip masks whose lung area is below `min_area_fraction` (82 of the archive's masks are empty);
3. resize to `work_size` x `work_size` (nearest-neighbour on the binary mask: the image processor resizes the whole
   radiograph to a square, so masks are squashed the same way, not cropped);
4. with `region="thorax"` (default) fill each row between its leftmost and rightmost lung pixel, which adds the
   heart and mediastinum lying between the two lungs (`region="lungs"` keeps the lungs alone);
5. area-average down to `size` x `size`.

The atlas is the mean of these maps over all usable masks, optionally smoothed with a Gaussian of `blur_sigma`
atlas pixels, in [0, 1]. Masks are read in sorted name order, so the result is deterministic.
"""

from __future__ import annotations

import io
import logging
import zipfile
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

logger = logging.getLogger(__name__)

ATLAS_FILENAME = "lung_atlas_64.npy"
MASK_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
ATLAS_REGIONS = ("thorax", "lungs")


def _iter_mask_files(zip_or_dir: str | Path, limit: int | None = None) -> Iterator[tuple[str, bytes]]:
    """Yield (name, bytes) of the mask images in a zip archive or a folder (recursively), in sorted name order."""
    path = Path(zip_or_dir)
    if not path.exists():
        raise FileNotFoundError(f"mask source {path} does not exist")
    if path.is_dir():
        names = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in MASK_EXTENSIONS)
        for file in names[:limit]:
            yield str(file), file.read_bytes()
        return
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is neither a folder nor a zip archive of mask images")
    with zipfile.ZipFile(path) as archive:
        names = sorted(
            n for n in archive.namelist() if not n.endswith("/") and Path(n).suffix.lower() in MASK_EXTENSIONS
        )
        for name in names[:limit]:
            yield f"{path}:{name}", archive.read(name)


def binarize_mask(image: Image.Image) -> np.ndarray:
    """A PIL mask image -> boolean (H, W) array: pixels above half the image's maximum value."""
    array = np.asarray(image.convert("L") if image.mode not in ("L", "I", "I;16", "F") else image)
    array = array.astype(np.float32)
    if array.ndim != 2 or array.size == 0:
        raise ValueError(f"expected a 2-D mask, got shape {array.shape}")
    peak = float(array.max())
    if peak <= 0:
        return np.zeros(array.shape, dtype=bool)
    return array > peak / 2


def fill_between_lungs(mask: np.ndarray) -> np.ndarray:
    """Fill each row of a boolean (H, W) mask between its leftmost and rightmost True pixel (adds the mediastinum
    and heart between the two lung fields)."""
    rows = mask.any(axis=1)
    filled = mask.copy()
    if not rows.any():
        return filled
    columns = np.arange(mask.shape[1])
    first = np.where(rows, mask.argmax(axis=1), 0)
    last = np.where(rows, mask.shape[1] - 1 - mask[:, ::-1].argmax(axis=1), -1)
    filled |= (columns[None, :] >= first[:, None]) & (columns[None, :] <= last[:, None])
    return filled


def _area_downsample(mask: np.ndarray, size: int) -> np.ndarray:
    """(S, S) with S a multiple of `size` -> (size, size) block means."""
    factor = mask.shape[0] // size
    return mask.reshape(size, factor, size, factor).mean(axis=(1, 3))


def build_lung_atlas(
    zip_or_dir: str | Path,
    size: int = 64,
    region: str = "thorax",
    work_size: int = 256,
    min_area_fraction: float = 0.02,
    blur_sigma: float = 0.0,
    limit: int | None = None,
) -> np.ndarray:
    """Average real lung masks into a (size, size) float32 probability map in [0, 1].

    Args:
        zip_or_dir: a zip archive or folder of mask images (lungs bright on a dark background).
        size: side of the atlas.
        region: `"thorax"` (lungs plus the heart / mediastinum between them) or `"lungs"`.
        work_size: side at which each mask is binarised and filled (rounded up to a multiple of `size`).
        min_area_fraction: masks whose lung area is below this fraction of the image are skipped (empty masks).
        blur_sigma: optional Gaussian smoothing of the atlas, in atlas pixels (0 = none).
        limit: use only the first `limit` masks in sorted name order (tests).

    Returns:
        `np.ndarray` of shape (size, size), dtype float32, values in [0, 1].
    """
    if region not in ATLAS_REGIONS:
        raise ValueError(f"region must be one of {ATLAS_REGIONS}, got {region!r}")
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    work_size = -(-max(work_size, size) // size) * size
    total = np.zeros((size, size), dtype=np.float64)
    used = skipped = 0
    for name, data in _iter_mask_files(zip_or_dir, limit):
        try:
            image = Image.open(io.BytesIO(data))
            image.draft("L", (work_size, work_size))  # JPEG: decode at reduced scale (deterministic)
            mask = binarize_mask(image)
        except (UnidentifiedImageError, OSError, ValueError) as error:
            raise ValueError(f"cannot read mask {name}: {error}") from error
        if mask.mean() < min_area_fraction:
            skipped += 1
            continue
        resized = Image.fromarray(mask).resize((work_size, work_size), Image.Resampling.NEAREST)
        mask = np.asarray(resized, dtype=bool)
        if region == "thorax":
            mask = fill_between_lungs(mask)
        total += _area_downsample(mask.astype(np.float64), size)
        used += 1
    if used == 0:
        raise ValueError(f"no usable lung masks in {zip_or_dir} (all empty or below {min_area_fraction:.0%})")
    logger.info("atlas from %d masks of %s (%d skipped as empty)", used, zip_or_dir, skipped)
    atlas = total / used
    if blur_sigma > 0:
        from scipy.ndimage import gaussian_filter

        atlas = gaussian_filter(atlas, sigma=blur_sigma, mode="constant")
    return np.clip(atlas, 0.0, 1.0).astype(np.float32)


def load_default_atlas() -> np.ndarray:
    """The shipped thorax atlas `clarity_hf/data/lung_atlas_64.npy` as a (64, 64) float32 array in [0, 1]."""
    with resources.files("clarity_hf.data").joinpath(ATLAS_FILENAME).open("rb") as handle:
        return np.load(handle).astype(np.float32)


__all__ = ["build_lung_atlas", "load_default_atlas", "binarize_mask", "fill_between_lungs", "ATLAS_FILENAME"]
