"""NIH ChestX-ray14 builder: full-scale metadata checks and a miniature download written by the test."""

import csv
import gzip
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from helpers import NIH_METADATA_DIR
from PIL import Image

from clarity_hf.configuration_clarity import NIH_BOXED_PATHOLOGIES, NIH_PATHOLOGIES
from clarity_hf.data.chestxray14 import build_chestxray14
from clarity_hf.data.features import clarity_features, get_box_frame, get_build_report, get_label_names

# The published counts of the v2020 metadata.
SPEC_LABEL_COUNTS = {
    "Infiltration": 19894,
    "Effusion": 13317,
    "Atelectasis": 11559,
    "Nodule": 6331,
    "Mass": 5782,
    "Pneumothorax": 5302,
    "Consolidation": 4667,
    "Pleural_Thickening": 3385,
    "Cardiomegaly": 2776,
    "Emphysema": 2516,
    "Edema": 2303,
    "Fibrosis": 1686,
    "Pneumonia": 1431,
    "Hernia": 227,
}
SPEC_NO_FINDING = 60361
SPEC_BOX_COUNTS = {
    "Atelectasis": 180,
    "Effusion": 153,
    "Cardiomegaly": 146,
    "Infiltration": 123,
    "Pneumonia": 120,
    "Pneumothorax": 98,
    "Mass": 85,
    "Nodule": 79,
}


# ----------------------------------------------------------------------------------------------- full scale
@pytest.fixture(scope="module")
def full_nih():
    start = time.perf_counter()
    with pytest.warns(UserWarning, match="fallback split"):
        dataset = build_chestxray14(NIH_METADATA_DIR, metadata_only=True)
    elapsed = time.perf_counter() - start
    print(f"\nNIH metadata build (112,120 rows, metadata-only): {elapsed:.2f} s")
    return dataset


@pytest.mark.requires_shared("nih")
def test_full_metadata_counts(full_nih):
    columns = {split: full_nih[split].select_columns(["labels", "patient_id", "image"]) for split in full_nih}
    labels = np.concatenate([np.asarray(c["labels"], dtype=np.float32) for c in columns.values()])
    assert labels.shape == (112120, 14)
    patients = [set(c["patient_id"]) for c in columns.values()]
    assert len(set.union(*patients)) == 30805
    for i, first in enumerate(patients):
        for second in patients[i + 1 :]:
            assert not first & second, "a patient is in two splits"
    counts = dict(zip(NIH_PATHOLOGIES, labels.sum(axis=0).astype(int).tolist()))
    assert counts == SPEC_LABEL_COUNTS
    assert int((labels.sum(axis=1) == 0).sum()) == SPEC_NO_FINDING
    assert get_label_names(full_nih) == list(NIH_PATHOLOGIES)
    # metadata-only: the image column is a path or None; no images exist offline
    assert full_nih["train"].features["image"].dtype == "string"
    assert all(path is None for path in list(columns["test"]["image"])[:100])
    # validation is ~10% of train_val, carved by patient
    train_val = len(full_nih["train"]) + len(full_nih["validation"])
    assert abs(len(full_nih["validation"]) / train_val - 0.1) < 0.01
    assert "fallback" in get_build_report(full_nih).notes[0]


