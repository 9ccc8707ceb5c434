# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""NIH ChestX-ray14 as a `datasets.DatasetDict`, built from a user's own download.

Expected layout of `root` (all files may also be gzipped, `.csv.gz` / `.txt.gz`)::

    root/
      Data_Entry_2017_v2020.csv     (or Data_Entry_2017.csv)
      BBox_List_2017.csv
      train_val_list.txt            official split, 86,524 names
      test_list.txt                 official split, 25,596 names
      images_001/images/*.png ... images_012/images/*.png     (the NIH tarballs unpacked)
        or  images/*.png                                         (one flat folder)

The CSV headers contain commas inside their names (`OriginalImage[Width,Height]`) and `BBox_List_2017.csv` has
trailing empty columns, so both files are read by position with the `csv` module, never by header name.

Bad input raises a `ValueError` naming the file, the line and the problem: a missing image file, an unknown label,
a malformed row, a box for an image that is not in the metadata, a split-list entry that is not in the metadata, an
image in both or neither split list, a patient in two splits. With `skip_missing=True` the offending rows are
skipped instead, and the count and first examples of each kind are logged and stored in the build report
(`clarity_hf.data.features.get_build_report(dataset_dict)`). Nothing is dropped silently.

When the official split lists are absent (the shared offline copy of the metadata has none), pass them explicitly
(`train_val_list=` / `test_list=`, paths or name lists) or let the builder fall back to a documented deterministic
patient-level split: every patient with a box goes to `test` (as in the official split, where all 880 boxed images
are test images), then whole patients in a seeded random order until `test` holds `fallback_test_fraction` of the
images (default 25,596 / 112,120, the official proportion). The fallback warns and is recorded in the report; it is
NOT the official split, so its test numbers are not comparable with published ones.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, DatasetDict

from ..configuration_clarity import NIH_BOXED_PATHOLOGIES, NIH_LABEL_ALIASES, NIH_PATHOLOGIES
from .features import (
    NIH_BOX_FRAME,
    BuildReport,
    Problems,
    attach_metadata,
    box_in_frame,
    clarity_features,
    dataset_from_columns,
    iter_csv_rows,
    make_metadata,
    open_text,
    parse_box_geometry,
    stratified_group_split,
)

logger = logging.getLogger(__name__)

NO_FINDING = "No Finding"
LABEL_ALIASES = NIH_LABEL_ALIASES
OFFICIAL_TEST_FRACTION = 25596 / 112120
METADATA_COLUMNS = (
    11  # image, labels, follow-up, patient, age, sex, view, width, height, spacing x, spacing y
)
BBOX_COLUMNS = 6  # image, label, x, y, w, h


@dataclass
class _Row:
    image_id: str
    labels: list[float]
    follow_up: int
    patient_id: str
    age: int | None
    sex: str
    view_position: str
    original_size: list[int]
    pixel_spacing: list[float]
    boxes: list[dict[str, Any]] = field(default_factory=list)


def _find_file(root: Path, patterns: Sequence[str], what: str, required: bool = True) -> Path | None:
    candidates: list[Path] = []
    for pattern in patterns:
        candidates.extend(sorted(root.glob(pattern)))
    if not candidates:
        if required:
            raise FileNotFoundError(f"no {what} in {root} (looked for {', '.join(patterns)})")
        return None
    if len(candidates) > 1:
        logger.info("several %s in %s, using %s", what, root, candidates[0].name)
    return candidates[0]


def _canonical_label(name: str) -> str:
    name = name.strip()
    return LABEL_ALIASES.get(name, name)


def _parse_int(text: str) -> int:
    text = text.strip()
    if text and text[-1] in "YMD" and text[:-1].isdigit():  # some copies write ages as "058Y"
        text = text[:-1]
    return int(text)


def read_metadata(path: Path, problems: Problems) -> dict[str, _Row]:
    """Read `Data_Entry_2017*.csv` by position; returns image name -> row, in file order."""
    label_index = {name: i for i, name in enumerate(NIH_PATHOLOGIES)}
    rows: dict[str, _Row] = {}
    header = "Data_Entry header (Image Index, Finding Labels, ...)"
    for _, where, row in iter_csv_rows(
        path, METADATA_COLUMNS, problems, f"{METADATA_COLUMNS} columns", header_hint=header
    ):
        image_id = row[0].strip()
        labels = [0.0] * len(NIH_PATHOLOGIES)
        names = [_canonical_label(name) for name in row[1].split("|") if name.strip()]
        unknown = [n for n in names if n != NO_FINDING and n not in label_index]
        if unknown or not names or (NO_FINDING in names and len(names) > 1):
            problem = f"unknown label(s) {unknown}" if unknown else f"invalid label field {row[1]!r}"
            problems("unknown_label", f"{where}: {problem} for {image_id}")
            continue
        for name in names:
            if name != NO_FINDING:
                labels[label_index[name]] = 1.0
        try:
            follow_up, age = _parse_int(row[2]), _parse_int(row[4])
            size = [_parse_int(row[8]), _parse_int(row[7])]  # the CSV gives width, height
            spacing = [float(row[9]), float(row[10])]
        except ValueError:
            problems("malformed_row", f"{where}: non-numeric follow-up/age/size/spacing in {row}")
            continue
        if not image_id or not row[3].strip():
            problems("malformed_row", f"{where}: empty image name or patient id in {row}")
            continue
        if image_id in rows:
            problems("malformed_row", f"{where}: duplicate image {image_id}")
            continue
        rows[image_id] = _Row(
            image_id=image_id,
            labels=labels,
            follow_up=follow_up,
            patient_id=str(int(row[3])) if row[3].strip().isdigit() else row[3].strip(),
            age=age,
            sex=row[5].strip(),
            view_position=row[6].strip(),
            original_size=size,
            pixel_spacing=spacing,
        )
    return rows


def read_boxes(path: Path, rows: dict[str, _Row], problems: Problems) -> int:
    """Read `BBox_List_2017.csv` by position into `rows[...].boxes`; returns the number of boxes kept."""
    kept = 0
    header = "BBox_List header (Image Index, Finding Label, ...)"
    for _, where, row in iter_csv_rows(
        path, BBOX_COLUMNS, problems, f"{BBOX_COLUMNS} columns", header_hint=header
    ):
        image_id, label = row[0].strip(), _canonical_label(row[1])
        if label not in NIH_PATHOLOGIES:
            problems("unknown_label", f"{where}: unknown box label {row[1]!r} for {image_id}")
            continue
        geometry = parse_box_geometry(row[2:6], where, problems)
        if geometry is None:
            continue
        x, y, w, h = geometry
        if image_id not in rows:
            problems("box_without_image", f"{where}: box for {image_id}, which is not in the metadata")
            continue
        box = {"label": label, "x": x, "y": y, "w": w, "h": h}
        if not box_in_frame(box, NIH_BOX_FRAME, where, problems):
            continue
        rows[image_id].boxes.append(box)
        kept += 1
    return kept


def read_split_list(
    source: str | os.PathLike | Iterable[str], rows: dict[str, _Row], problems: Problems
) -> list[str]:
    """Image names of a split list (a file path, or an iterable of names), checked against the metadata."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        with open_text(path) as handle:
            entries = [(f"{path.name}:{i}", line.strip()) for i, line in enumerate(handle, start=1)]
    else:
        entries = [(f"split list entry {i}", str(name).strip()) for i, name in enumerate(source, start=1)]
    names: list[str] = []
    seen: set[str] = set()
    for where, name in entries:
        if not name:
            continue
        if name in seen:
            problems("malformed_row", f"{where}: {name} listed twice")
            continue
        if name not in rows:
            problems("split_entry_not_in_metadata", f"{where}: {name} is not in the metadata")
            continue
        seen.add(name)
        names.append(name)
    return names


def index_images(root: Path) -> dict[str, str]:
    """Map image file name -> path for `images_*/images/*.png`, `images_*/*.png` and `images/*.png` under root."""
    folders = sorted(root.glob("images_*/images")) + sorted(p for p in root.glob("images_*") if p.is_dir())
    folders += [root / "images"]
    index: dict[str, str] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.lower().endswith(".png") and entry.is_file():
                    if entry.name in index and index[entry.name] != entry.path:
                        raise ValueError(
                            f"image {entry.name} found twice: {index[entry.name]} and {entry.path}"
                        )
                    index[entry.name] = entry.path
    return index


