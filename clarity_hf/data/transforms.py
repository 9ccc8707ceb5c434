# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Torch-side transforms for clarity_hf data sets, and a collate function that drops bad images.

Contract
--------
`ClarityTransform` is a batched function for `dataset.set_transform` / `dataset.with_transform`. For each example it
returns:

* `pixel_values`: float32 tensor (3, S, S): the image decoded, converted to 8-bit grayscale, augmented (train
  mode), resized to S, scaled to [0, 1], repeated to 3 channels and normalised with the ImageNet mean / std;
* `labels`: float32 tensor (C,) multi-hot;
* `anatomy_masks`: float32 tensor (1, S, S) in {0, 1}, only when the data set has an `anatomy_mask` column and the
  example's mask is not None; it gets the same geometric augmentation as the image;
* `valid`: bool. An image that cannot be decoded (missing file, corrupt bytes, zero size) gives `valid=False`, a
  zero `pixel_values` and a warning naming the image; training never crashes on it.

Images may arrive decoded (PIL) or undecoded (`{"bytes", "path"}` dicts, or path strings). Decoding inside the
transform is what lets a corrupt image be caught, so `with_clarity_transform` casts the image columns to
`Image(decode=False)` before attaching the transform; prefer it to calling `set_transform` yourself.

Augmentation (train mode, CXR-safe, the spec's section 4): random resized crop of 75-100% of the area (aspect
3/4-4/3), rotation of +-10 degrees, brightness and contrast jitter (factor in [1 - 0.2, 1 + 0.2]). No horizontal
flip: it moves the heart to the wrong side. Eval mode only resizes. Only PIL and torch are used.

