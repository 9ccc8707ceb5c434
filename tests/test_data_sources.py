"""Fine-tuning data from the command line: a CSV, an image folder, a `save_to_disk` folder, a `datasets` name."""

import csv
import json

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image
from PIL import Image as PILImage
from training_helpers import tiny_config

from clarity_hf import ClarityConfig, ClarityForMultiLabelLocalization
from clarity_hf.configuration_clarity import NIH_PATHOLOGIES
from clarity_hf.data.features import get_label_names
from clarity_hf.data.sources import load_training_data
from clarity_hf.training import train
from clarity_hf.training.arguments import parse_training_config

LABELS = ["Effusion", "Mass", "Nodule"]


def _png(path, seed, size=32):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size), dtype=np.uint8)
    PILImage.fromarray(pixels, mode="L").save(path)


def write_csv_data(folder, num_patients=8, per_patient=3, delimited=True, split=False):
    """A CSV of `num_patients * per_patient` images with 3 labels, the images beside it."""
    rows = []
    for patient in range(num_patients):
        for k in range(per_patient):
            index = patient * per_patient + k
            name = f"images/{index:03d}.png"
            _png(folder / name, index)
            findings = [LABELS[index % 3]] + ([LABELS[(index + 1) % 3]] if index % 4 == 0 else [])
            row = {"path": name, "Patient ID": f"p{patient}"}
            if delimited:
                row["Finding Labels"] = "|".join(findings) if index % 5 else "No Finding"
            else:
                row.update({label: int(label in findings) for label in LABELS})
            if split:
                row["split"] = "val" if patient >= num_patients - 2 else "train"
            rows.append(row)
    path = folder / "labels.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _patients(split):
    return set(split["patient_id"])


def test_csv_delimited_labels_patient_split(tmp_path):
    path = write_csv_data(tmp_path)
    data = load_training_data(path, validation_fraction=0.25, seed=3)
    assert set(data) == {"train", "validation"} and get_label_names(data["validation"]) == LABELS
    assert len(data["train"]) + len(data["validation"]) == 24
    assert _patients(data["train"]).isdisjoint(_patients(data["validation"]))
    assert len(_patients(data["validation"])) == 2  # a quarter of the 8 patients, whole
    again = load_training_data(path, validation_fraction=0.25, seed=3)
    assert again["validation"]["image_id"] == data["validation"]["image_id"]  # seeded: the same split
    other = load_training_data(path, validation_fraction=0.25, seed=4)
    assert other["validation"]["image_id"] != data["validation"]["image_id"]
    labels = {row["image_id"]: row["labels"] for split in data.values() for row in split}
    assert labels["004.png"] == [0.0, 1.0, 1.0]  # "Mass|Nodule"
    assert labels["005.png"] == [0.0, 0.0, 0.0]  # "No Finding"
    assert labels["007.png"] == [0.0, 1.0, 0.0]


def test_csv_binary_columns_and_split_column_kept(tmp_path):
    path = write_csv_data(tmp_path, delimited=False, split=True)
    data = load_training_data(path)
    assert get_label_names(data["train"]) == LABELS  # the 0/1 columns, in CSV order
    assert len(data["validation"]) == 6 and _patients(data["validation"]) == {"p6", "p7"}
    assert data["train"]["split"] == ["train"] * 18  # the column is kept, `val` read as validation
    rows = {row["image_id"]: row["labels"] for row in data["validation"]}
    assert rows["018.png"] == [1.0, 0.0, 0.0] and rows["020.png"] == [1.0, 0.0, 1.0]


def test_image_folder_of_class_folders(tmp_path):
    for index in range(12):
        _png(tmp_path / ("Effusion", "Mass", "No Finding")[index % 3] / f"{index}.png", index)
    data = load_training_data(tmp_path, validation_fraction=0.25, seed=0)
    assert get_label_names(data["train"]) == ["Effusion", "Mass"]
    assert len(data["validation"]) == 3 and len(data["train"]) == 9
    labels = {row["image_id"]: row["labels"] for split in data.values() for row in split}
    assert labels["Mass/1.png"] == [0.0, 1.0] and labels["No Finding/2.png"] == [0.0, 0.0]


