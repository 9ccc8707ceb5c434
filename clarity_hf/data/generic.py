# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Other chest X-ray data for fine-tuning, into the clarity_hf features with the user's own label set.

Three sources, each giving a `datasets.Dataset` with `clarity_features(len(label_names))` (split it with
`dataset.train_test_split` or by patient as you need):

* `load_csv_dataset`: a CSV with an image-path column and either one 0/1 column per label or one column of
  `|`-separated label names; optional patient / age / sex / view / split columns (the split column is kept as
  `split`); optional boxes from a second CSV (`image, label, x, y, w, h`, in the image's pixel frame).
* `load_image_folder`: `root/<class name>/*.png|jpg|...`, one label per folder; folders named in
  `negative_folders` (default "No Finding", "normal", "healthy") mean all-zero labels.
* `load_coco_dataset`: COCO-format JSON with boxes (e.g. TBX11K); image-level labels are the categories that have a
  box on the image; images without annotations are negatives.

The box frame is the image's own pixel frame, recorded as `original_size` (read from the image header, or from
the COCO `width` / `height`, which must match the file). Bad input (missing image, unknown label, malformed row
with file and line, box for an unknown image) raises a `ValueError`, unless `skip_missing=True`, which skips the
item and stores the count and first examples in the build report (`get_build_report`).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from datasets import Dataset, Value

