# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Uploading a clarity_hf data set (a `DatasetDict` or a cache folder) to the Hub as Parquet with its dataset card.
It lives in `hub/`, not `data/`: the hub layer reads the data layer, never the other way round."""

from __future__ import annotations

import os

from datasets import DatasetDict

from ..data.cache import load_cache
from .cards import make_dataset_card

__all__ = ["push_dataset_to_hub"]


def push_dataset_to_hub(
    dataset: DatasetDict | str | os.PathLike,
    repo_id: str,
    private: bool = True,
    token: str | None = None,
    card_text: str | None = None,
    max_shard_size: str = "500MB",
) -> None:
    """Upload a clarity_hf `DatasetDict` (or a cache folder) to the Hub as Parquet, with a dataset card.

    The data goes up with `DatasetDict.push_to_hub` (Parquet shards and the `dataset_info` YAML it writes); the
    card body (`make_dataset_card`, or `card_text`) then replaces the README text, keeping that YAML.
    """
    from huggingface_hub import DatasetCard

    if not isinstance(dataset, DatasetDict):
        dataset = load_cache(dataset)
    body = card_text or make_dataset_card(dataset)
    dataset.push_to_hub(repo_id, private=private, token=token, max_shard_size=max_shard_size)
    card = DatasetCard.load(repo_id, repo_type="dataset", token=token)
    generated = DatasetCard(body)
    for key, value in generated.data.to_dict().items():
        if key not in card.data.to_dict():
            setattr(card.data, key, value)
    card.text = generated.text
    card.push_to_hub(repo_id, repo_type="dataset", token=token)
