"""The reader-facing overlay: caption, colour bar, "research use only", no heatmap under the threshold."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clarity_hf.visualization import annotated_overlay, jet_colormap

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _coloured(pixels: np.ndarray) -> np.ndarray:
    """Mask of pixels whose channels differ (the X-ray itself is gray: R == G == B)."""
    pixels = pixels.astype(np.int16)
    return (np.abs(pixels[..., 0] - pixels[..., 1]) > 8) | (np.abs(pixels[..., 1] - pixels[..., 2]) > 8)


@pytest.fixture
def xray() -> Image.Image:
    gray = np.tile(np.linspace(40, 200, 200, dtype=np.uint8), (160, 1))
    return Image.fromarray(gray, mode="L")


def _heatmap() -> np.ndarray:
    heatmap = np.zeros((16, 20), dtype=np.float32)
    heatmap[4:10, 6:14] = 1.0
    return heatmap


def test_above_threshold_draws_heatmap_colour_bar_and_caption(xray):
    out = np.asarray(annotated_overlay(xray, _heatmap(), "Effusion", 0.83, 0.5))
    height, width = 160, 200
    assert out.shape[0] > height and out.shape[1] > width
    picture, bar, band = out[:height, :width], out[:height, width:], out[height:]
    assert _coloured(picture).sum() > 500  # the heatmap's hot spot
    assert not _coloured(picture[:, :40]).any()  # where the map is 0 the X-ray shows through unchanged
    # the colour bar holds the jet scale, red at the top (high) and blue at the bottom (low)
    column = bar[:, int(np.argmax(_coloured(bar).sum(axis=0)))]
    painted = np.flatnonzero(_coloured(column[None])[0])
    assert len(painted) > height // 2
    red, blue = jet_colormap(np.array([1.0]))[0], jet_colormap(np.array([0.0]))[0]
    assert np.abs(column[painted[0]].astype(int) - red).max() <= 16
    assert np.abs(column[painted[-1]].astype(int) - blue).max() <= 16
    # the caption band has text: white (class line) and amber ("research use only") pixels
    assert (band > 200).all(axis=-1).sum() > 50
    assert ((band[..., 0] > 200) & (band[..., 1] > 150) & (band[..., 2] < 60)).sum() > 50


def test_below_threshold_shows_no_heatmap_and_says_so(xray):
    low = annotated_overlay(xray, _heatmap(), "Effusion", 0.33, 0.5, boxes=[[10, 10, 60, 60]])
    high = annotated_overlay(xray, _heatmap(), "Effusion", 0.83, 0.5)
    out = np.asarray(low)
    # the X-ray unchanged (no heatmap colour, no box) and no colour bar
    assert np.array_equal(out[:160, :200, 0], np.asarray(xray))
    assert not _coloured(out[:160]).any()
    # a different caption: the bands differ though the image and the class are the same
    assert not np.array_equal(np.asarray(high)[160:], out[160:])
    assert (
        (out[160:, ..., 0] > 200) & (out[160:, ..., 2] < 60)
    ).sum() > 50  # "research use only" still there


def test_real_overlay_renders(tmp_path):
    """One overlay of a real NIH image, kept at /tmp/overlay_example.png for a look."""
    with Image.open(FIXTURES / "00000001_000.png") as image:
        gray = image.convert("L")
    yy, xx = np.mgrid[0:32, 0:32]
    heatmap = np.exp(-((yy - 18) ** 2 + (xx - 10) ** 2) / 30.0)
    out = annotated_overlay(gray, heatmap, "Cardiomegaly", 0.71, 0.5, boxes=[[60, 220, 240, 380]])
    out.save(tmp_path / "overlay.png")
    out.save("/tmp/overlay_example.png")
    assert out.width > gray.width and out.height > gray.height
