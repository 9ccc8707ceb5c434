# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""The one feature schema every clarity_hf data builder writes, and the metadata that travels with it.

Every builder (NIH ChestX-ray14, generic CSV / image folder / COCO data, the synthetic generator, the preprocessing
cache) returns rows with these columns:

| column | feature | meaning |
|---|---|---|
| `image` | `Image()` (lazily decoded); `Value("string")` path or None in metadata-only mode | the X-ray |
| `labels` | `List(Value("float32"), length=C)` | multi-hot, in the order of the data set's label names |
| `image_id` | `Value("string")` | file name (NIH: `00000001_000.png`) |
| `patient_id` | `Value("string")` | patient (NIH: the integer id as a string); "" when unknown |
| `age` | `Value("int32")` | years; None when unknown |
| `sex` | `Value("string")` | "M", "F" or "" |
| `view_position` | `Value("string")` | "PA", "AP", ... or "" |
| `follow_up` | `Value("int32")` | NIH follow-up number; 0 when unknown |
| `original_size` | `List(Value("int32"), length=2)` | (height, width) of the original acquisition, as transformers' `target_sizes` |
| `pixel_spacing` | `List(Value("float32"), length=2)` | (x, y) mm per pixel of the original; 0 when unknown |
| `boxes` | `List({"label", "x", "y", "w", "h"})` | boxes, x/y top-left, in the *box frame* (below) |
| `box_split` | `Value("string")` | "tune" / "eval" for images of the localization benchmark, else "" |
| `findings` | `List(ClassLabel(names=label names))` | the positive labels of `labels`, as class indices ([] = none) |

The synthetic generator adds `anatomy_mask` (`Image()`, 8-bit, 255 inside the thorax prior, 0 outside).

**Label names are features.** A float multi-hot vector cannot carry names in `datasets` (only `ClassLabel`, an
integer feature, has them), so every split also has `findings`, the same labels as a list of `ClassLabel` indices:
the `datasets`-native multi-label form, whose names live in the features and so survive `save_to_disk`, Parquet
and `push_to_hub` and show in the Hub's viewer. [`attach_metadata`] writes it from `labels` and the label names
(builders never fill it by hand); [`get_label_names`] reads it. `labels` stays what training reads.

**Box frame.** NIH boxes are in the 1024x1024 frame of the distributed PNGs, while NIH `original_size` is the
scanner size given by the metadata; for every other builder the box frame is `original_size`, the pixel frame of
the source image. The preprocessing cache never rescales boxes. Use [`get_box_frame`] rather than guessing.

The source, the box-frame rule and any build report (skipped rows) are stored as JSON in each split's
`info.description` (see [`get_metadata`], [`get_build_report`]); they survive `save_to_disk` / `load_from_disk`
and `map`, and the cache's `load_cache` re-attaches them after a Parquet round trip. Data written before the label
names were features (a split without `findings`) keeps them in that JSON: it is still read, and
[`attach_metadata`] adds its `findings`.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from datasets import ClassLabel, Dataset, DatasetDict, DatasetInfo, Features, Image, List, Value

logger = logging.getLogger(__name__)

METADATA_KEY = "clarity_hf"
FINDINGS = "findings"
NIH_BOX_FRAME = (1024, 1024)  # (height, width)
BOX_SPLITS = ("tune", "eval")
MAX_REPORTED_EXAMPLES = 10

BOX_FEATURE = {
    "label": Value("string"),
    "x": Value("float32"),
    "y": Value("float32"),
    "w": Value("float32"),
    "h": Value("float32"),
}


def dataset_from_columns(columns: dict[str, list[Any]], features: Features) -> Dataset:
    """`Dataset.from_dict(columns, features=features)`, but built straight as an Arrow table (much faster for
    100k rows: no per-value Python encoding). `Image` columns take path strings, `{"bytes", "path"}` dicts or None.
    """
    prepared = dict(columns)
    for name, feature in features.items():
        if isinstance(feature, Image):
            prepared[name] = [{"bytes": None, "path": v} if isinstance(v, str) else v for v in columns[name]]
    table = pa.Table.from_pydict({name: prepared[name] for name in features}, schema=features.arrow_schema)
    return Dataset(table, info=DatasetInfo(features=features))


def findings_feature(label_names: Sequence[str]) -> List:
    """The `findings` feature: a list of `ClassLabel` indices into `label_names`."""
    return List(ClassLabel(names=list(label_names)))


