"""Generic chest X-ray sources: TBX11K COCO sample, a CSV data set, an image folder."""

import json
import shutil

import numpy as np
import pytest
from helpers import TBX11K_DIR
from PIL import Image

from clarity_hf.data.features import clarity_features, get_box_frame, get_build_report, get_label_names
from clarity_hf.data.generic import load_coco_dataset, load_csv_dataset, load_image_folder

TB_LABELS = ["ActiveTuberculosis", "ObsoletePulmonaryTuberculosis", "PulmonaryTuberculosis"]


@pytest.mark.requires_shared("realdata", "tbx11k")
def test_tbx11k_coco_sample():
    dataset = load_coco_dataset(TBX11K_DIR / "annotations" / "TBX11K_train.json", TBX11K_DIR / "imgs")
    assert get_label_names(dataset) == TB_LABELS
    assert dataset.features == clarity_features(TB_LABELS)
    assert list(dataset["image_id"]) == ["tb/tb0005.png", "tb/tb0007.png", "health/h0001.png"]
    first, second, healthy = dataset[0], dataset[1], dataset[2]
    assert first["labels"] == [1.0, 0.0, 0.0] and second["labels"] == [0.0, 1.0, 0.0]
    assert healthy["labels"] == [0.0, 0.0, 0.0] and healthy["boxes"] == []
    assert first["original_size"] == [512, 512] and get_box_frame(dataset, first) == (512, 512)
    box = first["boxes"][0]
    assert box["label"] == "ActiveTuberculosis"
    np.testing.assert_allclose(
        [box["x"], box["y"], box["w"], box["h"]], [381.8337, 126.8734, 40.2369, 44.5658], atol=1e-3
    )
    assert len(second["boxes"]) == 2
    for row in dataset:
        for b in row["boxes"]:
            assert 0 <= b["x"] and b["x"] + b["w"] <= 512 and 0 <= b["y"] and b["y"] + b["h"] <= 512
    assert first["image"].size == (512, 512)


@pytest.mark.requires_shared("realdata", "tbx11k")
def test_coco_bad_input(tmp_path):
    data = json.loads((TBX11K_DIR / "annotations" / "TBX11K_train.json").read_text())
    data["annotations"].append({"id": 9, "image_id": 777, "category_id": 1, "bbox": [1, 2, 3, 4]})
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"bad\.json: annotation #3 \(id 9\): box for image id 777"):
        load_coco_dataset(bad, TBX11K_DIR / "imgs")
    dataset = load_coco_dataset(bad, TBX11K_DIR / "imgs", skip_missing=True)
    assert get_build_report(dataset).counts == {"box_without_image": 1} and len(dataset) == 3
    data["annotations"].pop()
    data["images"][0]["width"] = 1024
    bad.write_text(json.dumps(data))
    with pytest.raises(
        ValueError, match=r"COCO size 1024x512 \(width x height\) differs from the file's 512x512"
    ):
        load_coco_dataset(bad, TBX11K_DIR / "imgs")


def _write_images(folder, names, size=(40, 30)):
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.new("L", size, 20 * i).save(folder / name)


def test_csv_with_label_columns_and_boxes(tmp_path):
    _write_images(tmp_path / "img", ["a.png", "b.png", "c.png"])
    (tmp_path / "labels.csv").write_text(
        "path,patient,Opacity,Nodule,Fracture\nimg/a.png,p1,1,0,0\nimg/b.png,p2,0,0,0\nimg/c.png,p2,1,1,0\n"
    )
    (tmp_path / "boxes.csv").write_text(
        "image,label,x,y,w,h\nimg/c.png,Nodule,5,6,7,8\nimg/a.png,Opacity,1.5,2,10,12\n"
    )
    dataset = load_csv_dataset(
        tmp_path / "labels.csv", patient_column="patient", boxes_csv=tmp_path / "boxes.csv"
    )
    assert get_label_names(dataset) == ["Opacity", "Nodule", "Fracture"]
    assert [list(v) for v in dataset["labels"]] == [[1, 0, 0], [0, 0, 0], [1, 1, 0]]
    assert list(dataset["patient_id"]) == ["p1", "p2", "p2"]
    assert dataset[2]["boxes"] == [{"label": "Nodule", "x": 5.0, "y": 6.0, "w": 7.0, "h": 8.0}]
    # images are 40 wide and 30 high: (height, width)
    assert dataset[0]["original_size"] == [30, 40] and get_box_frame(dataset, dataset[0]) == (30, 40)
    assert int(np.asarray(dataset[2]["image"])[0, 0]) == 40

    (tmp_path / "boxes.csv").write_text("image,label,x,y,w,h\nimg/zzz.png,Nodule,5,6,7,8\n")
    with pytest.raises(ValueError, match=r"boxes\.csv:2: box for img/zzz\.png, which is not in labels\.csv"):
        load_csv_dataset(tmp_path / "labels.csv", patient_column="patient", boxes_csv=tmp_path / "boxes.csv")