from ..files import PathOutsideFolderError, confined_path
from ..xray_io import ImageDecodeError, image_size
from .features import (
    Problems,
    attach_metadata,
    box_in_frame,
    clarity_features,
    iter_csv_rows,
    make_metadata,
    open_text,
    parse_box_geometry,
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
NEGATIVE_FOLDERS = ("No Finding", "normal", "Normal", "healthy", "Healthy", "no_finding")


def _read_size(path: Path, where: str, problems: Problems) -> tuple[int, int] | None:
    """(height, width) of an image, or None after reporting an unreadable file (`unreadable_image`)."""
    try:
        return image_size(path)
    except ImageDecodeError as err:
        problems("unreadable_image", f"{where}: {err}")
        return None


def _boxes_inside(
    boxes: list[tuple[str, dict[str, Any]]], size: tuple[int, int], problems: Problems
) -> list[dict[str, Any]]:
    """The boxes of the `(where, box)` pairs that lie in the (height, width) image frame."""
    return [box for where, box in boxes if box_in_frame(box, size, where, problems)]


def _row(
    image: str,
    labels: list[float],
    image_id: str,
    size: tuple[int, int],
    boxes: list[dict[str, Any]],
    **extra: Any,
) -> dict[str, Any]:
    return {
        "image": image,
        "labels": labels,
        "image_id": image_id,
        "patient_id": str(extra.get("patient_id") or ""),
        "age": extra.get("age"),
        "sex": str(extra.get("sex") or ""),
        "view_position": str(extra.get("view_position") or ""),
        "follow_up": int(extra.get("follow_up") or 0),
        "original_size": [int(size[0]), int(size[1])],
        "pixel_spacing": [0.0, 0.0],
        "boxes": boxes,
        "box_split": str(extra.get("box_split") or ""),
    }


def _finish(
    rows: list[dict[str, Any]], label_names: Sequence[str], source: str, problems: Problems
) -> Dataset:
    features = clarity_features(len(label_names))
    if rows and "split" in rows[0]:
        features["split"] = Value("string")
    columns = {key: [row[key] for row in rows] for key in features}
    problems.report.log()
    dataset = Dataset.from_dict(columns, features=features)
    return attach_metadata(dataset, make_metadata(label_names, source, "original_size", problems.report))


def _resolve(root: Path, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else root / path


def _read_box_csv(
    path: Path, label_index: dict[str, int], problems: Problems
) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Boxes CSV (header row; columns image, label, x, y, w, h by position) -> image -> [("file:line", box)]."""
    boxes: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for _, where, row in iter_csv_rows(path, 6, problems, "image,label,x,y,w,h"):
        label = row[1].strip()
        if label not in label_index:
            problems("unknown_label", f"{where}: unknown box label {label!r}")
            continue
        geometry = parse_box_geometry(row[2:6], where, problems)
        if geometry is None:
            continue
        x, y, w, h = geometry
        boxes.setdefault(row[0].strip(), []).append((where, {"label": label, "x": x, "y": y, "w": w, "h": h}))
    return boxes


def load_csv_dataset(
    csv_path: str | os.PathLike,
    label_names: Sequence[str] | None = None,
    image_column: str = "path",
    label_column: str | None = None,
    label_separator: str = "|",
    image_root: str | os.PathLike | None = None,
    boxes_csv: str | os.PathLike | None = None,
    patient_column: str | None = None,
    age_column: str | None = None,
    sex_column: str | None = None,
    view_column: str | None = None,
    split_column: str | None = None,
    negative_labels: Sequence[str] = ("No Finding", ""),
    skip_missing: bool = False,
) -> Dataset:
    """A CSV of image paths and labels -> clarity_hf `Dataset`.

    Args:
        csv_path: the CSV (header row).
        label_names: the label set, in output order. With `label_column=None` these are the 0/1 columns (default:
            every column not used for anything else); with `label_column` they are the allowed names (default: the
            sorted names seen, excluding `negative_labels`).
        image_column: column of image paths (relative to `image_root`, default the CSV's folder).
        label_column: a column of `label_separator`-separated names, instead of one column per label.
        boxes_csv: optional CSV `image,label,x,y,w,h` (image as in `image_column`), boxes in the image's pixels.
        patient_column / age_column / sex_column / view_column: optional metadata columns.
        split_column: optional column naming each image's split (train / validation / test), kept as `split`.
        negative_labels: names meaning "no finding" in `label_column`.
        skip_missing: skip bad rows (reported) instead of raising.
    """
    csv_path = Path(csv_path)
    root = Path(image_root) if image_root is not None else csv_path.parent
    problems = Problems(skip_missing)
    with open_text(csv_path) as handle:
        reader = csv.DictReader(handle)
        header = list(reader.fieldnames or [])
        records = [(line, record) for line, record in enumerate(reader, start=2)]
    stripped = [name.strip() for name in header]
    repeated = sorted({name for name in stripped if stripped.count(name) > 1})
    # a dict row keeps only the last of repeated columns: the others' values would be lost silently (and "Mass"
    # beside " Mass" would be one label twice)
    if repeated:
        raise ValueError(f"{csv_path.name}:1: column(s) {repeated} appear more than once in header {header}")
    if image_column not in header:
        raise ValueError(f"{csv_path.name}:1: no image column {image_column!r} in header {header}")
    meta_columns = {
        image_column,
        label_column,
        patient_column,
        age_column,
        sex_column,
        view_column,
        split_column,
    } - {None}
    for name in meta_columns - {label_column}:
        if name not in header:
            raise ValueError(f"{csv_path.name}:1: no column {name!r} in header {header}")
    if label_column is None:
        label_names = (
            list(label_names) if label_names is not None else [h for h in header if h not in meta_columns]
        )
        missing = [name for name in label_names if name not in header]
        if missing:
            raise ValueError(f"{csv_path.name}:1: label column(s) {missing} not in header {header}")
    else:
        if label_column not in header:
            raise ValueError(f"{csv_path.name}:1: no label column {label_column!r} in header {header}")
        if label_names is None:
            seen = {n.strip() for _, r in records for n in (r[label_column] or "").split(label_separator)}
            label_names = sorted(seen - set(negative_labels))
        label_names = list(label_names)
    names = [str(name).strip() for name in label_names]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:  # label_index would keep one position per name: the other's labels would stay 0
        raise ValueError(
            f"{csv_path.name}:1: label(s) {twice} appear more than once in the label set {label_names}"
        )
    label_index = {name: i for i, name in enumerate(label_names)}
    boxes = _read_box_csv(Path(boxes_csv), label_index, problems) if boxes_csv else {}
    rows, known = [], set()
    first_line: dict[str, tuple[int, dict[str, str]]] = {}
    for line, record in records:
        where = f"{csv_path.name}:{line}"
        if None in record or any(value is None for value in record.values()):
            problems("malformed_row", f"{where}: malformed row (wrong number of columns)")
            continue
        image = record[image_column].strip()
        if image in first_line:
            # An identical repeat adds nothing: dropped and noted. A repeat that disagrees is an error: which row
            # is right cannot be told.
            earlier, earlier_record = first_line[image]
            if earlier_record == record:
                problems.report.notes.append(
                    f"{where}: identical duplicate of line {earlier} ({image}) dropped"
                )
            else:
                problems("duplicate_row", f"{where}: {image} is also on line {earlier} with other values")
            continue
        first_line[image] = (line, record)
        labels = [0.0] * len(label_names)
        try:
            if label_column is None:
                for name in label_names:
                    value = float(record[name] or 0)
                    if value not in (0.0, 1.0):
                        raise ValueError(f"label {name} must be 0 or 1, got {record[name]!r}")
                    labels[label_index[name]] = value
            else:
                for name in (n.strip() for n in record[label_column].split(label_separator)):
                    if name in negative_labels:
                        continue
                    if name not in label_index:
                        raise KeyError(name)
                    labels[label_index[name]] = 1.0
            age = int(float(record[age_column])) if age_column and record[age_column].strip() else None
        except KeyError as err:
            problems("unknown_label", f"{where}: unknown label {err.args[0]!r}")
            continue
        except ValueError as err:
            problems("malformed_row", f"{where}: {err}")
            continue
        path = _resolve(root, image)
        if not path.is_file():
            problems("missing_image", f"{where}: image file {path} not found")
            continue
        known.add(image)
        size = _read_size(path, where, problems)
        if size is None:
            continue
        row = _row(
            str(path),
            labels,
            Path(image).name,
            size,
            _boxes_inside(boxes.get(image, []), size, problems),
            patient_id=record.get(patient_column) if patient_column else "",
            age=age,
            sex=record.get(sex_column) if sex_column else "",
            view_position=record.get(view_column) if view_column else "",
        )
        if split_column:
            row["split"] = record[split_column].strip()
        rows.append(row)
    for image, entries in boxes.items():
        if image not in known:
            for where, _ in entries:
                problems("box_without_image", f"{where}: box for {image}, which is not in {csv_path.name}")
    return _finish(rows, label_names, f"CSV {csv_path.name}", problems)


def load_image_folder(
    root: str | os.PathLike,
    label_names: Sequence[str] | None = None,
    negative_folders: Sequence[str] = NEGATIVE_FOLDERS,
    skip_missing: bool = False,
) -> Dataset:
    """`root/<label>/<image>` -> clarity_hf `Dataset`, one label per image (negative folders: no label).

    `label_names` fixes the label set and order (default: the sorted non-negative folder names); a folder that is
    neither a label nor negative is an error (or skipped and reported with `skip_missing=True`).
    """
    root = Path(root)
    problems = Problems(skip_missing)
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        raise ValueError(f"{root}: no class folders")
    if label_names is None:
        label_names = [p.name for p in folders if p.name not in negative_folders]
    label_index = {name: i for i, name in enumerate(label_names)}
    rows = []
    for folder in folders:
        if folder.name not in label_index and folder.name not in negative_folders:
            problems(
                "unknown_label", f"{folder}: folder {folder.name!r} is not in label_names {list(label_names)}"
            )
            continue
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            labels = [0.0] * len(label_names)
            if folder.name in label_index:
                labels[label_index[folder.name]] = 1.0
            size = _read_size(path, f"{root.name}/{folder.name}/{path.name}", problems)
            if size is None:
                continue
            rows.append(_row(str(path), labels, f"{folder.name}/{path.name}", size, []))
    return _finish(rows, label_names, f"image folder {root.name}", problems)


def _read_coco(annotation_file: Path) -> dict[str, Any]:
    """The COCO JSON, checked for the three lists; errors name the file."""
    try:
        data = json.loads(annotation_file.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{annotation_file}: cannot read COCO JSON: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{annotation_file.name}: not a COCO file (top level is not an object)")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"{annotation_file.name}: not a COCO file, no {key!r} list")
        if not all(isinstance(entry, dict) for entry in data[key]):
            raise ValueError(f"{annotation_file.name}: every entry of {key!r} must be an object")
    return data


def _coco_categories(data: dict[str, Any], name: str) -> dict[Any, str]:
    """category id -> name; a repeated id or name is an error (it would give two label columns or none)."""
    categories: dict[Any, str] = {}
    seen_names: dict[str, Any] = {}
    for number, category in enumerate(data["categories"]):
        where = f"{name}: category #{number}"
        if "id" not in category or not isinstance(category.get("name"), str) or not category["name"].strip():
            raise ValueError(f"{where}: needs an `id` and a non-empty `name`, got {category!r}")
        cid, label = category["id"], category["name"].strip()
        if cid in categories:
            raise ValueError(f"{where}: duplicate category id {cid!r} ({categories[cid]!r} and {label!r})")
        if label in seen_names:
            raise ValueError(
                f"{where}: duplicate category name {label!r} (ids {seen_names[label]!r} and {cid!r})"
            )
        categories[cid], seen_names[label] = label, cid
    return categories


def _unique_by_id(
    entries: list[dict[str, Any]], kind: str, name: str, problems: Problems
) -> list[dict[str, Any]]:
    """Entries with distinct `id`s: an identical repeat is dropped (noted in the report), a repeat that differs is
    a `duplicate_id` problem (the later entry is skipped with skip_missing)."""
    first: dict[Any, int] = {}
    kept = []
    for number, entry in enumerate(entries):
        where = f"{name}: {kind} #{number} (id {entry.get('id')!r})"
        if "id" not in entry:
            problems("malformed_row", f"{where}: no `id`")
            continue
        key = json.dumps(entry["id"])
        if key in first:
            earlier = first[key]
            if entries[earlier] == entry:
                problems.report.notes.append(f"{where}: identical duplicate of {kind} #{earlier} dropped")
            else:
                problems("duplicate_id", f"{where}: id also used by {kind} #{earlier} with other values")
            continue
        first[key] = number
        kept.append((number, entry))
    return kept


def _coco_box(bbox: Any) -> tuple[float, float, float, float] | None:
    """x, y, w, h of a COCO bbox: four finite numbers (not strings), positive width and height; else None."""
    if not isinstance(bbox, list) or len(bbox) != 4:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox):
        return None
    x, y, w, h = (float(v) for v in bbox)
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
        return None
    return x, y, w, h


def load_coco_dataset(
    annotation_file: str | os.PathLike,
    image_root: str | os.PathLike,
    label_names: Sequence[str] | None = None,
    skip_missing: bool = False,
) -> Dataset:
    """COCO detection JSON -> clarity_hf `Dataset` with boxes (COCO `bbox` = x, y, w, h in image pixels).

    Labels are the COCO category names (or `label_names`, which must cover every category used); an image's label
    vector marks the categories that have a box on it. Errors name the file and the image or annotation (index and
    id): unreadable JSON, a repeated category id or name (always errors), an image without `file_name`, a bbox that
    is not four finite numbers with positive size or that lies outside its image, an `id` used twice with other
    values. An entry repeated identically is dropped and noted in the build report.
    """
    annotation_file, image_root = Path(annotation_file), Path(image_root)
    problems = Problems(skip_missing)
    name = annotation_file.name
    data = _read_coco(annotation_file)
    categories = _coco_categories(data, name)
    if label_names is None:
        try:
            order = sorted(categories)
        except TypeError:  # ids of mixed types
            order = sorted(categories, key=str)
        label_names = [categories[k] for k in order]
    label_index = {label: i for i, label in enumerate(label_names)}
    images = _unique_by_id(data["images"], "image", name, problems)
    image_ids = {json.dumps(image["id"]) for _, image in images}
    by_image: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for number, annotation in _unique_by_id(data["annotations"], "annotation", name, problems):
        where = f"{name}: annotation #{number} (id {annotation.get('id')})"
        label = categories.get(annotation.get("category_id"))
        if label is None or label not in label_index:
            problems("unknown_label", f"{where}: unknown category {annotation.get('category_id')!r}")
            continue
        if json.dumps(annotation.get("image_id")) not in image_ids:
            problems(
                "box_without_image",
                f"{where}: box for image id {annotation.get('image_id')!r}, not in images",
            )
            continue
        box = _coco_box(annotation.get("bbox"))
        if box is None:
            problems(
                "malformed_row",
                f"{where}: malformed bbox {annotation.get('bbox')!r} (expected 4 numbers x, y, w, h with w, h > 0)",
            )
            continue
        x, y, w, h = box
        by_image.setdefault(json.dumps(annotation["image_id"]), []).append(
            (where, {"label": label, "x": x, "y": y, "w": w, "h": h})
        )
    rows = []
    for number, image in images:
        file_name = image.get("file_name")
        where = f"{name}: image #{number} (id {image['id']!r}, {file_name})"
        if not isinstance(file_name, str) or not file_name.strip():
            problems("malformed_row", f"{where}: no `file_name`")
            continue
        try:  # the JSON's file names must stay inside image_root (no absolute path, `..` or link out)
            path = confined_path(image_root, file_name, f"{where}: file_name")
        except PathOutsideFolderError as err:
            problems("outside_root", str(err))
            continue
        if not path.is_file():
            problems("missing_image", f"{where}: image file {path} not found")
            continue
        size = _read_size(path, where, problems)
        if size is None:
            continue
        declared = (image.get("height"), image.get("width"))
        if None not in declared and tuple(declared) != size:
            problems(
                "size_mismatch",
                f"{where}: COCO size {declared[1]}x{declared[0]} (width x height) differs from the file's "
                f"{size[1]}x{size[0]}",
            )
            continue
        boxes = _boxes_inside(by_image.get(json.dumps(image["id"]), []), size, problems)
        labels = [0.0] * len(label_names)
        for box in boxes:
            labels[label_index[box["label"]]] = 1.0
        rows.append(_row(str(path), labels, file_name, size, boxes))
    return _finish(rows, label_names, f"COCO {name}", problems)
