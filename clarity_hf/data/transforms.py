# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Torch-side transforms for clarity_hf data sets, and a collate function that drops bad images.

Contract
--------
`ClarityTransform` is a batched function for `dataset.set_transform` / `dataset.with_transform`. For each example it
returns:

* `pixel_values`: float32 tensor (3, S, S): the image decoded exactly as `ClarityImageProcessor` decodes it (one
  float grayscale image in [0, 1]: bit depth, DICOM LUTs and windows, MONOCHROME1, RGB luma, alpha dropped; see
  `clarity_hf.xray_io`), augmented (train mode), resized to S in float32 with the processor's filter, repeated to 3
  channels and normalised with the model's mean / std. Without augmentation this is the processor's
  `pixel_values` for the same file (`build_processor` makes the processor of the same recipe);
* `labels`: float32 tensor (C,) multi-hot;
* `anatomy_masks`: float32 tensor (1, S, S) in {0, 1}, only when the data set has an `anatomy_mask` column and the
  example's mask is not None; it gets the same geometric augmentation as the image;
* `valid`: bool. An image that cannot be decoded (missing file, corrupt bytes, zero size, more pixels than the
  package limit: any `clarity_hf.xray_io.ImageDecodeError`) gives `valid=False`, a zero `pixel_values` and a
  warning naming the image; training never crashes on it. `transform_one` also says why
  (`problem`: one of `PROBLEM_KINDS`) and which image (`where`).

Images may arrive decoded (PIL) or undecoded (`{"bytes", "path"}` dicts, or path strings). Decoding inside the
transform is what lets a corrupt image be caught, so `with_clarity_transform` casts the image columns to
`Image(decode=False)` before attaching the transform; prefer it to calling `set_transform` yourself.

Augmentation (train mode, CXR-safe): random resized crop of 75-100% of the area (aspect
3/4-4/3), rotation of +-10 degrees, brightness and contrast jitter (factor in [1 - 0.2, 1 + 0.2]). No horizontal
flip: it moves the heart to the wrong side. Eval mode only resizes. Only PIL and torch are used; geometry and
intensity work on the float image (no 8-bit round-off).

Random parameters come from a numpy generator: the transform's own stream by default (`seed`), or, for exactly
reproducible training, one made by `sample_rng(epoch, index)` and passed to `transform_one(..., rng=...)`: the view
of a sample then depends only on (seed, epoch, sample index), not on the order, the worker or the process that
draws it, so a run resumed in the middle of an epoch sees exactly the views of an uninterrupted one.

Decode only (`augment_on: device`). `source_one` is `transform_one` without the pixel work: it returns the decoded
image (`source`: (H, W) uint8 for 8-bit grayscale files, float32 [0, 1] gray otherwise), the view's random
parameters (`augment`, `sample_params`: drawn from the same generator in the same order as `transform_one` draws
them) and the raw mask (`source_mask`); `clarity_hf.data.device_augment.BatchAugmenter` makes the pixels of a
whole batch where the model runs. The collator pads such examples into one batch (`source_batch`).

`ClarityCollator` stacks the valid examples into a batch for the model (`pixel_values`, `labels`, and
`anatomy_masks` when every valid example has one), drops the invalid ones and counts them in `num_dropped` (a
counter shared with DataLoader worker processes); `dropped_ids` lists the first dropped image ids seen in this
process. If every example of a batch is invalid it returns None: skip such a batch. Two options serve distributed
loops, where every process must see batches of the same structure: `keep_invalid=True` (evaluation) keeps every
example (zero images) and adds a boolean `valid` tensor, so that batches stay fixed-size for `gather_for_metrics`;
`return_empty=True` returns a batch of zero examples instead of None. `teacher_logits` and `index` are stacked
when every example carries them; `report_problems=True` adds `problems`, one "kind: image" string per invalid
example.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from datasets import Dataset, DatasetDict, Image
from PIL import Image as PILImage
from PIL import ImageOps