`ClarityCollator` stacks the valid examples into a batch for the model (`pixel_values`, `labels`, and
`anatomy_masks` when every valid example has one), drops the invalid ones and counts them in `num_dropped` (a
counter shared with DataLoader worker processes); `dropped_ids` lists the first dropped image ids seen in this
process. If every example of a batch is invalid it returns None: skip such a batch.
"""

from __future__ import annotations

import io
import logging
import math
import multiprocessing
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from datasets import Dataset, DatasetDict, Image
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_COLUMNS = ("image", "anatomy_mask")
MAX_LOGGED_BAD_IMAGES = 20


def to_grayscale(image: PILImage.Image) -> PILImage.Image:
    """Any PIL image -> 8-bit grayscale ("L"); 16-bit and float images are rescaled by their range."""
    if image.mode == "L":
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        array = np.asarray(image, dtype=np.float32)
        low, high = float(array.min()), float(array.max())
        scaled = (array - low) / (high - low) * 255.0 if high > low else np.zeros_like(array)
        return PILImage.fromarray(np.clip(scaled + 0.5, 0, 255).astype(np.uint8), mode="L")
    return image.convert("L")


def decode_image(value: Any) -> PILImage.Image:
    """Decode a PIL image, a `{"bytes", "path"}` dict or a path; raises on missing / corrupt data."""
    if isinstance(value, PILImage.Image):
        image = value
    elif isinstance(value, dict):
        if value.get("bytes"):
            image = PILImage.open(io.BytesIO(value["bytes"]))
        elif value.get("path"):
            image = PILImage.open(value["path"])
        else:
            raise ValueError("image entry has neither bytes nor path")
    elif isinstance(value, str):
        image = PILImage.open(value)
    else:
        raise ValueError(f"cannot decode an image from {type(value).__name__}")
    image.load()
    if image.width == 0 or image.height == 0:
        raise ValueError("image has zero size")
    return image


class ClarityTransform:
    """Batched example -> model-input transform (see the module docstring for the contract).

    Args:
        image_size: output side S.
        train: augment (True) or only resize (False).
        scale: area range of the random resized crop.
        ratio: aspect-ratio range of the crop.
        rotation: maximum absolute rotation in degrees.
        brightness / contrast: jitter strengths (factors drawn in [1 - b, 1 + b]).
        mean / std: per-channel normalisation.
        seed: seed of the augmentation generator (None: fresh randomness).
    """

    def __init__(
        self,
        image_size: int = 224,
        train: bool = True,
        scale: tuple[float, float] = (0.75, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        rotation: float = 10.0,
        brightness: float = 0.2,
        contrast: float = 0.2,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        seed: int | None = None,
    ):
        self.image_size = int(image_size)
        self.train = train
        self.scale, self.ratio, self.rotation = scale, ratio, rotation
        self.brightness, self.contrast = brightness, contrast
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.num_invalid = 0
        self._worker_id: int | None = None

    def _reseed_in_worker(self) -> None:
        """Give every DataLoader worker its own augmentation stream (forked workers share the parent's state)."""
        info = torch.utils.data.get_worker_info()
        if info is not None and info.id != self._worker_id:
            self._worker_id = info.id
            self.rng = np.random.default_rng([info.seed % 2**63, 0 if self.seed is None else self.seed])

    # -- geometry ------------------------------------------------------------------------------------------
    def sample_geometry(self, width: int, height: int) -> tuple[tuple[float, float, float, float], float]:
        """A crop box (left, top, right, bottom) in source pixels and a rotation angle in degrees."""
        if not self.train:
            return (0.0, 0.0, float(width), float(height)), 0.0
        area = width * height
        for _ in range(10):
            target = area * self.rng.uniform(*self.scale)
            aspect = math.exp(self.rng.uniform(math.log(self.ratio[0]), math.log(self.ratio[1])))
            w, h = math.sqrt(target * aspect), math.sqrt(target / aspect)
            if w <= width and h <= height:
                left, top = self.rng.uniform(0, width - w), self.rng.uniform(0, height - h)
                break
        else:  # fall back to a centred crop of the largest allowed area
            w = h = math.sqrt(area * self.scale[0])
            w, h = min(w, width), min(h, height)
            left, top = (width - w) / 2, (height - h) / 2
        angle = self.rng.uniform(-self.rotation, self.rotation)
        return (left, top, left + w, top + h), angle

    def apply_geometry(self, image: PILImage.Image, box, angle: float, resample: int) -> PILImage.Image:
        size = (self.image_size, self.image_size)
        out = image.resize(size, resample=resample, box=box)
        if angle:
            out = out.rotate(angle, resample=PILImage.BILINEAR if resample != PILImage.NEAREST else resample)
        return out

    # -- intensity -----------------------------------------------------------------------------------------
    def to_pixel_values(self, image: PILImage.Image) -> torch.Tensor:
        x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)
        if self.train:
            if self.brightness:
                x = x * float(self.rng.uniform(1 - self.brightness, 1 + self.brightness))
            if self.contrast:
                mean = x.mean()
                x = (x - mean) * float(self.rng.uniform(1 - self.contrast, 1 + self.contrast)) + mean
            x = x.clamp(0.0, 1.0)
        return (x.unsqueeze(0).expand(3, -1, -1) - self.mean) / self.std

    # -- one example ---------------------------------------------------------------------------------------
    def transform_one(self, image: Any, mask: Any = None, name: str = "") -> dict[str, Any]:
        """One image (and optional mask) -> `pixel_values`, `valid`, and `anatomy_masks` where a mask is given."""
        try:
            decoded = to_grayscale(decode_image(image))
        except (OSError, ValueError, UnidentifiedImageError, SyntaxError) as err:
            self.num_invalid += 1
            if self.num_invalid <= MAX_LOGGED_BAD_IMAGES:
                logger.warning("bad image %s skipped: %s", name or "<unnamed>", err)
            out: dict[str, Any] = {
                "pixel_values": torch.zeros(3, self.image_size, self.image_size),
                "valid": False,
            }
            if mask is not None:
                out["anatomy_masks"] = torch.zeros(1, self.image_size, self.image_size)
            return out
        box, angle = self.sample_geometry(*decoded.size)
        pixels = self.to_pixel_values(self.apply_geometry(decoded, box, angle, PILImage.BILINEAR))
        out = {"pixel_values": pixels, "valid": True}
        if mask is not None:
            try:
                mask_image = decode_image(mask).convert("L")
                if mask_image.size != decoded.size:
                    mask_image = mask_image.resize(decoded.size, PILImage.NEAREST)
                warped = self.apply_geometry(mask_image, box, angle, PILImage.NEAREST)
                out["anatomy_masks"] = torch.from_numpy((np.asarray(warped) > 127).astype(np.float32))[None]
            except (OSError, ValueError, UnidentifiedImageError, SyntaxError) as err:
                logger.warning("bad anatomy mask of %s ignored: %s", name or "<unnamed>", err)
        return out

    # -- batch (set_transform) -----------------------------------------------------------------------------
    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        self._reseed_in_worker()
        images = batch["image"]
        masks = batch.get("anatomy_mask", [None] * len(images))
        names = batch.get("image_id", [""] * len(images))
        result: dict[str, list[Any]] = {"pixel_values": [], "labels": [], "valid": []}
        if "anatomy_mask" in batch:
            result["anatomy_masks"] = []
        if "image_id" in batch:
            result["image_id"] = []
        for i, image in enumerate(images):
            out = self.transform_one(image, masks[i], names[i])
            result["pixel_values"].append(out["pixel_values"])
            result["valid"].append(out["valid"])
            result["labels"].append(torch.as_tensor(np.asarray(batch["labels"][i], dtype=np.float32)))
            if "anatomy_masks" in result:
                result["anatomy_masks"].append(out.get("anatomy_masks"))
            if "image_id" in result:
                result["image_id"].append(names[i])
        return result


