# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Data for the training loop: loading the splits, decoding images robustly, deterministic augmentation, the
epoch-seeded sampler and the collate functions that drop (train) or flag (evaluation) unreadable images.

Determinism. The data order of epoch `e` is a permutation drawn from `seed + e`, and the augmentation of sample `i`
in epoch `e` from a generator seeded with `(seed, e, i)`. Neither touches the global RNGs, so a run resumed in the
middle of an epoch (Accelerate's `skip_first_batches`) sees exactly the batches and views it would have seen, and
the view of a sample does not depend on the number of processes.

Bad images. Images are decoded here (the `image` column is read with `Image(decode=False)`), so a missing file or
a corrupt PNG yields `valid=False` with the reason instead of an exception; the train collate function drops such
samples and counts them by kind, the evaluation collate function keeps a zero image and a `valid=False` flag so
that `gather_for_metrics` sees fixed-size batches.
"""

from __future__ import annotations

import inspect
import io
import logging
import math
import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset, DatasetDict, Image, load_from_disk
from PIL import Image as PILImage
from torch.utils.data import Sampler

logger = logging.getLogger(__name__)

SKIP_KINDS = ("missing_file", "corrupt_image")


def load_datasets(config) -> DatasetDict:
    """The train and validation splits named by `config` (synthetic, or a `save_to_disk` folder)."""
    if config.dataset == "synthetic":
        dataset = build_synthetic(config)
    else:
        if not os.path.isdir(config.dataset):
            raise FileNotFoundError(f"dataset folder {config.dataset!r} does not exist (or give dataset: synthetic)")
        dataset = load_from_disk(config.dataset)
        if isinstance(dataset, Dataset):
            raise ValueError(f"{config.dataset}: expected a DatasetDict with splits, got a single Dataset")
    for split in (config.train_split, config.validation_split):
        if split not in dataset:
            raise ValueError(f"dataset {config.dataset!r} has no split {split!r} (splits: {list(dataset)})")
    if config.max_train_samples:
        dataset[config.train_split] = dataset[config.train_split].select(range(config.max_train_samples))
    if config.max_eval_samples:
        dataset[config.validation_split] = dataset[config.validation_split].select(range(config.max_eval_samples))
    return dataset


def build_synthetic(config) -> DatasetDict:
    """The data package's synthetic generator when it is installed, else the minimal one in `toy_data`."""
    kwargs = {
        "num_train": config.synthetic_num_train,
        "num_validation": config.synthetic_num_validation,
        "num_test": 0,
        "image_size": config.synthetic_image_size,
        "seed": config.synthetic_seed,
    }
    try:
        from ..data.synthetic import build_synthetic_cxr
    except ImportError:
        from .toy_data import build_toy_cxr

        return build_toy_cxr(**kwargs)
    accepted = inspect.signature(build_synthetic_cxr).parameters
    return build_synthetic_cxr(**{key: value for key, value in kwargs.items() if key in accepted})


def get_dataset_label_names(dataset: DatasetDict | Dataset) -> list[str] | None:
    """The label names stored by the clarity_hf data builders, or None."""
    try:
        from ..data.features import get_label_names
    except ImportError:
        return None
    try:
        return get_label_names(dataset)
    except ValueError:
        return None


class EpochSeededSampler(Sampler[int]):
    """A permutation of `range(num_samples)` drawn from `seed + epoch` (identity order when `shuffle=False`).

    Set `sampler.epoch` before iterating. (Deliberately no `set_epoch` method: Accelerate's data loader calls
    `set_epoch` with its own iteration counter, which restarts at 0 in a loader made by `skip_first_batches`.)
    """

    def __init__(self, num_samples: int, seed: int, shuffle: bool = True):
        self.num_samples = num_samples
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.num_samples))
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.num_samples, generator=generator).tolist())

    def __len__(self) -> int:
        return self.num_samples


def _open_image(value, column: str, row: int, dataset_name: str) -> tuple[PILImage.Image | None, str | None, str]:
    """Decode an `Image(decode=False)` value; returns (image, problem kind or None, description)."""
    if value is None:
        return None, "missing_file", f"{dataset_name}[{row}] {column}: no image"
    path = value.get("path") if isinstance(value, dict) else None
    data = value.get("bytes") if isinstance(value, dict) else None
    where = path or f"{dataset_name}[{row}] {column}"
    try:
        if data is None:
            if not path or not os.path.isfile(path):
                return None, "missing_file", f"{where}: file not found"
            with open(path, "rb") as handle:
                data = handle.read()
        image = PILImage.open(io.BytesIO(data))
        image.load()
        return image, None, where
    except Exception as err:  # PIL raises several types for truncated / corrupt files
        return None, "corrupt_image", f"{where}: cannot decode ({type(err).__name__}: {err})"


def _to_tensor(image: PILImage.Image, size: int) -> torch.Tensor:
    """Grayscale (any mode, 8 or 16 bit) -> (1, size, size) float in [0, 1]."""
    if image.mode in ("I;16", "I;16B", "I", "F"):
        array = np.asarray(image, dtype=np.float32)
        array = (array - array.min()) / max(float(array.max() - array.min()), 1e-6)
        image = PILImage.fromarray((array * 255).astype(np.uint8))
    image = image.convert("L").resize((size, size), PILImage.BILINEAR)
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)[None]