from ..image_processing_clarity import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    ClarityImageProcessor,
    resize_unit_gray,
)
from ..xray_io import ImageDecodeError, MissingImageError, load_unit_gray, open_image
from .device_augment import NUM_PARAMS, pad_stack

logger = logging.getLogger(__name__)

# The model's pixel recipe: ImageNet statistics (transformers' constants, as DINO was trained) and a bilinear
# float resize. `build_processor` writes it into the processor saved with a model; the transform uses the same.
IMAGENET_MEAN = tuple(IMAGENET_DEFAULT_MEAN)
IMAGENET_STD = tuple(IMAGENET_DEFAULT_STD)
DEFAULT_RESAMPLE = "bilinear"
IMAGE_COLUMNS = ("image", "anatomy_mask")
MAX_LOGGED_BAD_IMAGES = 20
PROBLEM_KINDS = ("missing_file", "corrupt_image")
# Every decode failure of `clarity_hf.xray_io` (truncated, unidentified, too many pixels, bad DICOM attributes).
DECODE_ERRORS = (ImageDecodeError,)


def build_processor(
    image_size,
    image_mean: Sequence[float] | None = None,
    image_std: Sequence[float] | None = None,
    resample: str = DEFAULT_RESAMPLE,
) -> ClarityImageProcessor:
    """The `ClarityImageProcessor` of the model's pixel recipe: decode to gray [0, 1], `resample` float resize to
    the model's side, 3 channels, `(x - mean) / std` (ImageNet statistics unless given). `image_size` is a side in
    pixels or a model config (its `image_size`; the labels stay in the model config). A model is saved with this
    processor, and training feeds it the same pixels (`ClarityTransform` with the same mean, std and filter)."""
    if not isinstance(image_size, (int, np.integer)):
        config = image_size
        image_size = getattr(config, "image_size", None)
        if image_size is None:
            raise ValueError(f"{type(config).__name__} has no image_size: pass the side in pixels")
    return ClarityImageProcessor(
        size={"height": int(image_size), "width": int(image_size)},
        resample=resample,
        image_mean=list(IMAGENET_MEAN if image_mean is None else image_mean),
        image_std=list(IMAGENET_STD if image_std is None else image_std),
    )


def problem_kind(error: Exception) -> str:
    """`missing_file` for an absent file or empty entry, `corrupt_image` for data that does not decode."""
    if isinstance(error, (FileNotFoundError, MissingImageError)):
        return "missing_file"
    return "corrupt_image"


def _image_source(value: Any) -> Any:
    """The bytes or path a `{"bytes", "path"}` entry (or a path) holds, for `open_image`."""
    if isinstance(value, dict):
        if value.get("bytes"):
            return value["bytes"]
        if value.get("path"):
            return value["path"]
        raise MissingImageError("image entry has neither bytes nor path")
    if value is None:
        raise MissingImageError("no image")
    return value