def with_clarity_transform(
    dataset: Dataset | DatasetDict, transform: ClarityTransform
) -> Dataset | DatasetDict:
    """Return `dataset` with undecoded image columns and `transform` attached (`with_transform`)."""
    if isinstance(dataset, DatasetDict):
        return DatasetDict(
            {split: with_clarity_transform(part, transform) for split, part in dataset.items()}
        )
    for column in IMAGE_COLUMNS:
        if column in dataset.features and isinstance(dataset.features[column], Image):
            dataset = dataset.cast_column(column, Image(decode=False))
    return dataset.with_transform(transform)


def train_transform(image_size: int = 224, **kwargs: Any) -> ClarityTransform:
    """The augmenting training transform."""
    return ClarityTransform(image_size, train=True, **kwargs)


def eval_transform(image_size: int = 224, **kwargs: Any) -> ClarityTransform:
    """The evaluation transform: decode, grayscale, resize, normalise; no augmentation."""
    return ClarityTransform(image_size, train=False, **kwargs)


class ClarityCollator:
    """Collate transformed examples into a model batch, dropping and counting invalid ones.

    Returns `{"pixel_values": (B, 3, S, S), "labels": (B, C)}` plus `anatomy_masks` (B, 1, S, S) when every valid
    example carries a mask, or None when no example of the batch is valid. `num_dropped` counts dropped examples
    across DataLoader workers (a shared counter); `dropped_ids` keeps the first ids dropped in this process.
    """

    def __init__(self, max_recorded: int = 100):
        self._dropped = multiprocessing.get_context("spawn").Value("q", 0)
        self.max_recorded = max_recorded
        self.dropped_ids: list[str] = []

    @property
    def num_dropped(self) -> int:
        return int(self._dropped.value)

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor] | None:
        valid = [e for e in examples if e.get("valid", True)]
        dropped = len(examples) - len(valid)
        if dropped:
            with self._dropped.get_lock():
                self._dropped.value += dropped
            for example in examples:
                if not example.get("valid", True) and len(self.dropped_ids) < self.max_recorded:
                    self.dropped_ids.append(str(example.get("image_id", "")))
        if not valid:
            return None
        batch = {
            "pixel_values": torch.stack([e["pixel_values"] for e in valid]),
            "labels": torch.stack([torch.as_tensor(e["labels"], dtype=torch.float32) for e in valid]),
        }
        masks = [e.get("anatomy_masks") for e in valid]
        if all(m is not None for m in masks):
            batch["anatomy_masks"] = torch.stack(masks)
        return batch


_DEFAULT_COLLATOR: ClarityCollator | None = None


def collate_fn(examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor] | None:
    """Module-level `ClarityCollator` (drops invalid examples; use your own instance to read its counter)."""
    global _DEFAULT_COLLATOR
    if _DEFAULT_COLLATOR is None:
        _DEFAULT_COLLATOR = ClarityCollator()
    return _DEFAULT_COLLATOR(examples)
