# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Cached teacher logits: run the frozen teacher once over the un-augmented images and store a `teacher_logits`
column, so that a student run without augmentation (`use_cached_teacher_logits=True, augment=False`) needs no
teacher forward pass. With augmentation the cache is refused: the teacher must see the student's augmented view."""

from __future__ import annotations

import torch
from datasets import DatasetDict, List, Value
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .data import ClarityTrainingDataset, eval_collator


@torch.no_grad()
def compute_teacher_logits(
    teacher: torch.nn.Module, dataset, image_size: int, config, batch_size: int = 32, device: str = "cpu"
) -> list[list[float]]:
    """(N, C) teacher logits of one split, preprocessed exactly like the training data without augmentation."""
    teacher = teacher.eval().to(device)
    wrapped = ClarityTrainingDataset(
        dataset, image_size, config, augment=False, name="cache", with_anatomy_masks=False
    )
    loader = DataLoader(wrapped, batch_size=batch_size, shuffle=False, collate_fn=eval_collator())
    logits = []
    for batch in tqdm(loader, desc="teacher logits", disable=config.disable_tqdm):
        logits.append(teacher(pixel_values=batch["pixel_values"].to(device)).logits.float().cpu())
    return torch.cat(logits).tolist()


def add_teacher_logits(
    teacher: torch.nn.Module,
    datasets: DatasetDict,
    image_size: int,
    config,
    splits: list[str],
    batch_size: int = 32,
) -> DatasetDict:
    """A copy of `datasets` where each split of `splits` has a `teacher_logits` column (float32, length C)."""
    result = DatasetDict(dict(datasets))
    num_labels = teacher.config.num_labels
    for split in splits:
        dataset = datasets[split]
        if "teacher_logits" in dataset.column_names:
            dataset = dataset.remove_columns("teacher_logits")
        values = compute_teacher_logits(teacher, dataset, image_size, config, batch_size)
        result[split] = dataset.add_column(
            "teacher_logits", values, feature=List(Value("float32"), length=num_labels)
        )
    return result