def _fallback_split(rows: dict[str, _Row], test_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    patients: dict[str, list[str]] = {}
    for name, row in rows.items():
        patients.setdefault(row.patient_id, []).append(name)
    boxed = [p for p, names in patients.items() if any(rows[n].boxes for n in names)]
    boxed_set = set(boxed)
    others = [p for p in patients if p not in boxed_set]
    order = np.random.default_rng(seed).permutation(len(others))
    target = int(round(test_fraction * len(rows)))
    test_patients = list(boxed)
    count = sum(len(patients[p]) for p in boxed)
    for index in order:
        if count >= target:
            break
        test_patients.append(others[index])
        count += len(patients[others[index]])
    test_set = set(test_patients)
    test = [n for n, r in rows.items() if r.patient_id in test_set]
    train_val = [n for n, r in rows.items() if r.patient_id not in test_set]
    return train_val, test


def split_validation(
    names: Sequence[str], rows: dict[str, _Row], fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """Carve about `fraction` of the images of `names` into validation, whole patients at a time (seeded)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {fraction}")
    patients: dict[str, int] = {}
    for name in names:
        patients[rows[name].patient_id] = patients.get(rows[name].patient_id, 0) + 1
    ordered = list(patients)
    order = np.random.default_rng(seed).permutation(len(ordered))
    target = fraction * len(names)
    chosen: set[str] = set()
    count = 0
    for index in order:
        if count >= target:
            break
        chosen.add(ordered[index])
        count += patients[ordered[index]]
    train = [n for n in names if rows[n].patient_id not in chosen]
    validation = [n for n in names if rows[n].patient_id in chosen]
    return train, validation


def _report_dropped_boxes(row: _Row, report: BuildReport) -> None:
    for box in row.boxes:
        report.add("box_of_skipped_image", f"{box['label']} box of skipped image {row.image_id}")


def _check_patients(
    splits: dict[str, list[str]], rows: dict[str, _Row], problems: Problems, source: str
) -> None:
    """No patient may have images in two splits; in skip mode, the patient's non-test images are dropped."""
    owner: dict[str, str] = {}
    for split in ("test", "train_val"):
        for name in splits[split]:
            owner.setdefault(rows[name].patient_id, split)
    conflicted = {}
    for name in splits["train_val"]:
        patient = rows[name].patient_id
        if owner[patient] == "test":
            conflicted.setdefault(patient, []).append(name)
    for patient, names in conflicted.items():
        problems(
            "patient_in_two_splits",
            f"{source}: patient {patient} has images in both train_val and test (e.g. {names[0]})",
        )
        for name in names:
            _report_dropped_boxes(rows[name], problems.report)
    if conflicted:
        splits["train_val"] = [n for n in splits["train_val"] if rows[n].patient_id not in conflicted]


def build_chestxray14(
    root: str | os.PathLike,
    validation_fraction: float = 0.1,
    seed: int = 0,
    skip_missing: bool = False,
    metadata_only: bool = False,
    train_val_list: str | os.PathLike | Iterable[str] | None = None,
    test_list: str | os.PathLike | Iterable[str] | None = None,
    metadata_file: str | os.PathLike | None = None,
    bbox_file: str | os.PathLike | None = None,
    box_split_seed: int = 0,
    fallback_test_fraction: float = OFFICIAL_TEST_FRACTION,
) -> DatasetDict:
    """Build the `train` / `validation` / `test` DatasetDict of NIH ChestX-ray14 from a download at `root`.

    Args:
        root: folder of the NIH download (see the module docstring for the layout).
        validation_fraction: share of the train_val images carved out as `validation`, by patient.
        seed: seed of the validation carve (and of the fallback split).
        skip_missing: skip bad rows (missing images, unknown labels, malformed rows, orphan boxes, split
            conflicts) instead of raising; their count and first examples are logged and stored in the report.
        metadata_only: do not look for images; `image` is then a path string where the file exists, else None.
        train_val_list / test_list: the official split lists (paths or name iterables); by default
            `root/train_val_list.txt` and `root/test_list.txt`. When neither is given nor found, a deterministic
            patient-level fallback split is used, with a warning.
        metadata_file / bbox_file: explicit CSV paths (default: found in root, `.csv` or `.csv.gz`).
        box_split_seed: seed of the 50/50 tune/eval split of the boxed images (by patient, stratified by class).
        fallback_test_fraction: test share of the fallback split.

    Returns:
        A `DatasetDict` with the clarity_hf features (`clarity_hf.data.features.clarity_features(14)`), labels in
        `NIH_PATHOLOGIES` order, boxes in the 1024x1024 frame, and the label names and build report in metadata.
    """
    root = Path(root)
    report = BuildReport()
    problems = Problems(skip_missing, report)
    metadata_path = (
        Path(metadata_file) if metadata_file else _find_file(root, ["Data_Entry_2017*.csv*"], "metadata")
    )
    bbox_path = (
        Path(bbox_file) if bbox_file else _find_file(root, ["BBox_List_2017*.csv*"], "box list", False)
    )
    rows = read_metadata(metadata_path, problems)
    if bbox_path is None:
        report.notes.append(f"no BBox_List_2017.csv in {root}: no boxes")
        num_boxes = 0
    else:
        num_boxes = read_boxes(bbox_path, rows, problems)

    image_paths: dict[str, str] = index_images(root)
    if not metadata_only:
        for name in list(rows):
            if name not in image_paths:
                problems("missing_image", f"{metadata_path.name}: image file {name} not found under {root}")
                _report_dropped_boxes(rows[name], report)
                del rows[name]

    train_val_list = (
        train_val_list
        if train_val_list is not None
        else _find_file(root, ["train_val_list.txt*"], "train_val list", False)
    )
    test_list = (
        test_list if test_list is not None else _find_file(root, ["test_list.txt*"], "test list", False)
    )
    if train_val_list is None and test_list is None:
        message = (
            f"no official split lists (train_val_list.txt / test_list.txt) in {root}: using the deterministic "
            f"patient-level fallback split (boxed patients in test, test fraction {fallback_test_fraction:.4f}, "
            f"seed {seed}); this is NOT the official split"
        )
        warnings.warn(message, stacklevel=2)
        report.notes.append(message)
        train_val, test = _fallback_split(rows, fallback_test_fraction, seed)
        split_source = "fallback"
    elif train_val_list is None or test_list is None:
        raise ValueError("give both train_val_list and test_list, or neither (for the fallback split)")
    else:
        train_val = read_split_list(train_val_list, rows, problems)
        test = read_split_list(test_list, rows, problems)
        split_source = "official lists"
        in_test = set(test)
        both = [n for n in train_val if n in in_test]
        for name in both:
            problems("image_in_two_splits", f"{name} is in both train_val_list and test_list")
        train_val = [n for n in train_val if n not in in_test]
        listed = set(train_val) | in_test
        for name in rows:
            if name not in listed:
                problems("image_in_no_split", f"{metadata_path.name}: {name} is in neither split list")
                _report_dropped_boxes(rows[name], report)
    splits = {"train_val": train_val, "test": test}
    _check_patients(splits, rows, problems, "split lists")

    kept = set(splits["train_val"]) | set(splits["test"])
    boxed = [name for name in rows if rows[name].boxes and name in kept]
    halves = stratified_group_split(
        [rows[n].patient_id for n in boxed],
        [[b["label"] for b in rows[n].boxes] for n in boxed],
        box_split_seed,
    )
    box_split = dict(zip(boxed, halves))

    train, validation = split_validation(splits["train_val"], rows, validation_fraction, seed)
    report.log(logger)
    metadata = make_metadata(
        NIH_PATHOLOGIES,
        source="NIH ChestX-ray14",
        box_frame=NIH_BOX_FRAME,
        report=report,
        split_source=split_source,
        boxed_labels=list(NIH_BOXED_PATHOLOGIES),
        num_boxes=num_boxes,
        build_parameters={
            "seed": seed,
            "validation_fraction": validation_fraction,
            "box_split_seed": box_split_seed,
            "fallback_test_fraction": fallback_test_fraction if split_source == "fallback" else None,
        },
    )
    features = clarity_features(len(NIH_PATHOLOGIES), metadata_only=metadata_only)
    result = DatasetDict()
    for split, names in (("train", train), ("validation", validation), ("test", test)):
        result[split] = attach_metadata(_to_dataset(names, rows, image_paths, box_split, features), metadata)
    return result


def _to_dataset(
    names: Sequence[str],
    rows: dict[str, _Row],
    image_paths: dict[str, str],
    box_split: dict[str, str],
    features: Any,
) -> Dataset:
    columns: dict[str, list[Any]] = {key: [] for key in features}
    for name in names:
        row = rows[name]
        columns["image"].append(image_paths.get(name))
        columns["labels"].append(row.labels)
        columns["image_id"].append(name)
        columns["patient_id"].append(row.patient_id)
        columns["age"].append(row.age)
        columns["sex"].append(row.sex)
        columns["view_position"].append(row.view_position)
        columns["follow_up"].append(row.follow_up)
        columns["original_size"].append(row.original_size)
        columns["pixel_spacing"].append(row.pixel_spacing)
        columns["boxes"].append(row.boxes)
        columns["box_split"].append(box_split.get(name, ""))
    return dataset_from_columns(columns, features)
