# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Memory at the pixel limit, by the dtype path rather than by timing: the processor never holds a full-size
float64 copy of an image (numpy's allocations, traced), and the float32 grey image it reads is exactly the float64
one rounded, whatever the block size."""

import tracemalloc

import numpy as np
import pytest

from clarity_hf import ClarityImageProcessor, xray_io
from clarity_hf.xray_io import load_unit_gray


def _images():
    rng = np.random.default_rng(0)
    return {
        "16-bit grey": (rng.random((301, 257)) * 4095).astype(np.uint16),
        "RGB": (rng.random((301, 257, 3)) * 255).astype(np.uint8),
        "RGBA": (rng.random((301, 257, 4)) * 255).astype(np.uint8),
        "grey stored as RGB": np.repeat((rng.random((301, 257, 1)) * 255).astype(np.uint8), 3, axis=-1),
        "float": rng.random((301, 257)) * 7.0 - 1.0,
    }


@pytest.mark.parametrize("kind", list(_images()))
@pytest.mark.parametrize("do_rescale", [True, False])
def test_float32_grey_is_the_float64_grey_rounded_for_any_block_size(kind, do_rescale, monkeypatch):
    image = _images()[kind]
    whole = load_unit_gray(image, do_rescale=do_rescale)  # one block: the image has fewer than 2^20 pixels
    assert whole.dtype == np.float64
    monkeypatch.setattr(xray_io, "_BLOCK_PIXELS", 1000)  # blocks of 3 rows, the last one short
    blocked64 = load_unit_gray(image, do_rescale=do_rescale)
    blocked32 = load_unit_gray(image, do_rescale=do_rescale, dtype=np.float32)
    np.testing.assert_array_equal(blocked64, whole)
    assert blocked32.dtype == np.float32
    np.testing.assert_array_equal(blocked32, whole.astype(np.float32))
    if kind == "RGB":  # the luma weights, as before the channel-by-channel sum
        expected = image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        np.testing.assert_allclose(
            whole, expected / 255.0 if do_rescale else expected, rtol=1e-14, atol=1e-14
        )


@pytest.mark.parametrize("kind", ["16-bit grey", "RGB"])
def test_processor_holds_no_full_size_float64_image(kind):
    """numpy's allocations while the processor reads a 24 M pixel image stay below one float64 copy of it (8 bytes
    a pixel): the grey image is float32 (4 bytes a pixel) and float64 lives only in blocks of rows (before: 8 bytes
    a pixel for the grey image, 24 more for an RGB image's float64 copy, and the scaling's temporaries)."""
    height, width = 4000, 6000
    rng = np.random.default_rng(1)
    if kind == "RGB":
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    else:
        image = rng.integers(0, 4096, (height, width), dtype=np.uint16)
    processor = ClarityImageProcessor(size=64)
    tracemalloc.start()
    try:
        pixel_values = processor(image, return_tensors="np")["pixel_values"]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert pixel_values.shape == (1, 3, 64, 64)
    assert peak < 8 * height * width, f"peak {peak / 2**20:.0f} MiB for {height * width / 1e6:.0f} M pixels"
