# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""One entry for fine-tuning data: a CSV, an image folder, a `save_to_disk` folder or a `datasets` name -> a
`DatasetDict` with train / validation (/ test) splits in the clarity_hf features, label set inferred.

`load_training_data(source)` recognises:

* a CSV file (`.csv`, `.csv.gz`): an image-path column (`path`, `image`, `Image Index`, ... or
  `image_column`), labels as one 0/1 column per label or one delimited column (`Finding Labels` or `labels`
  found by name, or `label_column`; `|` by default), an optional patient column (`Patient ID`, `patient_id`, ...)
  and an optional `split` column; read by `load_csv_dataset`;
* a folder holding a labels CSV (`labels.csv`, `metadata.csv`, or its only CSV): that CSV, paths relative to the
  folder;
* a folder of one sub-folder per class (`load_image_folder`; "No Finding" / "normal" folders are negatives), or of
  `train/`, `validation/`, `test/` sub-folders each holding class sub-folders;
* a `save_to_disk` / `build_cache` folder, or a `datasets` Hub name: a clarity_hf data set is used as it is;
  another one is converted from its image column and its `ClassLabel` (or list of `ClassLabel`) label column.

Splits. A `split` column (or a data set's own splits) is kept (`val` / `valid` / `dev` read as `validation`). A data
set without a validation split gets one of `validation_fraction` of its training images, drawn by patient when
patient ids are known (no patient in two splits), else by image; the draw is seeded (`seed`), so the same data and
seed give the same split. A user's split column that puts a patient in two splits is logged as a warning.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Image
from PIL import Image as PILImage

from .cache import CACHE_INFO, load_dataset_folder
from .features import attach_metadata, clarity_features, get_metadata, make_metadata, open_text
from .generic import NEGATIVE_FOLDERS, load_csv_dataset, load_image_folder

logger = logging.getLogger(__name__)

IMAGE_COLUMNS = ("path", "image", "image_path", "Image Index", "filename", "file")
DELIMITED_LABEL_COLUMNS = ("Finding Labels", "labels", "label", "findings")
PATIENT_COLUMNS = ("patient_id", "Patient ID", "patient", "PatientID", "subject_id")
SPLIT_COLUMNS = ("split",)
LABEL_CSV_NAMES = ("labels.csv", "metadata.csv", "labels.csv.gz", "metadata.csv.gz")
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "val": "validation",
    "valid": "validation",
    "dev": "validation",
    "test": "test",
    "testing": "test",
}


def load_training_data(
    source: str | os.PathLike,
    label_names: Sequence[str] | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    label_separator: str = "|",
    patient_column: str | None = None,
    split_column: str | None = None,
    boxes_csv: str | os.PathLike | None = None,
    image_root: str | os.PathLike | None = None,
    validation_fraction: float = 0.2,
    seed: int = 42,
    skip_missing: bool = False,
) -> DatasetDict:
    """`source` (see the module docstring) -> `DatasetDict` with `train` and `validation` splits (and `test` when
    the source names one), every split carrying the label names (`get_label_names`)."""
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction!r}")
    csv_options = dict(
        label_names=label_names,
        image_column=image_column,
        label_column=label_column,
        label_separator=label_separator,
        patient_column=patient_column,
        split_column=split_column,
        boxes_csv=boxes_csv,
        skip_missing=skip_missing,
    )
    path = Path(source)
    if path.is_file():
        if not path.name.lower().endswith((".csv", ".csv.gz")):
            raise ValueError(f"{path}: a data file must be a CSV (.csv or .csv.gz)")
        dataset = _from_csv(path, image_root=image_root, **csv_options)
    elif path.is_dir():
        dataset = _from_folder(path, csv_options, label_names, skip_missing)
    else:
        dataset = _from_hub_name(str(source), label_names)
    return split_train_validation(dataset, validation_fraction, seed)


def _first_present(header: Sequence[str], names: Sequence[str]) -> str | None:
    return next((name for name in names if name in header), None)


def _is_binary_column(records: list[dict[str, str]], column: str) -> bool:
    return all((record.get(column) or "0").strip() in ("0", "1", "0.0", "1.0") for record in records)


def _check_left_out_columns(path: Path, records: list[dict[str, str]], candidates, label_names) -> None:
    """Columns not taken as labels are never dropped silently: one that is mostly 0/1 is a label column with a
    stray value (an error naming the line); any other is named in a warning."""
    left_out = [column for column in candidates if column not in label_names]
    for column in left_out:
        values = [(line, (record.get(column) or "").strip()) for line, record in enumerate(records, start=2)]
        filled = [(line, value) for line, value in values if value]
        binary = sum(value in ("0", "1", "0.0", "1.0") for _, value in filled)
        if filled and 2 * binary >= len(filled):
            line, value = next((line, v) for line, v in filled if v not in ("0", "1", "0.0", "1.0"))
            raise ValueError(
                f"{path.name}:{line}: column {column!r} looks like a 0/1 label column but holds {value!r}: fix the "
                "value, or name the label columns (label_names) to leave it out"
            )
    if left_out:
        logger.warning("%s: columns %s are not 0/1 and are not used as labels", path.name, left_out)


