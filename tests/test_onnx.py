# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""ONNX export: the exported graph gives PyTorch's logits and heatmaps to 1e-4 on the real fixture images, for any
batch size, and the command writes a checked file."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from archive_testing import FIXTURES, make_model_dir

pytest.importorskip("onnx", reason="needs the onnx extra")
pytest.importorskip("onnxscript", reason="needs the onnx extra")
pytest.importorskip("onnxruntime", reason="needs the onnx extra")

from clarity_hf.commands.cli import main as cli_main  # noqa: E402
from clarity_hf.hub import load_for_inference  # noqa: E402
from clarity_hf.inference.onnx import onnx_session, run_onnx  # noqa: E402

IMAGES = [
    FIXTURES / "00000001_000.png",
    FIXTURES / "tbx11k_tb0005.png",
    FIXTURES / "siim_pneumothorax_example.dcm",
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = make_model_dir(tmp_path_factory.mktemp("model"))
    path = tmp_path_factory.mktemp("onnx") / "clarity.onnx"
    assert cli_main(["export-onnx", str(folder), "--output", str(path)]) == 0
    return folder, path


def test_onnx_matches_pytorch_on_real_images_with_a_dynamic_batch(exported):
    import onnx

    folder, path = exported
    pipe = load_for_inference(folder)
    session = onnx_session(path)
    assert [o.name for o in session.get_outputs()] == ["logits", "heatmaps"]
    metadata = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(metadata["id2label"])["0"] == pipe.model.config.id2label[0]
    pixel_values = pipe.image_processor([str(p) for p in IMAGES], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = pipe.model(pixel_values=pixel_values)
    for batch in (pixel_values, pixel_values[:1]):  # 3 images, then 1: the batch axis is dynamic
        got = run_onnx(session, batch.numpy())
        n = len(batch)
        assert got["logits"].shape == (n, 14) and got["heatmaps"].shape == tuple(expected.heatmaps[:n].shape)
        np.testing.assert_allclose(got["logits"], expected.logits[:n].numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(got["heatmaps"], expected.heatmaps[:n].numpy(), atol=1e-4, rtol=0)


def test_export_command_reports_parity(exported, tmp_path, capsys):
    folder, _ = exported
    out = tmp_path / "again.onnx"
    capsys.readouterr()
    assert cli_main(["export-onnx", str(folder), "--output", str(out), "--check", str(IMAGES[0])]) == 0
    report = json.loads(capsys.readouterr().out)
    assert Path(report["onnx"]) == out and out.stat().st_size == report["bytes"] > 0
    assert report["max_abs_difference"]["logits"] < 1e-4 and report["max_abs_difference"]["heatmaps"] < 1e-4