def test_csv_with_separated_label_column(tmp_path):
    _write_images(tmp_path, ["x.png", "y.png", "z.png"])
    (tmp_path / "d.csv").write_text(
        "file,findings,age\nx.png,Effusion|Edema,61\ny.png,No Finding,40\nz.png,Edema,\n"
    )
    dataset = load_csv_dataset(
        tmp_path / "d.csv", image_column="file", label_column="findings", age_column="age"
    )
    assert get_label_names(dataset) == ["Edema", "Effusion"]
    assert [list(v) for v in dataset["labels"]] == [[1, 1], [0, 0], [1, 0]]
    assert list(dataset["age"]) == [61, 40, None]
    with pytest.raises(ValueError, match=r"d\.csv:2: unknown label 'Effusion'"):
        load_csv_dataset(
            tmp_path / "d.csv", image_column="file", label_column="findings", label_names=["Edema"]
        )
    (tmp_path / "y.png").unlink()
    with pytest.raises(ValueError, match=r"d\.csv:3: image file .*y\.png not found"):
        load_csv_dataset(tmp_path / "d.csv", image_column="file", label_column="findings")
    dataset = load_csv_dataset(
        tmp_path / "d.csv", image_column="file", label_column="findings", skip_missing=True
    )
    assert len(dataset) == 2 and get_build_report(dataset).counts == {"missing_image": 1}


@pytest.mark.requires_shared("realdata", "tbx11k")
def test_image_folder(tmp_path):
    _write_images(tmp_path / "Pneumonia", ["1.png", "2.png"])
    _write_images(tmp_path / "normal", ["3.png"])
    shutil.copy(TBX11K_DIR / "imgs" / "tb" / "tb0005.png", tmp_path / "Pneumonia" / "4.png")
    dataset = load_image_folder(tmp_path, label_names=["Pneumonia", "Effusion"])
    assert [list(v) for v in dataset["labels"]] == [[1, 0], [1, 0], [1, 0], [0, 0]]
    assert list(dataset["image_id"]) == [
        "Pneumonia/1.png",
        "Pneumonia/2.png",
        "Pneumonia/4.png",
        "normal/3.png",
    ]
    assert dataset[2]["original_size"] == [512, 512]
    _write_images(tmp_path / "Fracture", ["5.png"])
    with pytest.raises(ValueError, match="folder 'Fracture' is not in label_names"):
        load_image_folder(tmp_path, label_names=["Pneumonia", "Effusion"])


