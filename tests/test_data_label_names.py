# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Label names are dataset features (`findings`, a list of `ClassLabel`s beside the multi-hot `labels`): they
survive Parquet, `save_to_disk` and a cache without any `info.description`, and data written before (names only in
that JSON) still loads, with its `findings` added."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, load_dataset, load_from_disk

from clarity_hf.configuration_clarity import NIH_PATHOLOGIES
from clarity_hf.data.cache import build_cache, source_fingerprint
from clarity_hf.data.features import (
    METADATA_KEY,
    attach_metadata,
    clarity_features,
    get_label_names,
    get_metadata,
    make_metadata,
)
from clarity_hf.data.sources import load_training_data
from clarity_hf.data.synthetic import build_synthetic_cxr


@pytest.fixture(scope="module")
def synthetic():
    dataset = build_synthetic_cxr(
        num_train=12, num_validation=4, num_test=0, image_size=32, seed=4, num_proc=1
    )
    dataset.pop("test")  # empty: `datasets` cannot load an empty split back from disk
    return dataset


def _positives(split: Dataset) -> list[list[int]]:
    labels = np.asarray(split.with_format("numpy")["labels"])
    return [np.flatnonzero(row).tolist() for row in labels]


def _old_style(split: Dataset) -> Dataset:
    """`split` as clarity_hf wrote it before: no `findings` column, the label names in the description's JSON."""
    metadata = get_metadata(split)
    old = split.remove_columns("findings")
    old.info.description = json.dumps({METADATA_KEY: metadata})
    return old


def test_findings_carry_the_names_and_the_positive_labels(synthetic):
    train = synthetic["train"]
    assert train.features == clarity_features(NIH_PATHOLOGIES, with_anatomy_mask=True)
    assert train.features["findings"].feature.names == list(NIH_PATHOLOGIES)
    assert train["findings"] == _positives(train) and any(train["findings"])
    # The names live in the features only, not a second time in the description's JSON.
    assert "label_names" not in json.loads(train.info.description)[METADATA_KEY]
    assert get_label_names(train) == list(NIH_PATHOLOGIES) == get_metadata(synthetic)["label_names"]


def test_names_survive_parquet_and_save_to_disk_without_the_description(synthetic, tmp_path):
    train = synthetic["train"]
    train.to_parquet(str(tmp_path / "train.parquet"))
    from_parquet = load_dataset("parquet", data_files=str(tmp_path / "train.parquet"))["train"]
    assert not from_parquet.info.description  # Parquet keeps the features, not the description
    assert get_label_names(from_parquet) == list(NIH_PATHOLOGIES)
    assert from_parquet["findings"] == train["findings"]
    synthetic.save_to_disk(str(tmp_path / "saved"))
    saved = load_from_disk(str(tmp_path / "saved"))
    saved["validation"].info.description = ""
    assert get_label_names(saved["validation"]) == list(NIH_PATHOLOGIES)
    assert saved["validation"].features["findings"] == train.features["findings"]


def test_data_with_names_only_in_the_description_still_loads(synthetic, tmp_path):
    old = _old_style(synthetic["train"])
    assert "findings" not in old.column_names and get_label_names(old) == list(NIH_PATHOLOGIES)
    old.save_to_disk(str(tmp_path / "old"))
    reloaded = load_from_disk(str(tmp_path / "old"))
    assert get_label_names(reloaded) == list(NIH_PATHOLOGIES)
    upgraded = attach_metadata(reloaded, get_metadata(reloaded))
    assert upgraded.features == synthetic["train"].features
    assert upgraded["findings"] == synthetic["train"]["findings"]
    # A data folder of the old kind with only a train split, as the commands read it: the validation split is
    # drawn by patient (a selection of rows) and both get their findings.
    DatasetDict({"train": old}).save_to_disk(str(tmp_path / "old_dict"))
    loaded = load_training_data(str(tmp_path / "old_dict"), validation_fraction=0.3)
    assert sorted(loaded) == ["train", "validation"] and get_label_names(loaded) == list(NIH_PATHOLOGIES)
    for split in loaded.values():
        assert split.features["findings"] == synthetic["train"].features["findings"]
        assert split["findings"] == _positives(split) and len(split) < len(old)


def test_a_cache_written_before_the_names_were_features_still_loads_and_resumes(synthetic, tmp_path):
    """The shards hold no `findings` (derived, written back by `load_cache` from the manifest's names), and the
    source fingerprint leaves it out: a cache built from the same data before the names were features has the same
    shards and parameters, so it loads and resumes."""
    old_source = DatasetDict({name: _old_style(split) for name, split in synthetic.items()})
    assert source_fingerprint(old_source) == source_fingerprint(synthetic)
    cache = tmp_path / "cache"
    build_cache(old_source, cache, image_size=16, num_proc=1, shard_size=8, progress=False)
    assert all("findings" not in pq.read_schema(shard).names for shard in cache.glob("*/shard-*.parquet"))
    first = {shard.name: shard.read_bytes() for shard in cache.glob("*/shard-*.parquet")}
    loaded = build_cache(synthetic, cache, image_size=16, num_proc=1, shard_size=8, progress=False)
    assert {shard.name: shard.read_bytes() for shard in cache.glob("*/shard-*.parquet")} == first
    assert get_label_names(loaded) == list(NIH_PATHOLOGIES)
    for name, split in loaded.items():
        assert isinstance(split.features["findings"].feature, ClassLabel)
        assert split["findings"] == synthetic[name]["findings"]


def test_new_names_rewrite_the_findings_and_wrong_names_are_refused(synthetic):
    train = synthetic["train"]
    renamed = [name.upper() for name in NIH_PATHOLOGIES]
    relabelled = attach_metadata(train, make_metadata(renamed, "test"))
    assert get_label_names(relabelled) == renamed and relabelled["findings"] == train["findings"]
    assert relabelled.column_names.count("findings") == 1
    with pytest.raises(ValueError, match="do not fit"):
        attach_metadata(train, make_metadata(NIH_PATHOLOGIES[:3], "test"))
    empty = attach_metadata(train.select([]).remove_columns("findings"), make_metadata(NIH_PATHOLOGIES, "t"))
    assert len(empty) == 0 and get_label_names(empty) == list(NIH_PATHOLOGIES)