def _from_csv(path: Path, image_root=None, **options: Any) -> Dataset:
    """The CSV through `load_csv_dataset`, the columns it was not told found by their usual names."""
    with open_text(path) as handle:
        reader = csv.DictReader(handle)
        header = list(reader.fieldnames or [])
        records = [record for _, record in zip(range(1000), reader)]  # enough to tell 0/1 columns from names
    image_column = options.pop("image_column") or _first_present(header, IMAGE_COLUMNS)
    if image_column is None:
        raise ValueError(f"{path.name}:1: no image column (one of {list(IMAGE_COLUMNS)}) in header {header}")
    label_column = options.pop("label_column")
    if label_column is None:
        found = _first_present(header, DELIMITED_LABEL_COLUMNS)
        if found is not None and not _is_binary_column(records, found):
            label_column = found
    patient_column = options.pop("patient_column") or _first_present(header, PATIENT_COLUMNS)
    split_column = options.pop("split_column") or _first_present(header, SPLIT_COLUMNS)
    if label_column is None and options.get("label_names") is None:
        # one 0/1 column per label: the columns whose values are all 0 / 1 and that have no other use
        used = {image_column, patient_column, split_column}
        options["label_names"] = [h for h in header if h not in used and _is_binary_column(records, h)]
        _check_left_out_columns(path, records, [h for h in header if h not in used], options["label_names"])
        if not options["label_names"]:
            raise ValueError(
                f"{path.name}: no label columns found: give one 0/1 column per label or a delimited label column "
                f"({' / '.join(DELIMITED_LABEL_COLUMNS)})"
            )
    return load_csv_dataset(
        path,
        image_column=image_column,
        label_column=label_column,
        patient_column=patient_column,
        split_column=split_column,
        image_root=image_root,
        **options,
    )


def _from_folder(path: Path, csv_options: dict, label_names, skip_missing: bool) -> Dataset | DatasetDict:
    if any((path / name).is_file() for name in ("dataset_dict.json", "state.json", CACHE_INFO)):
        return _to_clarity(load_dataset_folder(path), label_names, str(path))
    labels_csv = [path / name for name in LABEL_CSV_NAMES if (path / name).is_file()]
    csvs = labels_csv or sorted(path.glob("*.csv"))
    if len(csvs) == 1:
        return _from_csv(csvs[0], image_root=path, **csv_options)
    if len(csvs) > 1:
        raise ValueError(f"{path}: several CSV files {[p.name for p in csvs]}; give the labels CSV itself")
    folders = sorted(p.name for p in path.iterdir() if p.is_dir())
    if folders and all(name.lower() in SPLIT_ALIASES for name in folders):
        names = label_names or sorted(
            {p.name for split in folders for p in (path / split).iterdir() if p.is_dir()}
            - set(NEGATIVE_FOLDERS)
        )
        return DatasetDict(
            {
                SPLIT_ALIASES[split.lower()]: load_image_folder(
                    path / split, names, skip_missing=skip_missing
                )
                for split in folders
            }
        )
    return load_image_folder(path, label_names, skip_missing=skip_missing)


def _from_hub_name(name: str, label_names) -> DatasetDict:
    from datasets import load_dataset

    try:
        dataset = load_dataset(name)
    except Exception as err:  # the datasets library raises many kinds; the message says what was tried
        raise ValueError(
            f"dataset {name!r} is neither a file, a folder nor a loadable `datasets` name: {err}"
        ) from err
    return _to_clarity(dataset, label_names, name)


def _to_clarity(dataset: Dataset | DatasetDict, label_names, source: str) -> Dataset | DatasetDict:
    """A clarity_hf data set as it is; another one converted split by split (`_convert_split`)."""
    if get_metadata(dataset).get("label_names") is not None:
        return dataset
    if isinstance(dataset, Dataset):
        return _convert_split(dataset, label_names, source)
    return DatasetDict({name: _convert_split(split, label_names, source) for name, split in dataset.items()})