@pytest.mark.requires_shared("nih")
def test_full_boxes_and_box_split(full_nih):
    boxed = []
    for split in full_nih:
        part = full_nih[split].select_columns(["boxes", "box_split", "patient_id", "image_id"])
        for row in part.filter(lambda e: len(e["boxes"]) > 0):
            boxed.append(row)
    assert len(boxed) == 880
    box_labels = Counter(b["label"] for row in boxed for b in row["boxes"])
    assert sum(box_labels.values()) == 984
    assert dict(box_labels) == SPEC_BOX_COUNTS
    # 93 images carry several boxes (83 two, 9 three, 1 four); in this file never two of one class, unlike the
    # published remark ("some images carry two boxes of one class"), which the data does not bear out.
    assert Counter(len(row["boxes"]) for row in boxed) == {1: 787, 2: 83, 3: 9, 4: 1}
    frame = get_box_frame(full_nih["test"], boxed[0])
    assert frame == (1024, 1024)
    for row in boxed:
        for b in row["boxes"]:
            assert 0 <= b["x"] < 1024 and 0 <= b["y"] < 1024 and b["w"] > 0 and b["h"] > 0
    halves = Counter(row["box_split"] for row in boxed)
    assert set(halves) == {"tune", "eval"} and abs(halves["tune"] - halves["eval"]) <= 10
    patients = {half: {r["patient_id"] for r in boxed if r["box_split"] == half} for half in ("tune", "eval")}
    assert not patients["tune"] & patients["eval"]
    for half in ("tune", "eval"):
        per_class = Counter(b["label"] for r in boxed if r["box_split"] == half for b in r["boxes"])
        assert set(per_class) == set(NIH_BOXED_PATHOLOGIES)
        for name, total in SPEC_BOX_COUNTS.items():
            assert abs(per_class[name] - total / 2) <= 0.1 * total, (half, name, per_class[name])
    # only boxed images are in the localization benchmark
    assert sum(1 for s in full_nih for v in full_nih[s]["box_split"] if v) == 880


# ----------------------------------------------------------------------------------------------- miniature
META_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    '"OriginalImage[Width,Height]","OriginalImagePixelSpacing[x,y]"'
)
# image, labels, follow-up, patient, age, sex, view, width, height, spacing x, spacing y
MINI_ROWS = [
    ("00000001_000.png", "Cardiomegaly", 0, 1, 57, "M", "PA", 2682, 2749, 0.143, 0.143),
    ("00000001_001.png", "Cardiomegaly|Emphysema", 1, 1, 58, "M", "PA", 2894, 2729, 0.143, 0.143),
    ("00000002_000.png", "No Finding", 0, 2, 80, "M", "PA", 2500, 2048, 0.171, 0.171),
    ("00000003_000.png", "Hernia", 0, 3, 74, "F", "PA", 2500, 2048, 0.168, 0.168),
    ("00000003_001.png", "Effusion|Infiltration|Mass", 1, 3, 75, "F", "AP", 2048, 2500, 0.168, 0.168),
    ("00000004_000.png", "Mass|Nodule", 0, 4, 82, "M", "AP", 2500, 2048, 0.168, 0.168),
    ("00000005_000.png", "No Finding", 0, 5, 69, "F", "PA", 2048, 2500, 0.168, 0.168),
    ("00000006_000.png", "Atelectasis|Pneumothorax", 0, 6, 81, "M", "PA", 2992, 2991, 0.143, 0.143),
    ("00000007_000.png", "Pneumonia", 0, 7, 33, "F", "AP", 2500, 2048, 0.168, 0.168),
    (
        "00000008_000.png",
        "Fibrosis|Edema|Consolidation|Pleural_Thickening",
        0,
        8,
        60,
        "M",
        "PA",
        2048,
        2500,
        0.2,
        0.2,
    ),
]
BOX_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,"
MINI_BOXES = [
    ("00000003_001.png", "Infiltrate", 100.5, 200.25, 300.0, 150.0),
    ("00000003_001.png", "Mass", 600.0, 500.0, 120.0, 110.0),
    ("00000004_000.png", "Nodule", 700.0, 300.0, 40.0, 42.5),
    ("00000004_000.png", "Nodule", 200.0, 310.0, 35.0, 30.0),
    ("00000006_000.png", "Pneumothorax", 650.0, 90.0, 250.0, 300.0),
    ("00000001_000.png", "Cardiomegaly", 400.0, 500.0, 420.0, 300.0),
]
TRAIN_VAL = [
    "00000001_000.png",
    "00000001_001.png",
    "00000002_000.png",
    "00000005_000.png",
    "00000008_000.png",
]
TEST = ["00000003_000.png", "00000003_001.png", "00000004_000.png", "00000006_000.png", "00000007_000.png"]


def _pixel_value(index: int) -> int:
    return 10 + 20 * index