# ------------------------------------------------------------------------------------------------ hostile input
def _bomb_png(path, side=60000):
    """A tiny PNG whose header claims side x side pixels (PIL refuses it as a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )


def test_csv_and_split_list_with_byte_order_mark(tmp_path):
    from clarity_hf.data.chestxray14 import read_split_list
    from clarity_hf.data.features import Problems

    _write_images(tmp_path, ["a.png", "b.png"])
    (tmp_path / "d.csv").write_text("path,Opacity\na.png,1\nb.png,0\n", encoding="utf-8-sig")
    dataset = load_csv_dataset(tmp_path / "d.csv")
    assert get_label_names(dataset) == ["Opacity"] and [list(v) for v in dataset["labels"]] == [[1], [0]]
    (tmp_path / "list.txt").write_text("00000001_000.png\n00000002_000.png\n", encoding="utf-8-sig")
    rows = {"00000001_000.png": None, "00000002_000.png": None}
    assert read_split_list(tmp_path / "list.txt", rows, Problems(False)) == list(rows)


def test_boxes_outside_the_image_or_nan(tmp_path):
    _write_images(tmp_path, ["a.png", "b.png"])  # 40 wide, 30 high
    (tmp_path / "d.csv").write_text("path,Nodule\na.png,1\nb.png,1\n")
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("image,label,x,y,w,h\na.png,Nodule,1,2,10,10\nb.png,Nodule,35,2,10,10\n")
    with pytest.raises(ValueError, match=r"boxes\.csv:3: box x=35.0, .* outside the 40x30"):
        load_csv_dataset(tmp_path / "d.csv", boxes_csv=boxes)
    dataset = load_csv_dataset(tmp_path / "d.csv", boxes_csv=boxes, skip_missing=True)
    assert [len(b) for b in dataset["boxes"]] == [1, 0]
    assert get_build_report(dataset).counts == {"box_outside_image": 1}
    boxes.write_text("image,label,x,y,w,h\na.png,Nodule,nan,2,10,10\n")
    with pytest.raises(ValueError, match=r"boxes\.csv:2: invalid box geometry"):
        load_csv_dataset(tmp_path / "d.csv", boxes_csv=boxes)


def test_duplicate_csv_rows(tmp_path):
    _write_images(tmp_path, ["a.png", "b.png"])
    (tmp_path / "d.csv").write_text("path,Opacity\na.png,1\nb.png,0\na.png,1\n")
    dataset = load_csv_dataset(tmp_path / "d.csv")  # an identical repeat is dropped and noted
    assert list(dataset["image_id"]) == ["a.png", "b.png"]
    assert any("d.csv:4: identical duplicate of line 2" in note for note in get_build_report(dataset).notes)
    (tmp_path / "d.csv").write_text("path,Opacity\na.png,1\nb.png,0\na.png,0\n")
    with pytest.raises(ValueError, match=r"d\.csv:4: a\.png is also on line 2 with other values"):
        load_csv_dataset(tmp_path / "d.csv")
    dataset = load_csv_dataset(tmp_path / "d.csv", skip_missing=True)
    assert len(dataset) == 2 and get_build_report(dataset).counts == {"duplicate_row": 1}


def _coco(tmp_path, **changes):
    _write_images(tmp_path / "imgs", ["a.png", "b.png"])
    data = {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 40, "height": 30},
            {"id": 2, "file_name": "b.png", "width": 40, "height": 30},
        ],
        "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 10]}],
        "categories": [{"id": 1, "name": "TB"}, {"id": 2, "name": "Nodule"}],
    }
    data.update(changes)
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(data))
    return path


def test_coco_hostile_input_names_file_and_entry(tmp_path):
    good = load_coco_dataset(_coco(tmp_path), tmp_path / "imgs")
    assert [list(v) for v in good["labels"]] == [[1, 0], [0, 0]]
    annotation = {"id": 7, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 10]}
    twice = load_coco_dataset(_coco(tmp_path, annotations=[annotation, dict(annotation)]), tmp_path / "imgs")
    assert len(twice[0]["boxes"]) == 1  # identical duplicate dropped
    assert any("identical duplicate of annotation #0" in n for n in get_build_report(twice).notes)
    conflicting = [annotation, dict(annotation, category_id=2)]
    with pytest.raises(
        ValueError, match=r"coco\.json: annotation #1 \(id 7\): id also used by annotation #0"
    ):
        load_coco_dataset(_coco(tmp_path, annotations=conflicting), tmp_path / "imgs")
    images = [{"id": 1, "file_name": "a.png"}, {"id": 1, "file_name": "b.png"}]
    with pytest.raises(ValueError, match=r"image #1 \(id 1\): id also used by image #0"):
        load_coco_dataset(_coco(tmp_path, images=images), tmp_path / "imgs")
    categories = [{"id": 1, "name": "TB"}, {"id": 2, "name": "TB"}]
    with pytest.raises(ValueError, match=r"duplicate category name 'TB' \(ids 1 and 2\)"):
        load_coco_dataset(_coco(tmp_path, categories=categories), tmp_path / "imgs", skip_missing=True)
    strings = [dict(annotation, bbox=["1", "2", "10", "10"])]
    with pytest.raises(ValueError, match=r"coco\.json: annotation #0 \(id 7\): malformed bbox \['1'"):
        load_coco_dataset(_coco(tmp_path, annotations=strings), tmp_path / "imgs")
    outside = [dict(annotation, bbox=[35, 2, 10, 10])]
    with pytest.raises(ValueError, match=r"annotation #0 \(id 7\): box .* outside the 40x30"):
        load_coco_dataset(_coco(tmp_path, annotations=outside), tmp_path / "imgs")
    with pytest.raises(ValueError, match=r"coco\.json: image #1 \(id 2, None\): no `file_name`"):
        load_coco_dataset(
            _coco(tmp_path, images=[{"id": 1, "file_name": "a.png"}, {"id": 2}]), tmp_path / "imgs"
        )
    (tmp_path / "broken.json").write_text('{"images": [')
    with pytest.raises(ValueError, match=r"broken\.json: cannot read COCO JSON"):
        load_coco_dataset(tmp_path / "broken.json", tmp_path / "imgs")


def test_corrupt_images_are_skipped_and_counted(tmp_path):
    _write_images(tmp_path / "Opacity", ["good.png"])
    (tmp_path / "Opacity" / "garbage.png").write_bytes(b"not a png at all")
    _bomb_png(tmp_path / "Opacity" / "bomb.png")
    with pytest.raises(ValueError, match=r"bomb\.png: .*decompression bomb"):
        load_image_folder(tmp_path)
    dataset = load_image_folder(tmp_path, skip_missing=True)
    assert list(dataset["image_id"]) == ["Opacity/good.png"]
    assert get_build_report(dataset).counts == {"unreadable_image": 2}

    (tmp_path / "d.csv").write_text("path,Opacity\nOpacity/good.png,1\nOpacity/garbage.png,1\n")
    with pytest.raises(ValueError, match=r"d\.csv:3: .*garbage\.png.*not an image"):
        load_csv_dataset(tmp_path / "d.csv")
    dataset = load_csv_dataset(tmp_path / "d.csv", skip_missing=True)
    assert len(dataset) == 1 and get_build_report(dataset).counts == {"unreadable_image": 1}

    images = [{"id": 1, "file_name": "good.png"}, {"id": 2, "file_name": "bomb.png"}]
    coco = _coco(tmp_path, images=images, annotations=[])
    dataset = load_coco_dataset(coco, tmp_path / "Opacity", skip_missing=True)
    assert len(dataset) == 1 and get_build_report(dataset).counts == {"unreadable_image": 1}
