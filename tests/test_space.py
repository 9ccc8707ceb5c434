# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""The demo Space: `predict` on the real fixtures, and the Gradio app answering a gradio_client request."""

import os
import socket
import subprocess
import sys
import time

import numpy as np
import pydicom
import pytest
from helpers import stop_process
from hub_testing import REPO_ROOT, load_space_app, make_tiny_export, real_fixtures
from PIL import Image

from clarity_hf import NIH_PATHOLOGIES

FIXTURES = real_fixtures()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("space_model")
    make_tiny_export(folder, results=None)
    return folder


@pytest.fixture(scope="module")
def app(model_dir):
    return load_space_app(model_dir)


@pytest.mark.parametrize("kind", ["png", "dicom"])
def test_predict_on_real_fixtures(app, kind):
    path = FIXTURES[kind]
    if kind == "png":
        size = Image.open(path).size
    else:
        dataset = pydicom.dcmread(path)
        size = (int(dataset.Columns), int(dataset.Rows))
    scores, overlay, boxes = app.predict(str(path), "Pneumothorax", 0.5)
    assert list(scores) == list(NIH_PATHOLOGIES)
    assert all(0.0 < v < 1.0 for v in scores.values())
    assert overlay.size == size and overlay.mode == "RGB"
    assert boxes and {b["label"] for b in boxes} == {"Pneumothorax"}
    for box in boxes:
        b = box["box"]
        assert 0 <= b["xmin"] < b["xmax"] <= size[0] and 0 <= b["ymin"] < b["ymax"] <= size[1]
    # The overlay differs from the plain X-ray where the heatmap is hot, and the boxes are drawn in green.
    pixels = np.asarray(overlay)
    assert (pixels[..., 0] != pixels[..., 2]).mean() > 0.01
    first = boxes[0]["box"]
    assert tuple(pixels[int(first["ymin"]), int((first["xmin"] + first["xmax"]) / 2)]) == (0, 255, 0)
    # A higher heatmap threshold keeps only hotter pixels: the boxes cover less area.
    _, _, tight = app.predict(str(path), "Pneumothorax", 0.9)

    def area(found):
        return sum(
            (b["box"]["xmax"] - b["box"]["xmin"]) * (b["box"]["ymax"] - b["box"]["ymin"]) for b in found
        )

    assert 0 < area(tight) < area(boxes)


def test_predict_rejects_bad_input(app):
    with pytest.raises(ValueError, match="unknown class"):
        app.predict(str(FIXTURES["png"]), "Broken_Bone", 0.5)
    with pytest.raises(ValueError, match="upload"):
        app.predict(None, "Mass", 0.5)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_app_answers_gradio_client(model_dir):
    pytest.importorskip("gradio")
    gradio_client = pytest.importorskip("gradio_client")
    port = _free_port()
    env = {
        **os.environ,
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(REPO_ROOT),
    }
    process = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "space" / "app.py"), "--model", str(model_dir), "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert process.poll() is None, process.stdout.read()[-3000:]
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.5)
        else:
            pytest.fail("the Space did not start within 120 s")
        client = gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False)
        label, overlay_path, boxes = client.predict(
            gradio_client.handle_file(str(FIXTURES["png"])), "Cardiomegaly", 0.5, api_name="/predict"
        )
        assert {c["label"] for c in label["confidences"]} == set(NIH_PATHOLOGIES)
        assert Image.open(overlay_path).size == Image.open(FIXTURES["png"]).size
        assert boxes and {b["label"] for b in boxes} == {"Cardiomegaly"}
    finally:
        stop_process(process)
