"""The NIH-shaped rehearsal folder (real metadata, rendered pixels) and the rehearsal of the README's real path."""

import gzip
import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
from helpers import NIH_METADATA_DIR, REPO_ROOT, subprocess_env
from PIL import Image

from clarity_hf.data.nih_rehearsal import (
    BOXES_NAME,
    METADATA_NAME,
    read_release_metadata,
    release_folder,
    render_release_image,
    select_patients,
    write_nih_rehearsal,
)

pytestmark = pytest.mark.skipif(
    not (NIH_METADATA_DIR / (METADATA_NAME + ".gz")).is_file(),
    reason=f"the real NIH metadata is not at {NIH_METADATA_DIR} (../shared/nih; set CLARITY_SHARED)",
)


def _real_lines(name):
    return (
        gzip.decompress((NIH_METADATA_DIR / (name + ".gz")).read_bytes()).decode().splitlines(keepends=True)
    )


@pytest.fixture(scope="module")
def meta():
    return read_release_metadata(NIH_METADATA_DIR)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("nih")
    summary = write_nih_rehearsal(out, 6, NIH_METADATA_DIR, seed=3, num_proc=1)
    return out, summary


def test_layout_names_and_headers_are_the_release(folder):
    out, summary = folder
    assert summary["images"] == 6
    names = {p.name for p in out.iterdir()}
    assert {METADATA_NAME, BOXES_NAME, "train_val_list.txt", "test_list.txt", "README.md"} <= names
    # the release's headers byte for byte, including the box file's unnamed trailing columns
    assert (out / METADATA_NAME).read_text().splitlines(keepends=True)[0] == _real_lines(METADATA_NAME)[0]
    box_header = (out / BOXES_NAME).read_text().splitlines(keepends=True)[0]
    assert box_header == _real_lines(BOXES_NAME)[0] == "Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
    pngs = sorted(out.glob("images_0*/images/*.png"))
    assert len(pngs) == 6
    for path in pngs:
        assert path.parent.name == "images" and path.parent.parent.name.startswith("images_0")
        with Image.open(path) as image:
            assert image.size == (1024, 1024) and image.mode in ("L", "RGBA")
    modes = [Image.open(p).mode for p in pngs]
    assert modes.count("RGBA") == summary["rgba_images"] == 1
    assert "not the official" in (out / "README.md").read_text().lower()


def test_rows_and_boxes_are_real_and_verbatim(folder, meta):
    out, _ = folder
    real_rows = set(_real_lines(METADATA_NAME)[1:])
    rows = (out / METADATA_NAME).read_text().splitlines(keepends=True)[1:]
    assert len(rows) == 6 and set(rows) <= real_rows
    ids = {row.split(",")[0] for row in rows}
    assert {p.name for p in out.glob("images_0*/images/*.png")} == ids
    boxes = (out / BOXES_NAME).read_text().splitlines(keepends=True)[1:]
    expected = [line for line in _real_lines(BOXES_NAME)[1:] if line.split(",")[0] in ids]
    assert sorted(boxes) == sorted(expected) and boxes  # every real box of the chosen images, nothing else
    for line in boxes:
        x, y, w, h = map(float, line.split(",")[2:6])
        assert 0 <= x and 0 <= y and x + w <= 1024 and y + h <= 1024


def test_split_is_by_whole_patient_with_boxed_images_in_test(folder, meta):
    out, _ = folder
    train_val = (out / "train_val_list.txt").read_text().split()
    test = (out / "test_list.txt").read_text().split()
    assert train_val and test and not set(train_val) & set(test)
    patients = lambda ids: {i.split("_")[0] for i in ids}  # noqa: E731
    assert not patients(train_val) & patients(test)
    chosen = set(train_val) | set(test)
    for pid in patients(chosen):  # whole patients: every image of a chosen patient is there
        assert set(meta.patients[str(int(pid))]) <= chosen
    assert all(i in test for i in chosen if i in meta.boxes)


def test_selection_takes_all_boxed_images_when_the_budget_allows(meta):
    train_val, test = select_patients(meta, 40000, seed=0)
    assert len(train_val) + len(test) == 40000
    assert {i for i in meta.boxes} <= set(test) and len(meta.boxes) == 880


def test_images_sit_in_the_release_folders(meta):
    counts = {}
    for _image_id, position in meta.order.items():
        folder = release_folder(position)
        counts[folder] = counts.get(folder, 0) + 1
    assert counts["images_001"] == 4999 and counts["images_012"] == 7121
    assert all(counts[f"images_{k:03d}"] == 10000 for k in range(2, 12))
    assert release_folder(meta.order["00001335_006.png"]) == "images_001"
    assert release_folder(meta.order["00001336_000.png"]) == "images_002"