def clarity_features(
    labels: int | Sequence[str],
    metadata_only: bool = False,
    with_anatomy_mask: bool = False,
    decode: bool = True,
) -> Features:
    """The clarity_hf schema (see the module docstring for the meaning of each column) for `labels`: the number of
    labels (what a builder fills; [`attach_metadata`] then adds `findings`) or their names (the schema of a built
    split, `findings` included).

    `metadata_only=True` makes `image` a path string (or None) instead of an `Image` feature.
    `with_anatomy_mask=True` adds the `anatomy_mask` image column of the synthetic data.
    """
    label_names = None if isinstance(labels, int) else list(labels)
    num_labels = labels if label_names is None else len(label_names)
    columns: dict[str, Any] = {
        "image": Value("string") if metadata_only else Image(decode=decode),
        "labels": List(Value("float32"), length=num_labels),
        "image_id": Value("string"),
        "patient_id": Value("string"),
        "age": Value("int32"),
        "sex": Value("string"),
        "view_position": Value("string"),
        "follow_up": Value("int32"),
        "original_size": List(Value("int32"), length=2),
        "pixel_spacing": List(Value("float32"), length=2),
        "boxes": List(dict(BOX_FEATURE)),
        "box_split": Value("string"),
    }
    if with_anatomy_mask:
        columns["anatomy_mask"] = Image(decode=decode)
    if label_names is not None:
        columns[FINDINGS] = findings_feature(label_names)
    return Features(columns)