def decode_image(value: Any) -> PILImage.Image:
    """A PIL image, a `{"bytes", "path"}` dict or a path -> a loaded PIL image, for masks and other non-X-ray
    images (X-rays go through `clarity_hf.xray_io.load_unit_gray`). The package pixel limit applies; raises
    `ImageDecodeError` (`MissingImageError` for missing data)."""
    if isinstance(value, PILImage.Image):
        return value
    if isinstance(value, dict):
        if value.get("bytes"):
            return open_image(value["bytes"], f"file '{value['path']}'" if value.get("path") else None)
        if value.get("path"):
            return open_image(value["path"])
        raise MissingImageError("image entry has neither bytes nor path")
    if isinstance(value, (str, os.PathLike)):
        return open_image(value)
    if value is None:
        raise MissingImageError("no image")
    raise ImageDecodeError(f"cannot decode an image from {type(value).__name__}")


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
        resample: the resize filter ("bilinear", "bicubic", ...), as the processor's `resample`.
        intensity_scaling: "bit_depth" or "minmax", as the processor's.
        max_image_pixels: the pixel limit (None: `$CLARITY_MAX_IMAGE_PIXELS` or the package default).
        seed: seed of the augmentation generator (None: fresh randomness), and of `sample_rng`.
        invalid_on_bad_mask: an example whose anatomy mask cannot be decoded is invalid (True) or keeps its image
            and loses its mask (False).
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
        invalid_on_bad_mask: bool = False,
        resample: str | int = DEFAULT_RESAMPLE,
        intensity_scaling: str = "bit_depth",
        max_image_pixels: int | None = None,
    ):
        self.image_size = int(image_size)
        self.resample = resample
        self.intensity_scaling = intensity_scaling
        self.max_image_pixels = max_image_pixels
        self.train = train
        self.scale, self.ratio, self.rotation = scale, ratio, rotation
        self.brightness, self.contrast = brightness, contrast
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.seed = seed
        self.invalid_on_bad_mask = invalid_on_bad_mask
        self.rng = np.random.default_rng(seed)
        self.num_invalid = 0
        self._worker_id: int | None = None

    def _reseed_in_worker(self) -> None:
        """Give every DataLoader worker its own augmentation stream (forked workers share the parent's state)."""
        info = torch.utils.data.get_worker_info()
        if info is not None and info.id != self._worker_id:
            self._worker_id = info.id
            self.rng = np.random.default_rng([info.seed % 2**63, 0 if self.seed is None else self.seed])

    @classmethod
    def from_processor(cls, processor: ClarityImageProcessor, train: bool = False, **kwargs: Any):
        """The transform feeding a model the pixels of `processor` (its size, filter, scaling, mean and std)."""
        size = processor.size
        if size["height"] != size["width"]:
            raise ValueError(f"ClarityTransform makes square images; the processor's size is {size}")
        return cls(
            size["height"],
            train=train,
            mean=processor.image_mean,
            std=processor.image_std,
            resample=processor.resample,
            intensity_scaling=processor.intensity_scaling,
            max_image_pixels=processor.max_image_pixels,
            **kwargs,
        )

    def sample_rng(self, epoch: int, index: int) -> np.random.Generator:
        """The generator of sample `index` in epoch `epoch`: a function of (seed, epoch, index) only."""
        if self.seed is None:
            raise ValueError("sample_rng needs a transform built with a seed")
        return np.random.default_rng([int(self.seed), int(epoch), int(index)])

    # -- geometry ------------------------------------------------------------------------------------------
    def sample_geometry(
        self, width: int, height: int, rng: np.random.Generator | None = None
    ) -> tuple[tuple[float, float, float, float], float]:
        """A crop box (left, top, right, bottom) in source pixels and a rotation angle in degrees."""
        if not self.train:
            return (0.0, 0.0, float(width), float(height)), 0.0
        rng = self.rng if rng is None else rng
        area = width * height
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(math.log(self.ratio[0]), math.log(self.ratio[1])))
            w, h = math.sqrt(target * aspect), math.sqrt(target / aspect)
            if w <= width and h <= height:
                left, top = rng.uniform(0, width - w), rng.uniform(0, height - h)
                break
        else:  # fall back to a centred crop of the largest allowed area
            w = h = math.sqrt(area * self.scale[0])
            w, h = min(w, width), min(h, height)
            left, top = (width - w) / 2, (height - h) / 2
        angle = rng.uniform(-self.rotation, self.rotation)
        return (left, top, left + w, top + h), angle

    def apply_geometry(self, image: PILImage.Image, box, angle: float, resample: int) -> PILImage.Image:
        """Crop-resize then rotate a PIL image (the anatomy mask, with NEAREST)."""
        size = (self.image_size, self.image_size)
        out = image.resize(size, resample=resample, box=box)
        if angle:
            out = out.rotate(angle, resample=PILImage.BILINEAR if resample != PILImage.NEAREST else resample)
        return out

    def warp_gray(self, gray: np.ndarray, box, angle: float) -> np.ndarray:
        """Crop-resize a float (H, W) image in [0, 1] with the processor's resize (`resize_unit_gray`), then
        rotate it (bilinear, float); (S, S) float32 in [0, 1]."""
        out = resize_unit_gray(gray, (self.image_size, self.image_size), self.resample, box=box)
        if angle:
            rotated = PILImage.fromarray(out).rotate(angle, resample=PILImage.BILINEAR)
            out = np.clip(np.asarray(rotated, dtype=np.float32), 0.0, 1.0)
        return out

    # -- intensity -----------------------------------------------------------------------------------------
    def to_pixel_values(self, gray: np.ndarray, rng: np.random.Generator | None = None) -> torch.Tensor:
        """(S, S) float image in [0, 1] -> (3, S, S) normalised, with intensity jitter in train mode."""
        x = torch.from_numpy(np.ascontiguousarray(gray, dtype=np.float32))
        if self.train:
            brightness, contrast = self.sample_intensity(rng)
            if self.brightness:
                x = x * brightness
            if self.contrast:
                mean = x.mean()
                x = (x - mean) * contrast + mean
            x = x.clamp(0.0, 1.0)
        return (x.unsqueeze(0).expand(3, -1, -1) - self.mean) / self.std

    def sample_intensity(self, rng: np.random.Generator | None = None) -> tuple[float, float]:
        """The brightness and contrast factors (1.0 for a jitter that is off or in eval mode), drawn in that
        order after the geometry."""
        if not self.train:
            return 1.0, 1.0
        rng = self.rng if rng is None else rng
        brightness = float(rng.uniform(1 - self.brightness, 1 + self.brightness)) if self.brightness else 1.0
        contrast = float(rng.uniform(1 - self.contrast, 1 + self.contrast)) if self.contrast else 1.0
        return brightness, contrast

    def sample_params(self, width: int, height: int, rng: np.random.Generator | None = None) -> torch.Tensor:
        """All of one view's random parameters, drawn as `transform_one` draws them: (7,) float64 tensor (crop
        box left, top, right, bottom; angle; brightness and contrast factors), see
        `clarity_hf.data.device_augment.PARAM_NAMES`."""
        box, angle = self.sample_geometry(width, height, rng=rng)
        return torch.tensor([*box, angle, *self.sample_intensity(rng)], dtype=torch.float64)

    # -- decode only (augment_on: device) --------------------------------------------------------------------
    def decode_source(self, image: Any) -> torch.Tensor:
        """The image as its raw 8-bit gray values, (H, W) uint8, when it is an 8-bit grayscale file read with
        bit-depth scaling (no float conversion: the cheap case of a loader worker); otherwise (DICOM, 16-bit, RGB,
        minmax scaling) its float32 [0, 1] gray, decoded exactly as the processor decodes it."""
        if self.intensity_scaling == "bit_depth" and not isinstance(image, PILImage.Image):
            try:
                with open_image(_image_source(image), max_image_pixels=self.max_image_pixels) as opened:
                    if opened.mode == "L":
                        return torch.from_numpy(np.array(ImageOps.exif_transpose(opened), dtype=np.uint8))
            except DECODE_ERRORS:
                pass  # a DICOM, or a bad file: the full decoder says which
        gray = load_unit_gray(image, scaling=self.intensity_scaling, max_image_pixels=self.max_image_pixels)
        return torch.from_numpy(gray.astype(np.float32))

    def source_one(
        self, image: Any, mask: Any = None, name: str = "", rng: np.random.Generator | None = None
    ) -> dict[str, Any]:
        """`transform_one` for `augment_on: device`: `source` (the decoded image, see `decode_source`),
        `augment` (`sample_params`), `valid`, and `source_mask` ((H, W) uint8, 255 inside) where a mask is given;
        `clarity_hf.data.device_augment.BatchAugmenter` makes the pixels from them."""
        try:
            source = self.decode_source(image)
        except DECODE_ERRORS as err:
            return self._invalid_source(err, name, mask is not None)
        height, width = source.shape
        out = {"source": source, "augment": self.sample_params(width, height, rng), "valid": True}
        if mask is not None:
            try:
                out["source_mask"] = torch.from_numpy(
                    np.array(self._mask_at(mask, width, height), dtype=np.uint8)
                )
            except DECODE_ERRORS as err:
                if self.invalid_on_bad_mask:
                    return self._invalid_source(err, f"{name} (anatomy mask)", True)
                logger.warning("bad anatomy mask of %s ignored: %s", name or "<unnamed>", err)
        return out

    def _invalid_source(self, error: Exception, name: str, with_mask: bool) -> dict[str, Any]:
        """`_invalid` for `source_one`: a 2x2 zero source with identity parameters instead of pixels."""
        out = self._invalid(error, name, False)
        del out["pixel_values"]
        out["source"] = torch.zeros(2, 2, dtype=torch.uint8)
        out["augment"] = torch.tensor([0, 0, 2, 2, 0, 1, 1], dtype=torch.float64)
        if with_mask:
            out["source_mask"] = torch.zeros(2, 2, dtype=torch.uint8)
        return out

    @staticmethod
    def _mask_at(mask: Any, width: int, height: int) -> PILImage.Image:
        """The anatomy mask as an 'L' image of the source's size (nearest resize when it differs)."""
        mask_image = decode_image(mask).convert("L")
        if mask_image.size != (width, height):
            mask_image = mask_image.resize((width, height), PILImage.NEAREST)
        return mask_image

    # -- one example ---------------------------------------------------------------------------------------
    def transform_one(
        self, image: Any, mask: Any = None, name: str = "", rng: np.random.Generator | None = None
    ) -> dict[str, Any]:
        """One image (and optional mask) -> `pixel_values`, `valid`, and `anatomy_masks` where a mask is given;
        an invalid example also gets `problem` (a `PROBLEM_KINDS` entry) and `where` (name and error). `rng`
        (e.g. `sample_rng(epoch, index)`) replaces the transform's own random stream for this example."""
        try:
            gray = load_unit_gray(
                image, scaling=self.intensity_scaling, max_image_pixels=self.max_image_pixels
            ).astype(np.float32)
        except DECODE_ERRORS as err:
            return self._invalid(err, name, mask is not None)
        height, width = gray.shape
        box, angle = self.sample_geometry(width, height, rng=rng)
        pixels = self.to_pixel_values(self.warp_gray(gray, box, angle), rng=rng)
        out = {"pixel_values": pixels, "valid": True}
        if mask is not None:
            try:
                mask_image = self._mask_at(mask, width, height)
                warped = self.apply_geometry(mask_image, box, angle, PILImage.NEAREST)
                out["anatomy_masks"] = torch.from_numpy((np.asarray(warped) > 127).astype(np.float32))[None]
            except DECODE_ERRORS as err:
                if self.invalid_on_bad_mask:
                    return self._invalid(err, f"{name} (anatomy mask)", True)
                logger.warning("bad anatomy mask of %s ignored: %s", name or "<unnamed>", err)
        return out

    def _invalid(self, error: Exception, name: str, with_mask: bool) -> dict[str, Any]:
        self.num_invalid += 1
        if self.num_invalid <= MAX_LOGGED_BAD_IMAGES:
            logger.warning("bad image %s skipped: %s", name or "<unnamed>", error)
        out: dict[str, Any] = {
            "pixel_values": torch.zeros(3, self.image_size, self.image_size),
            "valid": False,
            "problem": problem_kind(error),
            "where": f"{name or '<unnamed>'}: {type(error).__name__}: {error}",
        }
        if with_mask:
            out["anatomy_masks"] = torch.zeros(1, self.image_size, self.image_size)
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
    """The evaluation transform: decode, resize, normalise; no augmentation."""
    return ClarityTransform(image_size, train=False, **kwargs)