def write_mini_nih(
    root: Path, layout: str, gz: bool = False, rows=MINI_ROWS, boxes=MINI_BOXES, skip_images=()
):
    root.mkdir(parents=True, exist_ok=True)
    meta = META_HEADER + "\n" + "".join(",".join(str(v) for v in row) + "\n" for row in rows)
    bbox = BOX_HEADER + "\n" + "".join(",".join(str(v) for v in b) + ",,\n" for b in boxes)
    opener = (lambda p: gzip.open(str(p) + ".gz", "wt")) if gz else (lambda p: open(p, "w"))
    with opener(root / "Data_Entry_2017_v2020.csv") as f:
        f.write(meta)
    with opener(root / "BBox_List_2017.csv") as f:
        f.write(bbox)
    (root / "train_val_list.txt").write_text("\n".join(TRAIN_VAL) + "\n")
    (root / "test_list.txt").write_text("\n".join(TEST) + "\n")
    for index, row in enumerate(rows):
        if row[0] in skip_images:
            continue
        if layout == "flat":
            folder = root / "images"
        else:
            folder = root / f"images_{index % 3 + 1:03d}" / "images"
        folder.mkdir(parents=True, exist_ok=True)
        mode = "RGBA" if index == 4 else "L"  # a few NIH PNGs carry extra channels
        Image.new(mode, (16, 16), _pixel_value(index) if mode == "L" else (_pixel_value(index),) * 4).save(
            folder / str(row[0])
        )
    return root


@pytest.mark.parametrize("layout,gz", [("flat", False), ("nested", True)])
def test_mini_download_builds(tmp_path, layout, gz):
    root = write_mini_nih(tmp_path / layout, layout, gz=gz)
    dataset = build_chestxray14(root, validation_fraction=0.3, seed=1)
    assert set(dataset) == {"train", "validation", "test"}
    assert dataset["train"].features == clarity_features(NIH_PATHOLOGIES)
    assert list(dataset["test"]["image_id"]) == TEST  # the official test list, in order
    assert sorted(list(dataset["train"]["image_id"]) + list(dataset["validation"]["image_id"])) == sorted(
        TRAIN_VAL
    )
    assert len(dataset["validation"]) >= 1
    patients = [set(dataset[s]["patient_id"]) for s in dataset]
    assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])
    assert get_build_report(dataset).num_skipped == 0

    row = dataset["test"][TEST.index("00000003_001.png")]
    expected = np.zeros(14, dtype=np.float32)
    for name in ("Effusion", "Infiltration", "Mass"):
        expected[NIH_PATHOLOGIES.index(name)] = 1
    np.testing.assert_array_equal(np.asarray(row["labels"], dtype=np.float32), expected)
    assert row["image_id"] == "00000003_001.png"
    assert row["patient_id"] == "3"
    assert row["age"] == 75 and row["sex"] == "F" and row["view_position"] == "AP" and row["follow_up"] == 1
    assert row["original_size"] == [2500, 2048]  # (height, width); the CSV row gives width 2048, height 2500
    np.testing.assert_allclose(row["pixel_spacing"], [0.168, 0.168], rtol=1e-6)
    assert row["boxes"] == [
        {"label": "Infiltration", "x": 100.5, "y": 200.25, "w": 300.0, "h": 150.0},
        {"label": "Mass", "x": 600.0, "y": 500.0, "w": 120.0, "h": 110.0},
    ]
    assert row["box_split"] in ("tune", "eval")
    pixels = np.asarray(row["image"].convert("L"))
    assert pixels.shape == (16, 16) and int(pixels[0, 0]) == _pixel_value(4)
    hernia = dataset["test"][0]
    assert hernia["boxes"] == [] and hernia["box_split"] == ""
    assert np.asarray(hernia["labels"])[NIH_PATHOLOGIES.index("Hernia")] == 1
    boxed = [r for s in dataset for r in dataset[s] if r["boxes"]]
    assert len(boxed) == 4 and sum(len(r["boxes"]) for r in boxed) == 6
    assert {r["box_split"] for r in boxed} == {"tune", "eval"}
    normal = [r for r in dataset["train"]] + [r for r in dataset["validation"]]
    by_id = {r["image_id"]: r for r in normal}
    assert np.asarray(by_id["00000002_000.png"]["labels"]).sum() == 0
    assert int(np.asarray(by_id["00000002_000.png"]["image"])[3, 3]) == _pixel_value(2)