def _convert_split(dataset: Dataset, label_names, source: str) -> Dataset:
    """A split with an image column and a `ClassLabel` (single label) or list-of-`ClassLabel` (multi-label) column
    -> the clarity_hf features (multi-hot `labels`, `original_size` read from the image header)."""
    features = dataset.features
    image_column = next((name for name, f in features.items() if isinstance(f, Image)), None)
    if image_column is None:
        raise ValueError(f"{source}: no image column (an `Image` feature) in {list(features)}")
    label_column, names, multi = None, None, False
    for column, feature in features.items():
        inner = getattr(feature, "feature", None)
        if isinstance(feature, ClassLabel):
            label_column, names = column, feature.names
            break
        if isinstance(inner, ClassLabel):
            label_column, names, multi = column, inner.names, True
            break
    if label_column is None:
        raise ValueError(
            f"{source}: no label column (a `ClassLabel` or list of `ClassLabel`) in {list(features)}"
        )
    names = list(label_names) if label_names is not None else list(names)
    if label_names is not None and list(label_names) != list(getattr(features[label_column], "names", names)):
        raise ValueError(f"{source}: label_names {list(label_names)} differ from the data set's {names}")
    raw = dataset.cast_column(image_column, Image(decode=False))
    patients = "patient_id" if "patient_id" in features else None
    columns: dict[str, list] = {key: [] for key in clarity_features(len(names))}
    for index, row in enumerate(raw):
        image = row[image_column]
        labels = np.zeros(len(names), dtype=np.float32)
        values = row[label_column] if multi else [row[label_column]]
        labels[[int(v) for v in values if v is not None and int(v) >= 0]] = 1.0
        with PILImage.open(io.BytesIO(image["bytes"]) if image.get("bytes") else image["path"]) as opened:
            width, height = opened.size
        for key, value in (
            ("image", image),
            ("labels", labels.tolist()),
            ("image_id", Path(image.get("path") or f"{index}.png").name),
            ("patient_id", str(row[patients]) if patients else ""),
            ("age", None),
            ("sex", ""),
            ("view_position", ""),
            ("follow_up", 0),
            ("original_size", [height, width]),
            ("pixel_spacing", [0.0, 0.0]),
            ("boxes", []),
            ("box_split", ""),
        ):
            columns[key].append(value)
    converted = Dataset.from_dict(columns, features=clarity_features(len(names)))
    return attach_metadata(converted, make_metadata(names, f"datasets {source}"))


def _group_ids(dataset: Dataset) -> tuple[list[str], bool]:
    """Each image's patient id (or its own image id where none is known), and whether any patient id was known."""
    patients = dataset["patient_id"]
    images = dataset["image_id"]
    known = any(patients)
    return [p if p else f"image:{i}:{index}" for index, (p, i) in enumerate(zip(patients, images))], known


def patient_split(dataset: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """(rest, held out): about `fraction` of the images held out, whole patients only (images without a patient
    id count as their own patient); seeded with `seed` (scikit-learn's `GroupShuffleSplit`)."""
    from sklearn.model_selection import GroupShuffleSplit

    if len(dataset) < 2:
        raise ValueError(f"cannot split {len(dataset)} image(s) into train and validation")
    groups, _ = _group_ids(dataset)
    if len(set(groups)) < 2:
        raise ValueError("every image belongs to one patient: a patient split needs at least two patients")
    splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
    train, held_out = next(splitter.split(np.zeros(len(groups)), groups=groups))
    return dataset.select(sorted(train)), dataset.select(sorted(held_out))


def split_train_validation(dataset: Dataset | DatasetDict, fraction: float, seed: int) -> DatasetDict:
    """A `DatasetDict` with `train` and `validation`: a `split` column or the source's own splits kept, a missing
    validation split drawn from train by patient (`patient_split`). Every split keeps the label metadata."""
    metadata = get_metadata(dataset)
    if isinstance(dataset, Dataset) and "split" in dataset.column_names:
        values = dataset["split"]
        unknown = sorted({v for v in values if v.lower() not in SPLIT_ALIASES})
        if unknown:
            raise ValueError(f"split column: unknown split name(s) {unknown} (use train / validation / test)")
        names = [SPLIT_ALIASES[v.lower()] for v in values]
        dataset = DatasetDict(
            {
                name: dataset.select([i for i, n in enumerate(names) if n == name])
                for name in ("train", "validation", "test")
                if name in names
            }
        )
        _warn_shared_patients(dataset)
    elif isinstance(dataset, Dataset):
        dataset = DatasetDict({"train": dataset})
    dataset = DatasetDict({SPLIT_ALIASES.get(name.lower(), name): split for name, split in dataset.items()})
    if "train" not in dataset:
        raise ValueError(f"the data has no training split (splits: {list(dataset)})")
    if "validation" not in dataset:
        dataset["train"], dataset["validation"] = patient_split(dataset["train"], fraction, seed)
        _, known = _group_ids(dataset["train"])
        logger.info(
            "validation split: %d of %d images, drawn by %s (seed %d)",
            len(dataset["validation"]),
            len(dataset["train"]) + len(dataset["validation"]),
            "patient" if known else "image (no patient ids)",
            seed,
        )
    return DatasetDict({name: attach_metadata(split, metadata) for name, split in dataset.items()})


def _warn_shared_patients(dataset: DatasetDict) -> None:
    seen: dict[str, str] = {}
    shared = set()
    for name, split in dataset.items():
        for patient in split["patient_id"]:
            if patient and seen.setdefault(patient, name) != name:
                shared.add(patient)
    if shared:
        logger.warning(
            "the split column puts %d patient(s) in more than one split (e.g. %s): their images are not independent",
            len(shared),
            sorted(shared)[:3],
        )
