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
    assert dataset.features == clarity_features(3)
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