def augment_sample(
    pixels: torch.Tensor, mask: torch.Tensor | None, generator: torch.Generator, config
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """CXR-safe augmentation of a (1, S, S) image (and its mask): random resized crop (area in
    [scale_min, 1]), rotation within +-degrees, brightness / contrast jitter. No flips (anatomy is lateralised)."""

    def uniform(low: float, high: float) -> float:
        return low + (high - low) * torch.rand((), generator=generator).item()

    scale = math.sqrt(uniform(config.augment_scale_min, 1.0))
    shift_x, shift_y = uniform(-(1 - scale), 1 - scale), uniform(-(1 - scale), 1 - scale)
    angle = math.radians(uniform(-config.augment_rotation_degrees, config.augment_rotation_degrees))
    cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
    theta = torch.tensor([[cos, -sin, shift_x], [sin, cos, shift_y]], dtype=torch.float32)[None]
    grid = F.affine_grid(theta, (1, 1, *pixels.shape[-2:]), align_corners=False)
    pixels = F.grid_sample(pixels[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
    if mask is not None:
        mask = F.grid_sample(mask[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    brightness = uniform(-config.augment_brightness, config.augment_brightness)
    contrast = uniform(1 - config.augment_contrast, 1 + config.augment_contrast)
    mean = pixels.mean()
    pixels = ((pixels - mean) * contrast + mean + brightness).clamp(0, 1)
    return pixels, mask


class ClarityTrainingDataset(torch.utils.data.Dataset):
    """Wraps one split: item i -> `pixel_values` (3,S,S), `labels` (C,), optional `anatomy_masks` (1,S,S) and
    `teacher_logits` (C,), `valid`, `problem` / `where` (why and which file, when not valid), `index`."""

    def __init__(
        self,
        dataset: Dataset,
        image_size: int,
        config,
        augment: bool = False,
        with_teacher_logits: bool = False,
        name: str = "train",
    ):
        columns = ["image", "labels"]
        if "anatomy_mask" in dataset.column_names:
            columns.append("anatomy_mask")
        if with_teacher_logits:
            if "teacher_logits" not in dataset.column_names:
                raise ValueError(
                    f"split {name!r} has no `teacher_logits` column: write it with scripts/cache_teacher_logits.py"
                )
            columns.append("teacher_logits")
        dataset = dataset.select_columns(columns)
        for column in ("image", "anatomy_mask"):
            if column in dataset.column_names and isinstance(dataset.features[column], Image):
                dataset = dataset.cast_column(column, Image(decode=False))
        self.dataset = dataset
        self.image_size = image_size
        self.config = config
        self.augment = augment
        self.name = name
        self.seed = config.seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        row = self.dataset[int(index)]
        image, problem, where = _open_image(row["image"], "image", index, self.name)
        size = self.image_size
        labels = torch.tensor(row["labels"], dtype=torch.float32)
        item = {"labels": labels, "index": int(index), "valid": problem is None, "problem": problem, "where": where}
        mask = None
        if "anatomy_mask" in row:
            mask_image, mask_problem, mask_where = _open_image(row["anatomy_mask"], "anatomy_mask", index, self.name)
            if image is not None and mask_problem is not None:
                item.update(valid=False, problem=mask_problem, where=mask_where)
                image = None
            mask = _to_tensor(mask_image, size) if mask_image is not None else torch.zeros(1, size, size)
        pixels = _to_tensor(image, size) if image is not None else torch.zeros(1, size, size)
        if self.augment and image is not None:
            generator = torch.Generator().manual_seed(hash((self.seed, self.epoch, int(index))) & 0x7FFF_FFFF_FFFF_FFFF)
            pixels, mask = augment_sample(pixels, mask, generator, self.config)
        pixels = (pixels - self.config.image_mean) / self.config.image_std
        item["pixel_values"] = pixels.expand(3, -1, -1).contiguous()
        if mask is not None:
            item["anatomy_masks"] = mask
        if "teacher_logits" in row:
            item["teacher_logits"] = torch.tensor(row["teacher_logits"], dtype=torch.float32)
        return item


TENSOR_KEYS = ("pixel_values", "labels", "anatomy_masks", "teacher_logits")


def collate_train(samples: Sequence[dict]) -> dict:
    """Stack the valid samples; count the others by kind in `skipped` (a (len(SKIP_KINDS),) tensor) and list
    their files in `skipped_files`."""
    valid = [sample for sample in samples if sample["valid"]]
    batch = _stack(valid, samples[0])
    batch["skipped"] = torch.tensor([sum(s["problem"] == kind for s in samples) for kind in SKIP_KINDS])
    batch["skipped_files"] = [f"{s['problem']}: {s['where']}" for s in samples if not s["valid"]]
    return batch


def collate_eval(samples: Sequence[dict]) -> dict:
    """Stack every sample (unreadable ones as zero images) with a boolean `valid` flag."""
    batch = _stack(samples, samples[0])
    batch["valid"] = torch.tensor([bool(s["valid"]) for s in samples])
    batch["skipped_files"] = [f"{s['problem']}: {s['where']}" for s in samples if not s["valid"]]
    return batch


def _stack(samples: Sequence[dict], template: dict) -> dict:
    batch = {}
    for key in TENSOR_KEYS:
        if key in template:
            if samples:
                batch[key] = torch.stack([sample[key] for sample in samples])
            else:
                batch[key] = template[key].new_zeros((0, *template[key].shape))
    batch["index"] = torch.tensor([sample["index"] for sample in samples], dtype=torch.long)
    return batch