def test_validation_carve_is_seeded(tmp_path):
    root = write_mini_nih(tmp_path / "seeded", "flat")
    first = build_chestxray14(root, validation_fraction=0.3, seed=3)["validation"]["image_id"]
    again = build_chestxray14(root, validation_fraction=0.3, seed=3)["validation"]["image_id"]
    assert first == again


def _error(tmp_path, **kwargs):
    root = write_mini_nih(tmp_path / "bad", "flat", **{k: v for k, v in kwargs.items() if k != "lists"})
    if "lists" in kwargs:
        train_val, test = kwargs["lists"]
        (root / "train_val_list.txt").write_text("\n".join(train_val) + "\n")
        (root / "test_list.txt").write_text("\n".join(test) + "\n")
    return root


def test_missing_image_raises_and_skip_reports(tmp_path):
    root = _error(tmp_path, skip_images=("00000004_000.png",))
    with pytest.raises(
        ValueError, match=r"Data_Entry_2017_v2020\.csv: image file 00000004_000\.png not found"
    ):
        build_chestxray14(root)
    dataset = build_chestxray14(root, skip_missing=True)
    report = get_build_report(dataset)
    assert report.counts == {"missing_image": 1, "box_of_skipped_image": 2, "split_entry_not_in_metadata": 1}
    assert "00000004_000.png" in report.examples["missing_image"][0]
    assert "00000004_000.png" not in list(dataset["test"]["image_id"]) and len(dataset["test"]) == 4


def test_unknown_label_names_file_and_line(tmp_path):
    rows = list(MINI_ROWS)
    rows[2] = ("00000002_000.png", "Pneumonia|Cancer", 0, 2, 80, "M", "PA", 2500, 2048, 0.171, 0.171)
    with pytest.raises(ValueError, match=r"Data_Entry_2017_v2020\.csv:4: unknown label\(s\) \['Cancer'\]"):
        build_chestxray14(_error(tmp_path, rows=rows))
    boxes = list(MINI_BOXES) + [("00000004_000.png", "Tumour", 1, 2, 3, 4)]
    with pytest.raises(ValueError, match=r"BBox_List_2017\.csv:8: unknown box label 'Tumour'"):
        build_chestxray14(_error(tmp_path, boxes=boxes))


def test_malformed_rows_name_file_and_line(tmp_path):
    rows = list(MINI_ROWS)
    rows[5] = ("00000004_000.png", "Mass", 0, 4, 82, "M")
    with pytest.raises(ValueError, match=r"Data_Entry_2017_v2020\.csv:7: malformed row"):
        build_chestxray14(_error(tmp_path, rows=rows))
    rows[5] = ("00000004_000.png", "Mass", 0, 4, "old", "M", "AP", 2500, 2048, 0.168, 0.168)
    with pytest.raises(ValueError, match=r"Data_Entry_2017_v2020\.csv:7: non-numeric"):
        build_chestxray14(_error(tmp_path, rows=rows))
    boxes = list(MINI_BOXES)
    boxes[1] = ("00000003_001.png", "Mass", "x", 500.0, 120.0, 110.0)
    with pytest.raises(ValueError, match=r"BBox_List_2017\.csv:3: non-numeric box"):
        build_chestxray14(_error(tmp_path, boxes=boxes))
    dataset = build_chestxray14(_error(tmp_path, boxes=boxes), skip_missing=True)
    assert get_build_report(dataset).counts == {"malformed_row": 1}
    assert sum(len(b) for split in dataset for b in list(dataset[split]["boxes"])) == len(MINI_BOXES) - 1


def test_box_for_unknown_image(tmp_path):
    boxes = list(MINI_BOXES) + [("00009999_000.png", "Nodule", 1, 2, 3, 4)]
    with pytest.raises(
        ValueError, match=r"BBox_List_2017\.csv:8: box for 00009999_000\.png, which is not in the"
    ):
        build_chestxray14(_error(tmp_path, boxes=boxes))
    report = get_build_report(build_chestxray14(_error(tmp_path, boxes=boxes), skip_missing=True))
    assert report.counts == {"box_without_image": 1}