@dataclass
class BuildReport:
    """What a builder skipped (only with `skip_missing=True`) and any notes, by problem kind.

    `counts[kind]` is the number of skipped items of that kind; `examples[kind]` holds the first
    `MAX_REPORTED_EXAMPLES` messages (file, line, problem). Nothing is dropped without an entry here.
    """

    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, kind: str, message: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        examples = self.examples.setdefault(kind, [])
        if len(examples) < MAX_REPORTED_EXAMPLES:
            examples.append(message)

    @property
    def num_skipped(self) -> int:
        return sum(self.counts.values())

    def log(self, log: logging.Logger = logger) -> None:
        for kind, count in self.counts.items():
            log.warning("skipped %d item(s) (%s); first: %s", count, kind, "; ".join(self.examples[kind][:3]))
        for note in self.notes:
            log.info(note)

    def to_dict(self) -> dict[str, Any]:
        return {"counts": dict(self.counts), "examples": dict(self.examples), "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> BuildReport:
        data = data or {}
        return cls(
            counts=dict(data.get("counts", {})),
            examples={k: list(v) for k, v in data.get("examples", {}).items()},
            notes=list(data.get("notes", [])),
        )

    def __str__(self) -> str:
        if not self.counts and not self.notes:
            return "BuildReport(nothing skipped)"
        parts = [f"{kind}: {count} (first: {self.examples[kind][0]})" for kind, count in self.counts.items()]
        return "BuildReport(" + "; ".join(parts + self.notes) + ")"


def make_metadata(
    label_names: Sequence[str],
    source: str,
    box_frame: str | tuple[int, int] = "original_size",
    report: BuildReport | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The JSON-able metadata of a split, for [`attach_metadata`] (the label names go into the features, the rest
    under `METADATA_KEY` in `info.description`)."""
    meta = {
        "label_names": list(label_names),
        "source": source,
        "box_frame": list(box_frame) if isinstance(box_frame, tuple) else box_frame,
        "report": (report or BuildReport()).to_dict(),
    }
    meta.update(extra)
    return meta


def _feature_label_names(dataset: Dataset) -> list[str] | None:
    feature = dataset.features.get(FINDINGS) if dataset.features else None
    inner = getattr(feature, "feature", None)
    return list(inner.names) if isinstance(inner, ClassLabel) else None


def label_matrix(dataset: Dataset) -> np.ndarray:
    """The multi-hot `labels` of a split as one float32 array (rows, labels), read through Arrow (the numpy formatter
    takes seconds per 100k rows)."""
    values = dataset.with_format("arrow")["labels"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
    rows = len(dataset)
    width = values.size // rows if rows else max(getattr(dataset.features["labels"], "length", 0), 0)
    return values.astype(np.float32, copy=False).reshape(rows, width)


def with_label_names(dataset: Dataset, label_names: Sequence[str]) -> Dataset:
    """`dataset` with its `findings` column written from the multi-hot `labels` (a value of at least 0.5 is a
    positive) as `ClassLabel`s named `label_names`; the dataset itself when it already has exactly those names."""
    names = list(label_names)
    if _feature_label_names(dataset) == names:
        return dataset
    labels = label_matrix(dataset)
    if labels.shape[1] != len(names):
        raise ValueError(
            f"{len(names)} label names {names[:5]}... do not fit the {labels.shape[1]}-long `labels` vectors"
        )
    positive = labels >= 0.5
    offsets = np.concatenate([[0], np.cumsum(positive.sum(axis=1))]).astype(np.int32)
    findings = pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.nonzero(positive)[1].astype(np.int64)))
    if FINDINGS in dataset.column_names:
        dataset = dataset.remove_columns(FINDINGS)
    if not len(dataset):  # `add_column` cannot join a column onto an empty selection
        features = Features({**dataset.features, FINDINGS: findings_feature(names)})
        return Dataset.from_dict({name: [] for name in features}, features=features)
    return dataset.add_column(FINDINGS, findings, feature=findings_feature(names))


def attach_metadata(dataset: Dataset, metadata: dict[str, Any]) -> Dataset:
    """Store `metadata` with a split: its `label_names` as the `findings` feature ([`with_label_names`]; a split
    without `labels` keeps them in the JSON), the rest in `dataset.info.description`. Returns the split: a new
    `Dataset` when `findings` had to be written, so always use the returned one."""
    metadata = dict(metadata)
    if metadata.get("label_names") is not None and "labels" in dataset.column_names:
        dataset = with_label_names(dataset, metadata.pop("label_names"))
    dataset.info.description = json.dumps({METADATA_KEY: metadata})
    return dataset


def get_metadata(dataset: Dataset | DatasetDict) -> dict[str, Any]:
    """The clarity_hf metadata of a split (or of the first split of a `DatasetDict`): the JSON of its
    `info.description` with `label_names` from its features (or, for data written before they were features, from
    that JSON); {} when there is none."""
    if isinstance(dataset, DatasetDict):
        dataset = next(iter(dataset.values()))
    try:
        metadata = dict(json.loads(dataset.info.description or "{}").get(METADATA_KEY, {}))
    except (json.JSONDecodeError, AttributeError):
        metadata = {}
    names = _feature_label_names(dataset)
    if names is not None:
        metadata["label_names"] = names
    return metadata


def get_label_names(dataset: Dataset | DatasetDict) -> list[str]:
    """The label names, in the order of the `labels` vector (the names of the `findings` feature)."""
    names = get_metadata(dataset).get("label_names")
    if names is None:
        raise ValueError("this dataset carries no clarity_hf label names (was it built by clarity_hf.data?)")
    return list(names)


def get_build_report(dataset: Dataset | DatasetDict) -> BuildReport:
    """The report of what the builder skipped (empty when nothing was)."""
    return BuildReport.from_dict(get_metadata(dataset).get("report"))


def open_text(path: Path) -> io.TextIOBase:
    """A CSV or text file, plain or gzipped (`.gz`), as UTF-8 text for `csv.reader`; a leading byte-order mark (as
    spreadsheet programs write) is dropped, so it never becomes part of the first header cell or image name. Bytes
    that are not UTF-8 (a Latin-1 export) are a `ValueError` naming the file and the line."""
    path = Path(path)
    if path.suffix == ".gz":
        with gzip.open(path, "rb") as handle:
            raw = handle.read()
    else:
        raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ValueError(
            f"{path.name}:{line}: not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start}); "
            "save the file as UTF-8"
        ) from err
    return io.StringIO(text, newline="")


def iter_csv_rows(
    path: Path, columns: int, problems: Problems, expected: str, header_hint: str | None = None
) -> Iterator[tuple[int, str, list[str]]]:
    """Read a CSV with a header by position: yield (line, "file:line", row) for each non-blank row that has at least
    `columns` cells and nothing but empty cells after them (trailing empty columns are fine); any other row is a
    `malformed_row` problem ("expected `expected`"). With `header_hint`, a header whose first cell does not name an
    image is an error ("expected the `header_hint` header")."""
    with open_text(path) as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header_hint is not None and (not header or "image" not in header[0].lower()):
            raise ValueError(f"{path.name}:1: expected the {header_hint} header")
        for line, row in enumerate(reader, start=2):
            if not "".join(row).strip():
                continue
            where = f"{path.name}:{line}"
            if len(row) < columns or any(cell.strip() for cell in row[columns:]):
                problems("malformed_row", f"{where}: malformed row, expected {expected}: {row}")
                continue
            yield line, where, row


class Problems:
    """What a builder does with a bad item: raise a `ValueError` with the message (the default), or, with
    `skip_missing=True`, record it in the build report and let the caller skip the item."""

    def __init__(self, skip: bool, report: BuildReport | None = None):
        self.skip = skip
        self.report = report if report is not None else BuildReport()

    def __call__(self, kind: str, message: str) -> None:
        if not self.skip:
            raise ValueError(f"{message} (pass skip_missing=True to skip such items and get a report)")
        self.report.add(kind, message)


def parse_box_geometry(
    cells: Sequence[str], where: str, problems: Problems
) -> tuple[float, float, float, float] | None:
    """x, y, w, h from four CSV cells; a non-numeric, non-finite or empty box is a `malformed_row` problem (None)."""
    try:
        x, y, w, h = (float(cell) for cell in cells)
    except ValueError:
        problems("malformed_row", f"{where}: non-numeric box {list(cells)}")
        return None
    if not all(np.isfinite([x, y, w, h])) or w <= 0 or h <= 0:
        problems("malformed_row", f"{where}: invalid box geometry {list(cells)}")
        return None
    return x, y, w, h


# A box may overhang its frame by this many pixels (rounding in annotation tools); beyond that it is an error.
BOX_TOLERANCE = 1.0


def box_in_frame(box: dict[str, Any], size: Sequence[int], where: str, problems: Problems) -> bool:
    """Whether `box` (x, y, w, h) lies in the (height, width) frame `size`; if not, a `box_outside_image` problem."""
    height, width = size
    x0, y0, x1, y1 = box["x"], box["y"], box["x"] + box["w"], box["y"] + box["h"]
    if (
        x0 >= -BOX_TOLERANCE
        and y0 >= -BOX_TOLERANCE
        and x1 <= width + BOX_TOLERANCE
        and y1 <= height + BOX_TOLERANCE
    ):
        return True
    problems(
        "box_outside_image",
        f"{where}: box x={box['x']}, y={box['y']}, w={box['w']}, h={box['h']} lies outside the {width}x{height} "
        "(width x height) image",
    )
    return False


def get_box_frame(dataset: Dataset | DatasetDict, example: dict[str, Any]) -> tuple[int, int]:
    """(height, width) of the pixel frame the example's `boxes` are expressed in (the evaluator's `original_size`)."""
    frame = get_metadata(dataset).get("box_frame", "original_size")
    if frame == "original_size":
        height, width = example["original_size"]
        return int(height), int(width)
    return int(frame[0]), int(frame[1])


def stratified_group_split(
    groups: Sequence[str], classes: Sequence[Sequence[str]], seed: int, names: tuple[str, str] = BOX_SPLITS
) -> list[str]:
    """Split items 50/50 into `names`, keeping each group (patient) whole and balancing every class.

    `groups[i]` is item i's group and `classes[i]` the classes it carries. Groups are visited rarest class first
    (ties broken by a seeded shuffle) and each goes to the half that is further below its target for the group's
    classes, then for the item count. Deterministic for a given seed. Returns the half of each item.
    """
    rng = np.random.default_rng(seed)
    members: dict[str, list[int]] = {}
    for index, group in enumerate(groups):
        members.setdefault(group, []).append(index)
    class_total: dict[str, int] = {}
    for item_classes in classes:
        for name in set(item_classes):
            class_total[name] = class_total.get(name, 0) + 1
    group_names = list(members)
    order = rng.permutation(len(group_names))
    group_classes = {g: sorted({c for i in members[g] for c in classes[i]}) for g in group_names}

    def rarity(group: str) -> int:
        return min((class_total[c] for c in group_classes[group]), default=10**9)

    visit = sorted((group_names[i] for i in order), key=rarity)
    count = [dict.fromkeys(class_total, 0), dict.fromkeys(class_total, 0)]
    size = [0, 0]
    assignment: list[str] = [""] * len(groups)
    for group in visit:
        scores = []
        for half in (0, 1):
            fill = sum(count[half][c] / class_total[c] for c in group_classes[group])
            scores.append((fill, size[half], half))
        half = min(scores)[2]
        for index in members[group]:
            assignment[index] = names[half]
            size[half] += 1
            for name in set(classes[index]):
                count[half][name] += 1
    return assignment