def test_image_folder_with_split_folders(tmp_path):
    for split, count in (("train", 6), ("val", 2)):
        for index in range(count):
            _png(tmp_path / split / ("Effusion", "Mass")[index % 2] / f"{index}.png", index)
    data = load_training_data(tmp_path)
    assert {name: len(split) for name, split in data.items()} == {"train": 6, "validation": 2}
    assert get_label_names(data["validation"]) == ["Effusion", "Mass"]


def _plain_dataset(tmp_path) -> Dataset:
    features = Features({"image": Image(), "label": ClassLabel(names=["normal", "pneumonia", "tb"])})
    paths = []
    for index in range(10):
        _png(tmp_path / "raw" / f"{index}.png", index, size=24)
        paths.append(str(tmp_path / "raw" / f"{index}.png"))
    return Dataset.from_dict({"image": paths, "label": [i % 3 for i in range(10)]}, features=features)


def test_save_to_disk_folder_of_a_plain_dataset(tmp_path):
    folder = tmp_path / "saved"
    DatasetDict({"train": _plain_dataset(tmp_path)}).save_to_disk(str(folder))
    data = load_training_data(folder, validation_fraction=0.3, seed=1)
    assert get_label_names(data["train"]) == ["normal", "pneumonia", "tb"]
    assert len(data["train"]) == 7 and len(data["validation"]) == 3
    row = data["train"][0]
    assert sum(row["labels"]) == 1.0 and row["original_size"] == [24, 24] and row["image"].size == (24, 24)


def test_datasets_name_is_loaded_and_converted(tmp_path, monkeypatch):
    import datasets

    plain = DatasetDict({"train": _plain_dataset(tmp_path), "validation": _plain_dataset(tmp_path)})
    asked = []
    monkeypatch.setattr(datasets, "load_dataset", lambda name: asked.append(name) or plain)
    data = load_training_data("someone/chest-xrays")
    assert asked == ["someone/chest-xrays"] and {k: len(v) for k, v in data.items()} == {
        "train": 10,
        "validation": 10,
    }
    assert get_label_names(data["validation"]) == ["normal", "pneumonia", "tb"]


def test_bad_sources_say_what_is_wrong(tmp_path):
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"x\.txt: a data file must be a CSV"):
        load_training_data(tmp_path / "x.txt")
    path = write_csv_data(tmp_path / "d", split=True)
    text = path.read_text().replace(",val\n", ",holdout\n")
    path.write_text(text)
    with pytest.raises(ValueError, match=r"unknown split name\(s\) \['holdout'\]"):
        load_training_data(path)


def test_training_command_on_a_csv_gives_a_3_label_model(tmp_path):
    """From a 14-label folder, fine-tuned on a 3-label CSV through the command-line options."""
    start = tmp_path / "nih14"
    model_config = ClarityConfig.from_preset(
        "clarity-tiny", image_size=32, patch_size=8, num_hidden_layers=2, num_attention_map_layers=1
    )
    ClarityForMultiLabelLocalization(model_config).save_pretrained(start)
    assert json.loads((start / "config.json").read_text())["id2label"]["13"] == NIH_PATHOLOGIES[13]
    path = write_csv_data(tmp_path / "data")
    defaults = tiny_config(tmp_path / "run")
    args = ["--dataset", str(path), "--model_name_or_path", str(start), "--output_dir", str(tmp_path / "run")]
    for key in ("image_size", "distillation_loss_weight", "per_device_train_batch_size", "report_to"):
        value = getattr(defaults, key)
        args += [f"--{key}", *(map(str, value) if isinstance(value, list) else [str(value)])]
    config = parse_training_config([*args, "--max_steps", "2", "--disable_tqdm", "true"])
    result = train(config)
    saved = json.loads((tmp_path / "run" / "best_model" / "config.json").read_text())
    assert result.best_model_dir and saved["id2label"] == {"0": "Effusion", "1": "Mass", "2": "Nodule"}
    assert saved["label2id"] == {"Effusion": 0, "Mass": 1, "Nodule": 2}
    model = ClarityForMultiLabelLocalization.from_pretrained(tmp_path / "run" / "best_model")
    logits = model(pixel_values=torch.zeros(1, 3, 32, 32)).logits
    assert logits.shape == (1, 3)