class ClarityCollator:
    """Collate transformed examples into a model batch, dropping and counting invalid ones.

    Returns `{"pixel_values": (B, 3, S, S), "labels": (B, C)}` plus `anatomy_masks` (B, 1, S, S) when every valid
    example carries a mask, or None when no example of the batch is valid. `num_dropped` counts dropped examples
    across DataLoader workers (a shared counter); `dropped_ids` keeps the first ids dropped in this process.
    """

    STACKED_EXTRAS = ("teacher_logits", "index")

    def __init__(
        self,
        max_recorded: int = 100,
        keep_invalid: bool = False,
        return_empty: bool = False,
        report_problems: bool = False,
    ):
        self._dropped = multiprocessing.get_context("spawn").Value("q", 0)
        self.max_recorded = max_recorded
        self.dropped_ids: list[str] = []
        self.keep_invalid = keep_invalid
        self.return_empty = return_empty
        self.report_problems = report_problems

    @property
    def num_dropped(self) -> int:
        return int(self._dropped.value)

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
        is_valid = [bool(e.get("valid", True)) for e in examples]
        kept = list(examples) if self.keep_invalid else [e for e, ok in zip(examples, is_valid) if ok]
        dropped = 0 if self.keep_invalid else len(examples) - len(kept)
        if dropped:
            with self._dropped.get_lock():
                self._dropped.value += dropped
            for example, ok in zip(examples, is_valid):
                if not ok and len(self.dropped_ids) < self.max_recorded:
                    self.dropped_ids.append(str(example.get("image_id", "")))
        if not kept and not self.return_empty:
            return None
        if "source" in examples[0]:  # augment_on: device; pixels are made where the model runs
            batch: dict[str, Any] = source_batch(kept)
        else:
            batch = {"pixel_values": _stack([e["pixel_values"] for e in kept], examples[0]["pixel_values"])}
        batch.update(
            labels=_stack(
                [torch.as_tensor(e["labels"], dtype=torch.float32) for e in kept],
                torch.as_tensor(examples[0]["labels"], dtype=torch.float32),
            )
        )
        masks = [e.get("anatomy_masks") for e in kept]
        if all(m is not None for m in masks) and examples[0].get("anatomy_masks") is not None:
            batch["anatomy_masks"] = _stack(masks, examples[0]["anatomy_masks"])
        for key in self.STACKED_EXTRAS:
            if all(key in e for e in examples):
                batch[key] = _stack(
                    [torch.as_tensor(e[key]) for e in kept], torch.as_tensor(examples[0][key])
                )
        if self.keep_invalid:
            batch["valid"] = torch.tensor(is_valid, dtype=torch.bool)
        if self.report_problems:
            batch["problems"] = [
                f"{e.get('problem', 'corrupt_image')}: {e.get('where', e.get('image_id', ''))}"
                for e, ok in zip(examples, is_valid)
                if not ok
            ]
        return batch