def test_each_boxed_lesion_lies_inside_its_real_box(meta):
    for image_id in ("00013118_008.png", "00014716_007.png", "00000211_019.png"):
        if image_id not in meta.boxes:
            continue
        with_lesions, _ = render_release_image(meta, image_id, seed=0)
        without, _ = render_release_image(meta, image_id, seed=0, with_boxed_lesions=False)
        changed = (
            np.abs(np.asarray(with_lesions, np.int16) - np.asarray(without, np.int16)) > 2
        )  # (1024, 1024)
        inside = np.zeros_like(changed)
        for _, x, y, w, h in meta.boxes[image_id]:
            inside[int(y) : int(np.ceil(y + h)), int(x) : int(np.ceil(x + w))] = True
        assert changed.sum() > 50, f"{image_id}: no visible lesion"
        assert changed[inside].sum() / changed.sum() >= 0.9


def test_every_finding_of_the_row_is_drawn(meta):
    # a boxed image with other findings too: each label changes the pixels when drawn
    image_id = next(i for i in sorted(meta.boxes) if len(meta.labels[i]) >= 3)
    labels = meta.labels[image_id]
    full, _ = render_release_image(meta, image_id, image_size=256)
    full = np.asarray(full)
    boxed = {box[0] for box in meta.boxes[image_id]}
    for label in labels:
        if label in boxed:
            other, _ = render_release_image(meta, image_id, image_size=256, with_boxed_lesions=False)
        else:
            other, _ = render_release_image(meta, image_id, image_size=256, findings=set(labels) - {label})
        assert not np.array_equal(full, np.asarray(other)), f"{image_id}: {label} is not drawn"


def test_same_seed_gives_the_same_bytes(folder, tmp_path):
    out, _ = folder
    again = tmp_path / "again"
    write_nih_rehearsal(again, 6, NIH_METADATA_DIR, seed=3, num_proc=2)

    def digest(root):
        return {
            str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }

    assert digest(out) == digest(again)
    other = tmp_path / "other"
    write_nih_rehearsal(other, 2, NIH_METADATA_DIR, seed=4, num_proc=1)
    assert digest(other) != digest(again)


@pytest.mark.slow
def test_rehearsal_runs_the_real_path_end_to_end(tmp_path):
    """The README's path at 512 on 24 images, 1 optimizer step per stage (a few minutes on 2 cores)."""
    out = tmp_path / "rehearsal"
    completed = subprocess.run(
        [sys.executable, "-m", "clarity_hf", "rehearse", "--output-dir", str(out),
         "--metadata-dir", str(NIH_METADATA_DIR), "--dicom", str(REPO_ROOT / "tests" / "fixtures" / "siim_pneumothorax_example.dcm"),
         "--num-images", "24", "--steps", "1", "--train-batch-size", "1", "--gradient-accumulation-steps", "1",
         "--eval-samples", "4", "--n-bootstrap", "20"],
        capture_output=True, text=True, env=subprocess_env(), cwd=tmp_path, timeout=900,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    table = json.loads((out / "stages.json").read_text())
    names = [row["name"] for row in table["stages"]]
    assert names == [
        "make_folder", "prepare_512", "train_teacher", "teacher_logits_cache", "train_student", "evaluate",
        "push_to_hub_dry_run", "reload_reference", "fresh_reload", "predict_dicom",
    ]  # fmt: skip
    reload = next(row for row in table["stages"] if row["name"] == "fresh_reload")["extra"]
    assert reload["logits_identical"] and reload["heatmaps_identical"] and reload["pixel_values_identical"]
    assert reload["ok"] is True and reload["clarity_hf_imported"] is False
    assert reload["heatmaps_shape"] == [1, 14, 32, 32]  # the 512 model
    assert (out / "report" / "report.json").is_file() and (out / "dicom_overlay.png").is_file()
    assert (out / "runs" / "teacher" / "best_model" / "config.json").is_file()
    assert (out / "hub_export" / "model.safetensors").is_file()


def test_command_writes_the_folder_and_prints_its_summary(folder, tmp_path, capsys):
    from clarity_hf.commands.make_nih_rehearsal import main

    out = tmp_path / "cli"
    argv = [
        str(out),
        "--num-images",
        "6",
        "--metadata-dir",
        str(NIH_METADATA_DIR),
        "--seed",
        "3",
        "--num-proc",
        "1",
    ]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    expected = folder[1]
    for key in ("images", "train_val_images", "test_images", "boxes", "num_proc"):
        assert summary[key] == expected[key]
    assert (out / METADATA_NAME).read_bytes() == (folder[0] / METADATA_NAME).read_bytes()
