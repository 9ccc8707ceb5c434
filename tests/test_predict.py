# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""`clarity-predict` on the real chest X-rays of tests/fixtures: JSON on stdout, an overlay of the original size."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from helpers import REPO_ROOT, subprocess_env
from PIL import Image

from clarity_hf import ClarityConfig, ClarityForMultiLabelLocalization
from clarity_hf.commands.cli import predict_main
from clarity_hf.configuration_clarity import NIH_PATHOLOGIES
from clarity_hf.evaluation.run import build_processor

FIXTURES = Path(__file__).resolve().parent / "fixtures"
IMAGES = ["00000001_000.png", "tbx11k_tb0005.png", "siim_pneumothorax_example.dcm"]


def original_size(path: Path) -> tuple[int, int]:
    if path.suffix == ".dcm":
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        return int(ds.Columns), int(ds.Rows)
    with Image.open(path) as image:
        return image.size


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = ClarityForMultiLabelLocalization(ClarityConfig.from_preset("clarity-tiny")).eval()
    folder = tmp_path_factory.mktemp("model")
    model.save_pretrained(folder)
    build_processor(64).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("name", IMAGES)
def test_predict_writes_original_size_overlay_and_json(name, model_dir, tmp_path, capsys):
    image = FIXTURES / name
    output = tmp_path / f"{image.stem}.png"
    assert (
        predict_main([str(image), "--model", str(model_dir), "--threshold", "0.0", "--output", str(output)])
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    width, height = original_size(image)
    with Image.open(output) as overlay:
        # the X-ray at its own size, with the colour bar to its right and the caption band below
        assert overlay.width > width and overlay.height > height and overlay.mode == "RGB"
    assert result["original_size"] == {"width": width, "height": height}
    assert list(result["scores"]) == list(NIH_PATHOLOGIES)
    assert all(0.0 <= s <= 1.0 for s in result["scores"].values())
    assert result["overlay"] == str(output) and result["overlay_class"] in NIH_PATHOLOGIES
    # threshold 0: every class gives at least one box, all inside the original frame.
    assert {b["label"] for b in result["boxes"]} == set(NIH_PATHOLOGIES)
    for box in result["boxes"]:
        coords = box["box"]
        assert (
            0 <= coords["xmin"] < coords["xmax"] <= width and 0 <= coords["ymin"] < coords["ymax"] <= height
        )
        assert 0.0 <= box["score"] <= result["scores"][box["label"]] + 1e-6


def test_predict_threshold_one_gives_no_boxes(model_dir, tmp_path, capsys):
    image = FIXTURES / IMAGES[0]
    assert (
        predict_main(
            [str(image), "--model", str(model_dir), "--threshold", "1.0", "--output", str(tmp_path / "o.png")]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["boxes"] == []
    # no class reaches p = 1: the overlay shows the X-ray without a heatmap colour (gray: R == G == B)
    width, height = original_size(image)
    with Image.open(tmp_path / "o.png") as overlay:
        pixels = np.asarray(overlay.convert("RGB"))[:height, :width].astype(int)
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()


@pytest.mark.parametrize("threshold", ["5", "-1", "nan", "1.5"])
def test_predict_refuses_thresholds_outside_0_1(tmp_path, capsys, threshold):
    for option in ("--threshold", "--heatmap-threshold"):
        with pytest.raises(SystemExit) as exit_info:
            predict_main([str(tmp_path / "x.png"), "--model", str(tmp_path), option, threshold])
        assert exit_info.value.code == 2 and f"argument {option}: the value must be a number in [0, 1]" in capsys.readouterr().err


def test_predict_bad_inputs(model_dir, tmp_path, capsys):
    assert predict_main([str(tmp_path / "missing.png"), "--model", str(model_dir)]) == 2
    assert "missing.png: no such file" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    assert predict_main([str(corrupt), "--model", str(model_dir), "--output", str(tmp_path / "o.png")]) == 2
    assert "corrupt.png" in capsys.readouterr().err
    overlay = tmp_path / "never.png"
    argv = [str(FIXTURES / IMAGES[0]), "--model", str(tmp_path / "nomodel"), "--output", str(overlay)]
    assert predict_main(argv) == 2  # with no --output the default name would go into the working directory
    assert "cannot load model" in capsys.readouterr().err


def test_python_m_clarity_hf_predict(model_dir, tmp_path):
    output = tmp_path / "overlay.png"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "clarity_hf",
            "predict",
            str(FIXTURES / IMAGES[2]),
            "--model",
            str(model_dir),
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        cwd=REPO_ROOT,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    result = json.loads(completed.stdout)
    assert (result["original_size"]["width"], result["original_size"]["height"]) == (1024, 1024)
    with Image.open(output) as overlay:  # the X-ray, a colour bar to its right and a caption band below
        assert overlay.width > 1024 and overlay.height > 1024