def source_batch(examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """The decoded sources of `source_one` examples as one batch: `source` (B, H, W) padded to the largest,
    `source_size` (B, 2), `augment` (B, 7) and `source_mask` (B, H, W) when every example has a mask."""
    source, sizes = pad_stack([e["source"] for e in examples])
    batch = {
        "source": source,
        "source_size": sizes,
        "augment": torch.stack([e["augment"] for e in examples]).reshape(-1, NUM_PARAMS),
    }
    masks = [e.get("source_mask") for e in examples]
    if masks and all(m is not None for m in masks):
        batch["source_mask"] = pad_stack(masks)[0]
    return batch


def _stack(tensors: Sequence[torch.Tensor], template: torch.Tensor) -> torch.Tensor:
    """`torch.stack`, or an empty (0, *template.shape) tensor for no tensors."""
    return torch.stack(list(tensors)) if tensors else template.new_zeros((0, *template.shape))


_DEFAULT_COLLATOR: ClarityCollator | None = None


def collate_fn(examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor] | None:
    """Module-level `ClarityCollator` (drops invalid examples; use your own instance to read its counter)."""
    global _DEFAULT_COLLATOR
    if _DEFAULT_COLLATOR is None:
        _DEFAULT_COLLATOR = ClarityCollator()
    return _DEFAULT_COLLATOR(examples)