def test_patient_in_two_splits(tmp_path):
    train_val = [n for n in TRAIN_VAL if n != "00000001_001.png"]
    test = TEST + ["00000001_001.png"]  # patient 1 now has images on both sides
    root = _error(tmp_path, lists=(train_val, test))
    with pytest.raises(
        ValueError, match=r"patient 1 has images in both train_val and test \(e\.g\. 00000001_000"
    ):
        build_chestxray14(root)
    dataset = build_chestxray14(root, skip_missing=True)
    assert get_build_report(dataset).counts == {"patient_in_two_splits": 1, "box_of_skipped_image": 1}
    assert "00000001_000.png" not in list(dataset["train"]["image_id"]) + list(
        dataset["validation"]["image_id"]
    )


def test_image_missing_from_lists_and_list_entry_unknown(tmp_path):
    root = _error(tmp_path, lists=(TRAIN_VAL[:-1], TEST))
    with pytest.raises(ValueError, match=r"00000008_000\.png is in neither split list"):
        build_chestxray14(root)
    root = _error(tmp_path, lists=(TRAIN_VAL + ["00000042_000.png"], TEST))
    with pytest.raises(ValueError, match=r"train_val_list\.txt:6: 00000042_000\.png is not in the metadata"):
        build_chestxray14(root)


def test_explicit_lists_and_fallback(tmp_path):
    root = write_mini_nih(tmp_path / "lists", "flat")
    (root / "train_val_list.txt").unlink()
    (root / "test_list.txt").unlink()
    dataset = build_chestxray14(root, train_val_list=TRAIN_VAL, test_list=TEST)
    assert list(dataset["test"]["image_id"]) == TEST
    with pytest.warns(UserWarning, match="NOT the official split"):
        fallback = build_chestxray14(root, validation_fraction=0.0)
    test_ids = set(fallback["test"]["image_id"])
    assert {r[0] for r in MINI_ROWS if any(b[0] == r[0] for b in MINI_BOXES)} <= test_ids
    assert len(fallback["train"]) + len(fallback["test"]) == len(MINI_ROWS)


def test_bbox_header_with_trailing_columns_is_read_by_position(tmp_path):
    root = write_mini_nih(tmp_path / "pos", "flat")
    with open(root / "BBox_List_2017.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert len(rows[0]) == 9 and len(rows[1]) == 8
    assert build_chestxray14(root)["test"][2]["boxes"][1] == {
        "label": "Nodule",
        "x": 200.0,
        "y": 310.0,
        "w": 35.0,
        "h": 30.0,
    }


def test_boxes_outside_the_1024_frame_and_byte_order_marks(tmp_path):
    boxes = list(MINI_BOXES)
    boxes[1] = ("00000003_001.png", "Mass", 1000.0, 500.0, 120.0, 110.0)  # x + w = 1120 > 1024
    with pytest.raises(ValueError, match=r"BBox_List_2017\.csv:3: box x=1000\.0, .* outside the 1024x1024"):
        build_chestxray14(_error(tmp_path, boxes=boxes))
    dataset = build_chestxray14(_error(tmp_path, boxes=boxes), skip_missing=True)
    assert get_build_report(dataset).counts == {"box_outside_image": 1}
    # files saved by a spreadsheet program start with a byte-order mark: it is not part of the first name
    root = write_mini_nih(tmp_path / "bom", "flat")
    for name in ("Data_Entry_2017_v2020.csv", "BBox_List_2017.csv", "train_val_list.txt", "test_list.txt"):
        path = root / name
        path.write_text(path.read_text(), encoding="utf-8-sig")
    with_bom = build_chestxray14(root, validation_fraction=0.3, seed=1)
    plain = build_chestxray14(write_mini_nih(tmp_path / "plain", "flat"), validation_fraction=0.3, seed=1)
    for split in plain:
        assert list(with_bom[split]["image_id"]) == list(plain[split]["image_id"])
    assert get_build_report(with_bom).counts == {}
