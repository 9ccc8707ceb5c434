# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Data for the training loop: loading the splits, decoding images robustly, deterministic augmentation, the
epoch-seeded sampler and the collate functions that drop (train) or flag (evaluation) unreadable images.

Decoding, augmentation and collation are the data package's (`clarity_hf.data.transforms`); this module adds the
split loading, the sampler and the per-sample seeding.

Determinism. The data order of epoch `e` is a permutation drawn from `seed + e`, and the augmentation of sample `i`
in epoch `e` from a generator seeded with `(seed, e, i)` (`ClarityTransform.sample_rng`). Neither touches the
global RNGs, so a run resumed in the
middle of an epoch (Accelerate's `skip_first_batches`) sees exactly the batches and views it would have seen, and
the view of a sample does not depend on the number of processes. With `augment_on: device` (the default) the loader
workers only decode and draw those parameters; `ClarityTrainingDataset.finish_batch` warps the batch on the model's
device (`clarity_hf.data.device_augment`), so the views are the same draws, resampled once instead of twice.

Bad images. Images are decoded by the transform (the `image` column is read with `Image(decode=False)`), so a
missing file or a corrupt PNG yields `valid=False` with the reason instead of an exception; the train collator drops
such samples and lists them, the evaluation collator keeps a zero image and a `valid=False` flag so that
`gather_for_metrics` sees fixed-size batches.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from datasets import Dataset, DatasetDict, Image
from torch.utils.data import Sampler

from ..data.features import get_label_names
from ..data.sources import load_training_data
from ..data.transforms import IMAGE_COLUMNS, PROBLEM_KINDS, ClarityCollator, ClarityTransform
from ..image_processing_clarity import ClarityImageProcessor

logger = logging.getLogger(__name__)

SKIP_KINDS = PROBLEM_KINDS
# Where the training augmentation runs: per sample in the loader ("cpu") or per batch where the model runs.
AUGMENT_ON = ("cpu", "device")


def load_datasets(config) -> DatasetDict:
    """The train and validation splits named by `config`: synthetic, or the user's data through
    `clarity_hf.data.sources.load_training_data` (CSV, image folder, `save_to_disk` folder, `datasets` name)."""
    if config.dataset == "synthetic":
        dataset = build_synthetic(config)
    else:
        dataset = load_training_data(
            config.dataset,
            label_names=config.label_names,
            image_column=config.dataset_image_column,
            label_column=config.dataset_label_column,
            label_separator=config.dataset_label_separator,
            patient_column=config.dataset_patient_column,
            split_column=config.dataset_split_column,
            boxes_csv=config.dataset_boxes_csv,
            image_root=config.dataset_image_root,
            validation_fraction=config.validation_fraction,
            seed=config.seed,
            skip_missing=config.dataset_skip_missing,
        )
    for split in (config.train_split, config.validation_split):
        if split not in dataset:
            raise ValueError(f"dataset {config.dataset!r} has no split {split!r} (splits: {list(dataset)})")
    for split, limit in (
        (config.train_split, config.max_train_samples),
        (config.validation_split, config.max_eval_samples),
    ):
        if limit:  # the first `limit` rows, or all of a smaller split
            dataset[split] = dataset[split].select(range(min(limit, len(dataset[split]))))
    return dataset


def build_synthetic(config) -> DatasetDict:
    """The data package's synthetic benchmark (`clarity_hf.data.synthetic.build_synthetic_cxr`) at the config's
    sizes; the empty `test` split is dropped."""
    from ..data.synthetic import build_synthetic_cxr

    dataset = build_synthetic_cxr(
        num_train=config.synthetic_num_train,
        num_validation=config.synthetic_num_validation,
        num_test=0,
        image_size=config.synthetic_image_size,
        seed=config.synthetic_seed,
    )
    return DatasetDict({name: split for name, split in dataset.items() if len(split) > 0})


def label_counts(dataset: Dataset) -> tuple[np.ndarray, int]:
    """Per-class positive counts (C,) of a split's multi-hot `labels`, and the number of images."""
    labels = np.asarray(dataset.select_columns(["labels"])["labels"], dtype=np.float64)  # (N, C)
    return labels.sum(axis=0), len(labels)


def balanced_pos_weight(dataset: Dataset, name: str = "train") -> list[float]:
    """Per-class negatives / positives of a split's multi-hot `labels` (the `pos_weight` of a class-balanced BCE)."""
    positives, total = label_counts(dataset)
    if (positives == 0).any():
        raise ValueError(
            f"pos_weight=balanced: split {name!r} has no positive image for class index(es) "
            f"{np.flatnonzero(positives == 0).tolist()}"
        )
    return ((total - positives) / positives).tolist()


def prior_logits(dataset: Dataset, pos_weight: Sequence[float] | None = None) -> list[float]:
    """The constant logit per class that minimises the (pos_weight-weighted) BCE on a split: log(w * n_pos / n_neg).

    Counts get half a pseudo-image on each side, so that a class without positives (or without negatives) gives a
    finite value; with `pos_weight` = negatives / positives it is close to 0 for every class."""
    positives, total = label_counts(dataset)
    weights = np.ones_like(positives) if pos_weight is None else np.asarray(pos_weight, dtype=np.float64)
    return np.log(weights * (positives + 0.5) / (total - positives + 0.5)).tolist()


def get_dataset_label_names(dataset: DatasetDict | Dataset) -> list[str] | None:
    """The label names stored by the clarity_hf data builders, or None (a data set from elsewhere)."""
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


class ClarityTrainingDataset(torch.utils.data.Dataset):
    """One split for the training loop, through the data package's `ClarityTransform`: item i ->
    `pixel_values` (3,S,S), `labels` (C,), optional `anatomy_masks` (1,S,S) and `teacher_logits` (C,), `valid`,
    `index`, and `problem` / `where` when not valid. With `augment`, the view of sample i in epoch `epoch` is drawn
    from `transform.sample_rng(epoch, i)`: a function of (config.seed, epoch, i) only.

    `with_anatomy_masks=False` leaves the masks unread (a model that does not use them must not lose an image to a
    bad mask). Without `augment`, item i is the same in every epoch: when the whole split fits in `memory_mb`, each
    item is decoded once and kept (unreadable ones too, so that every epoch skips and counts the same images). Use
    it in the loading process only: a DataLoader worker would fill a copy that dies with it."""

    def __init__(
        self,
        dataset: Dataset,
        image_size: int | ClarityImageProcessor,
        config,
        augment: bool = False,
        with_teacher_logits: bool = False,
        name: str = "train",
        with_anatomy_masks: bool = True,
        memory_mb: float = 0,
        augment_on: str = "cpu",
    ):
        if augment_on not in AUGMENT_ON:
            raise ValueError(f"augment_on must be one of {AUGMENT_ON}, got {augment_on!r}")
        columns = ["image", "labels"]
        if with_anatomy_masks and "anatomy_mask" in dataset.column_names:
            columns.append("anatomy_mask")
        if with_teacher_logits:
            if "teacher_logits" not in dataset.column_names:
                raise ValueError(
                    f"split {name!r} has no `teacher_logits` column: write it with `clarity cache-teacher-logits`"
                )
            columns.append("teacher_logits")
        dataset = dataset.select_columns(columns)
        for column in IMAGE_COLUMNS:
            if column in dataset.column_names and isinstance(dataset.features[column], Image):
                dataset = dataset.cast_column(column, Image(decode=False))
        self.dataset = dataset
        self.augment = augment
        self.name = name
        self.epoch = 0
        self.transform = make_transform(config, image_size, augment)
        from ..data.device_augment import BatchAugmenter

        # Only an augmented split moves its work to the device; an unaugmented one is decoded (and kept) as is.
        self.augmenter = BatchAugmenter.like(self.transform) if augment and augment_on == "device" else None
        # float32 pixel values (3 channels) and mask (1) per sample; labels and logits are negligible
        sample_bytes = (3 + ("anatomy_mask" in columns)) * 4 * self.transform.image_size**2
        fits = len(dataset) * sample_bytes <= memory_mb * 2**20
        self._decoded: dict[int, dict] | None = {} if not augment and fits else None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        if self._decoded is None:
            return self._load(index)
        if index not in self._decoded:
            self._decoded[index] = self._load(index)
        return dict(self._decoded[index])  # a fresh dict: a caller may add or pop keys

    def _load(self, index: int) -> dict:
        row = self.dataset[index]
        image = row["image"]
        path = image.get("path") if isinstance(image, dict) else None
        rng = self.transform.sample_rng(self.epoch, index) if self.augment else None
        one = self.transform.transform_one if self.augmenter is None else self.transform.source_one
        item = one(image, row.get("anatomy_mask"), path or f"{self.name}[{index}]", rng=rng)
        item["labels"] = torch.tensor(row["labels"], dtype=torch.float32)
        item["index"] = index
        if "teacher_logits" in row:
            item["teacher_logits"] = torch.tensor(row["teacher_logits"], dtype=torch.float32)
        return item

    def finish_batch(self, batch: dict) -> dict:
        """A collated batch, already on the model's device -> the model's batch: with `augment_on: device` the
        decoded sources are augmented here (`pixel_values`, `anatomy_masks`); otherwise the batch as it came."""
        if self.augmenter is None or "source" not in batch:
            return batch
        batch = dict(batch)
        masks = batch.pop("source_mask", None)
        batch["pixel_values"], anatomy = self.augmenter(
            batch.pop("source"), batch.pop("source_size"), batch.pop("augment"), masks
        )
        if anatomy is not None:
            batch["anatomy_masks"] = anatomy
        return batch


def make_transform(config, processor, augment: bool) -> ClarityTransform:
    """The run's `ClarityTransform`: the pixels of `processor` (the run's `ClarityImageProcessor`, or a side in
    pixels: then `run_processor(config, side)`) and the augmentation strengths; a bad mask invalidates the sample
    (every sample of a batch then has a mask, on every process)."""
    if not isinstance(processor, ClarityImageProcessor):
        from .preprocessing import run_processor

        processor = run_processor(config, int(processor))
    return ClarityTransform.from_processor(
        processor,
        train=augment,
        scale=(config.augment_scale_min, 1.0),
        rotation=config.augment_rotation_degrees,
        brightness=config.augment_brightness,
        contrast=config.augment_contrast,
        seed=config.seed,
        invalid_on_bad_mask=True,
    )


def train_collator() -> ClarityCollator:
    """Drops invalid samples (a batch may end up empty) and lists them in `problems`."""
    return ClarityCollator(return_empty=True, report_problems=True)


def eval_collator() -> ClarityCollator:
    """Keeps every sample (unreadable ones as zero images) with a boolean `valid` flag: fixed-size batches."""
    return ClarityCollator(keep_invalid=True, report_problems=True)


def count_problems(problems: Sequence[str]) -> torch.Tensor:
    """(len(SKIP_KINDS),) counts of the collator's "kind: image" strings."""
    return torch.tensor([sum(problem.startswith(kind + ":") for problem in problems) for kind in SKIP_KINDS])
