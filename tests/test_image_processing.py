"""ClarityImageProcessor: decoding of real and synthetic inputs, DICOM handling, errors, post-processing, save /
load, and the transformers pipelines on a tiny random model."""

import copy
import json
import os
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from hub_testing import run_without_clarity_hf
from PIL import Image
from transformers.utils import ModelOutput

from clarity_hf import NIH_PATHOLOGIES
from clarity_hf.hub.reload_check import WITHOUT_CLARITY_HF
from clarity_hf.image_processing_clarity import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    ClarityImageProcessor,
)

FIXTURES = Path(__file__).parent / "fixtures"
NIH_PNG = FIXTURES / "00000001_000.png"  # 512x512, mode L
DICOM = FIXTURES / "siim_pneumothorax_example.dcm"  # 1024x1024, MONOCHROME2, 8 bits stored, JPEG baseline
TBX_PNG = FIXTURES / "tbx11k_tb0005.png"  # 512x512, mode RGB
REPO_ROOT = Path(__file__).resolve().parents[1]

MEAN = np.asarray(IMAGENET_DEFAULT_MEAN, dtype=np.float32)
STD = np.asarray(IMAGENET_DEFAULT_STD, dtype=np.float32)
LOW = (0.0 - MEAN) / STD  # normalised value of black, per channel
HIGH = (1.0 - MEAN) / STD  # normalised value of white, per channel


def unit(processor, images, **kwargs):
    """Pixel values before normalisation (channel 0), as numpy (B, H, W)."""
    out = processor(images, do_normalize=False, return_tensors="np", **kwargs)["pixel_values"]
    return out[:, 0]


@pytest.fixture(scope="module")
def processor():
    return ClarityImageProcessor(size={"height": 224, "width": 224})


@pytest.fixture(scope="module")
def nih_array():
    return np.asarray(Image.open(NIH_PNG))


def read_dicom(path=DICOM):
    pydicom = pytest.importorskip("pydicom")
    ds = pydicom.dcmread(str(path))
    return ds, ds.pixel_array


def write_uncompressed_dicom(ds, pixels: np.ndarray, path: Path, **attributes):
    """Write `ds` with new (uncompressed, little endian) pixel data and the given attributes."""
    from pydicom.uid import ExplicitVRLittleEndian

    ds = copy.deepcopy(ds)  # Dataset.copy() is shallow: attributes set here would leak into the caller's
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    bits = 16 if pixels.dtype.itemsize == 2 else 8
    ds.BitsAllocated = bits
    ds.BitsStored = attributes.pop("BitsStored", bits)
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    ds.Rows, ds.Columns = pixels.shape
    for key in ("LossyImageCompression", "LossyImageCompressionMethod"):
        if key in ds:
            delattr(ds, key)
    for key, value in attributes.items():
        setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


# --------------------------------------------------------------------------------------------------------------------
# Real images
# --------------------------------------------------------------------------------------------------------------------


def test_real_fixtures_shape_dtype_range(processor):
    enc = processor([str(NIH_PNG), DICOM, str(TBX_PNG)], return_tensors="pt", return_original_sizes=True)
    assert set(enc.keys()) == {"pixel_values", "original_sizes"}
    pixels = enc["pixel_values"]
    assert pixels.shape == (3, 3, 224, 224) and pixels.dtype == torch.float32
    assert enc["original_sizes"].tolist() == [[512, 512], [1024, 1024], [512, 512]]
    assert torch.isfinite(pixels).all()
    for channel in range(3):
        values = pixels[:, channel]
        assert values.min() >= LOW[channel] - 1e-5 and values.max() <= HIGH[channel] + 1e-5
        # The X-rays fill most of the range: black borders / air near LOW and bone near HIGH.
        assert values.min() < LOW[channel] + 0.3 and values.max() > HIGH[channel] - 1.0
    # The three channels hold the same grayscale image, normalised per channel.
    gray = pixels * torch.tensor(STD)[:, None, None] + torch.tensor(MEAN)[:, None, None]
    assert torch.allclose(gray[:, 0], gray[:, 1], atol=1e-5) and torch.allclose(
        gray[:, 0], gray[:, 2], atol=1e-5
    )
    # Default call returns only what the model's forward takes.
    assert set(processor(str(NIH_PNG), return_tensors="pt").keys()) == {"pixel_values"}


def test_real_png_values_exact_without_resize(processor, nih_array):
    out = unit(processor, str(NIH_PNG), do_resize=False)
    assert out.shape == (1, 512, 512)
    np.testing.assert_allclose(out[0], nih_array / 255.0, atol=1e-7)
    # The normalised output is (x - mean) / std of those values.
    full = processor(str(NIH_PNG), do_resize=False, return_tensors="np")["pixel_values"][0]
    np.testing.assert_allclose(full[2], (nih_array / 255.0 - MEAN[2]) / STD[2], atol=1e-5)


def test_real_dicom_matches_its_decoded_pixels(processor):
    _, stored = read_dicom()
    out = unit(processor, DICOM, do_resize=False)[0]
    np.testing.assert_allclose(out, stored / 255.0, atol=1e-7)  # 8 bits stored -> / 255
    # Resized: the same as resizing the equivalent 8-bit PNG image.
    np.testing.assert_allclose(unit(processor, DICOM), unit(processor, Image.fromarray(stored)), atol=1e-6)


def test_pydicom_dataset_and_jpeg_inputs(processor, tmp_path):
    ds, _ = read_dicom()
    torch.testing.assert_close(
        processor(ds, return_tensors="pt")["pixel_values"],
        processor(DICOM, return_tensors="pt")["pixel_values"],
    )
    path = tmp_path / "nih.jpg"
    Image.open(NIH_PNG).save(path, quality=95)
    jpeg, png = unit(processor, str(path)), unit(processor, str(NIH_PNG))
    assert jpeg.shape == png.shape == (1, 224, 224)
    assert np.abs(jpeg - png).mean() < 0.01 and np.corrcoef(jpeg.ravel(), png.ravel())[0, 1] > 0.99


def test_real_rgb_png_is_grayscale(processor, nih_array):
    rgb = np.asarray(Image.open(TBX_PNG))
    out = unit(processor, str(TBX_PNG), do_resize=False)[0]
    np.testing.assert_allclose(out, rgb[..., 0] / 255.0, atol=1e-7)  # gray stored as RGB: exact


def test_resize_uses_float_precision(processor):
    # A smooth 16-bit ramp: an 8-bit resize would quantise to steps of 1/255; the float resize keeps the levels.
    ramp = np.tile(np.linspace(0, 65535, 1000).round().astype(np.uint16), (50, 1))
    out = unit(ClarityImageProcessor(size=100, resample="bilinear"), ramp)[0]
    assert len(np.unique(out[25])) == 100
    steps = np.diff(out[25])[1:-1]  # interior: the edge pixels see the clamped border
    assert steps.min() > 0 and np.abs(steps - steps.mean()).max() < 1e-4


# --------------------------------------------------------------------------------------------------------------------
# Input types and bit depths
# --------------------------------------------------------------------------------------------------------------------


def _equivalent_inputs(gray: np.ndarray):
    """The same 8-bit grayscale image in every supported form."""
    rgba = np.dstack([gray, gray, gray, np.full_like(gray, 7)])
    palette = Image.frombytes("P", gray.shape[::-1], gray.tobytes())
    palette.putpalette([v for i in range(256) for v in (i, i, i)])
    wide = gray.astype(np.uint16) * 257  # full-range 16 bit
    return {
        "path": str(NIH_PNG),
        "pathlib": NIH_PNG,
        "pil_L": Image.fromarray(gray),
        "pil_LA": Image.fromarray(np.dstack([gray, np.full_like(gray, 3)]), mode="LA"),
        "pil_RGB": Image.fromarray(np.dstack([gray] * 3)),
        "pil_RGBA": Image.fromarray(rgba),
        "pil_P": palette,
        "pil_I;16": Image.fromarray(wide),  # mode I;16
        "pil_I": Image.fromarray(wide.astype(np.int32)),
        "pil_F": Image.fromarray((gray / 255.0).astype(np.float32)),
        "np_HW": gray,
        "np_HW1": gray[..., None],
        "np_HW3": np.dstack([gray] * 3),
        "np_HW4": rgba,
        "np_uint16": wide,
        "np_float_unit": gray / 255.0,
        "np_float_255": gray.astype(np.float32),
        "torch_HW": torch.from_numpy(gray.copy()),
        "torch_CHW": torch.from_numpy(np.stack([gray] * 3)),
        "torch_HWC": torch.from_numpy(np.dstack([gray] * 3)),
        "torch_float_CHW": torch.from_numpy(gray / 255.0).float()[None],
    }


@pytest.mark.parametrize("kind", list(_equivalent_inputs(np.zeros((4, 4), np.uint8))))
def test_every_input_type_gives_the_same_pixels(processor, nih_array, kind):
    reference = processor(str(NIH_PNG), return_tensors="pt")["pixel_values"]
    item = _equivalent_inputs(nih_array)[kind]
    got = processor(item, return_tensors="pt")["pixel_values"]
    assert got.shape == (1, 3, 224, 224)
    torch.testing.assert_close(got, reference, atol=2e-6, rtol=0)


def test_list_and_4d_batches(processor, nih_array):
    reference = processor(str(NIH_PNG), return_tensors="pt")["pixel_values"][0]
    batch = np.stack([nih_array, 255 - nih_array])[..., None]  # (2, H, W, 1)
    out = processor(batch, return_tensors="pt")["pixel_values"]
    assert out.shape == (2, 3, 224, 224)
    torch.testing.assert_close(out[0], reference, atol=2e-6, rtol=0)
    out = processor([[nih_array], [Image.fromarray(nih_array), str(NIH_PNG)]], return_tensors="pt")
    assert out["pixel_values"].shape == (3, 3, 224, 224)
    listed = processor([nih_array, nih_array])["pixel_values"]  # return_tensors=None: list of arrays
    assert isinstance(listed, list) and len(listed) == 2 and listed[0].shape == (3, 224, 224)


def test_rgb_becomes_luma(processor):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(40, 30, 3), dtype=np.uint8)
    out = unit(processor, rgb, do_resize=False)[0]
    expected = (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]) / 255.0
    np.testing.assert_allclose(out, expected, atol=1e-6)
    # PIL's own (integer-rounded) conversion agrees to half a grey level.
    assert np.abs(out * 255.0 - np.asarray(Image.fromarray(rgb).convert("L"))).max() <= 0.5 + 1e-3


def test_16bit_png_scales_like_the_8bit_image(processor, nih_array, tmp_path):
    path = tmp_path / "nih16.png"
    Image.fromarray(nih_array.astype(np.uint16) * 257).save(path)
    assert Image.open(path).mode.startswith("I;16") or Image.open(path).mode == "I"
    np.testing.assert_allclose(unit(processor, str(path)), unit(processor, str(NIH_PNG)), atol=1e-6)


def test_12bit_data_scale_by_4095(processor, nih_array, tmp_path):
    twelve = np.round(nih_array.astype(np.float64) * 4095 / 255).astype(np.uint16)
    assert twelve.max() == 4095
    path = tmp_path / "nih12.png"
    Image.fromarray(twelve).save(path)
    expected = unit(processor, str(NIH_PNG), do_resize=False)[0]
    for item in (str(path), twelve, torch.from_numpy(twelve.astype(np.int32))):
        out = unit(processor, item, do_resize=False)[0]
        np.testing.assert_allclose(out, twelve / 4095.0, atol=1e-7)
        assert np.abs(out - expected).max() < 2e-4
    # A dark 12-bit image is not stretched: values scale by 4095, not by their own maximum.
    dark = (twelve // 2).astype(np.uint16)
    assert dark.max() == 2047
    np.testing.assert_allclose(unit(processor, dark, do_resize=False)[0], dark / 4095.0, atol=1e-7)
    dark_12 = np.clip(dark, 0, 2500).astype(np.uint16)
    dark_12[0, 0] = 2500  # 12 bits needed -> / 4095
    np.testing.assert_allclose(unit(processor, dark_12, do_resize=False)[0], dark_12 / 4095.0, atol=1e-7)
    # minmax mode stretches instead.
    out = unit(processor, dark_12, do_resize=False, intensity_scaling="minmax")[0]
    assert out.min() == 0.0 and out.max() == 1.0


def test_12bit_dicom_scales_by_bits_stored(processor, tmp_path):
    ds, stored = read_dicom()
    twelve = np.round(stored.astype(np.float64) * 4095 / 255).astype(np.uint16)
    path = write_uncompressed_dicom(ds, twelve, tmp_path / "twelve.dcm", BitsStored=12)
    out = unit(processor, path, do_resize=False)[0]
    np.testing.assert_allclose(out, twelve / 4095.0, atol=1e-7)
    assert np.abs(out - stored / 255.0).max() < 2e-4
    # 16 bits stored: / 65535.
    path16 = write_uncompressed_dicom(ds, twelve, tmp_path / "sixteen.dcm", BitsStored=16)
    np.testing.assert_allclose(unit(processor, path16, do_resize=False)[0], twelve / 65535.0, atol=1e-7)


def test_dicom_rescale_slope_intercept_and_window(processor, tmp_path):
    ds, _ = read_dicom()
    stored = np.tile(np.arange(0, 4096, 16, dtype=np.uint16), (4, 1))  # 4 x 256 ramp
    hu = 2.0 * stored - 1000.0
    path = write_uncompressed_dicom(
        ds,
        stored,
        tmp_path / "window.dcm",
        BitsStored=12,
        RescaleSlope=2,
        RescaleIntercept=-1000,
        WindowCenter=500,
        WindowWidth=2000,
        VOILUTFunction="LINEAR_EXACT",
    )
    out = unit(processor, path, do_resize=False)[0]
    np.testing.assert_allclose(out, np.clip((hu - 500) / 2000 + 0.5, 0, 1), atol=1e-6)
    assert (out == 0).sum() > 0 and (out == 1).sum() > 0  # the window clips at both ends
    # LINEAR (the default function), as DICOM PS3.3 C.11.2.1.2.1 defines it.
    path = write_uncompressed_dicom(
        ds, stored, tmp_path / "linear.dcm", BitsStored=12, WindowCenter=2048, WindowWidth=1024
    )
    expected = np.clip((stored - 2047.5) / 1023.0 + 0.5, 0, 1)
    np.testing.assert_allclose(unit(processor, path, do_resize=False)[0], expected, atol=1e-6)
    # Slope / intercept without a window: the bits-stored range maps to [0, 1] through them (unchanged image).
    path = write_uncompressed_dicom(
        ds, stored, tmp_path / "slope.dcm", BitsStored=12, RescaleSlope=2, RescaleIntercept=-1000
    )
    np.testing.assert_allclose(unit(processor, path, do_resize=False)[0], stored / 4095.0, atol=1e-7)


def test_monochrome1_dicom_has_the_same_polarity(processor, tmp_path):
    ds, stored = read_dicom()
    inverted = (255 - stored).astype(np.uint8)
    path = write_uncompressed_dicom(
        ds, inverted, tmp_path / "mono1.dcm", PhotometricInterpretation="MONOCHROME1"
    )
    original = processor(DICOM, return_tensors="np")["pixel_values"][0, 0].ravel()
    mono1 = processor(path, return_tensors="np")["pixel_values"][0, 0].ravel()
    assert np.corrcoef(original, mono1)[0, 1] > 0.99
    np.testing.assert_allclose(mono1, original, atol=1e-5)
    # Control: the stored MONOCHROME1 pixels taken as they are have the opposite polarity.
    raw = processor(inverted, return_tensors="np")["pixel_values"][0, 0].ravel()
    assert np.corrcoef(original, raw)[0, 1] < -0.99


# --------------------------------------------------------------------------------------------------------------------
# Bad inputs
# --------------------------------------------------------------------------------------------------------------------


def _bad_inputs(tmp_path: Path):
    text = tmp_path / "notes.txt"
    text.write_text("not an image\n")
    fake_png = tmp_path / "fake.png"
    fake_png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    truncated_png = tmp_path / "truncated.png"
    truncated_png.write_bytes(NIH_PNG.read_bytes()[:5000])
    truncated_dcm = tmp_path / "truncated.dcm"
    truncated_dcm.write_bytes(DICOM.read_bytes()[:700])
    garbage_dcm = tmp_path / "garbage.dcm"
    garbage_dcm.write_bytes(b"\x00" * 128 + b"DICM" + os.urandom(200))
    short_pixels = tmp_path / "short_pixels.dcm"
    ds, stored = read_dicom()
    write_uncompressed_dicom(ds, stored, short_pixels)
    data = short_pixels.read_bytes()
    short_pixels.write_bytes(data[: len(data) // 2])  # pixel data cut in half
    nan = np.full((8, 8), 0.5, dtype=np.float32)
    nan[3, 3] = np.nan
    inf = np.zeros((8, 8, 3))
    inf[1, 1, 1] = np.inf
    missing = tmp_path / "missing.png"
    return [
        # (input, what the message must name, what it must say)
        (np.zeros((0, 5), np.uint8), r"input #0 of type numpy.ndarray \(shape \(0, 5\)", "empty"),
        (torch.zeros(3, 0, 4), r"input #0 of type torch.Tensor", "empty"),
        (np.zeros((1, 1), np.uint8), r"input #0 of type numpy.ndarray \(shape \(1, 1\)", "too small"),
        (Image.new("L", (1, 1)), r"input #0 of type PIL.Image.Image \(mode L, size 1x1\)", "too small"),
        (np.zeros((1, 300), np.uint8), r"input #0", "too small"),
        (nan, r"input #0 of type numpy.ndarray", "NaN or infinite"),
        (torch.from_numpy(inf), r"input #0 of type torch.Tensor", "NaN or infinite"),
        (np.zeros(10, np.uint8), r"input #0 of type numpy.ndarray \(shape \(10,\)", "rank 1"),
        (np.zeros((2, 3, 4, 5, 6), np.uint8), r"input #0", "rank 5"),
        (np.zeros((16, 16, 7), np.uint8), r"input #0", "no channel axis"),
        (np.array(3.0), r"input #0", "rank 0"),
        (np.zeros((4, 4), dtype=object), r"input #0", "unsupported dtype"),
        (12, r"input #0 of type int", "unsupported input"),
        (str(missing), f"file '{missing}'", "no such file"),
        (missing, f"file '{missing}'", "no such file"),
        (str(tmp_path), f"file '{tmp_path}'", "is a directory"),
        (str(text), f"file '{text}'", "not an image file"),
        (str(fake_png), f"file '{fake_png}'", "not an image file|could not be decoded"),
        (str(truncated_png), f"file '{truncated_png}'", "could not be decoded"),
        (str(truncated_dcm), f"file '{truncated_dcm}'", "DICOM"),
        (str(garbage_dcm), f"file '{garbage_dcm}'", "DICOM"),
        (str(short_pixels), f"file '{short_pixels}'", "DICOM pixel data could not be decoded"),
    ]


def test_bad_inputs_raise_value_error_naming_the_input(processor, tmp_path):
    import re

    cases = _bad_inputs(tmp_path)
    assert len(cases) == 22
    for item, name, problem in cases:
        with pytest.raises(ValueError) as info:
            processor(item, return_tensors="pt")
        message = str(info.value)
        assert re.search(re.escape(name) if name.startswith("file") else name, message), message
        assert re.search(problem, message), message


def test_bad_input_in_a_list_is_named_by_position(processor, nih_array):
    with pytest.raises(ValueError, match=r"input #2 of type numpy.ndarray \(shape \(1, 1\), dtype uint8\)"):
        processor([nih_array, str(NIH_PNG), np.zeros((1, 1), np.uint8)])
    with pytest.raises(ValueError, match="no images"):
        processor([])
    with pytest.raises(ValueError, match="no images"):
        processor(None)


# --------------------------------------------------------------------------------------------------------------------
# Save / load
# --------------------------------------------------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path, nih_array):
    labels = {i: f"class_{i}" for i in range(3)}
    processor = ClarityImageProcessor(
        size={"height": 96, "width": 80},
        resample="bilinear",
        intensity_scaling="minmax",
        id2label=labels,
        heatmap_threshold=[0.3, 0.4, 0.5],
        box_min_area=4,
    )
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["image_processor_type"] == "ClarityImageProcessor"
    assert saved["size"] == {"height": 96, "width": 80} and saved["resample"] == 2
    # Labels are the model config's alone: a processor neither keeps nor saves any (an old file's are not read).
    assert "id2label" not in saved and not hasattr(processor, "id2label")
    loaded = ClarityImageProcessor.from_pretrained(tmp_path)
    assert loaded.to_dict() == processor.to_dict()
    assert (
        not hasattr(loaded, "id2label")
        and loaded.heatmap_threshold == [0.3, 0.4, 0.5]
        and loaded.box_min_area == 4
    )
    a = processor(nih_array, return_tensors="pt")["pixel_values"]
    b = loaded(nih_array, return_tensors="pt")["pixel_values"]
    assert a.shape == (1, 3, 96, 80) and torch.equal(a, b)
    # Loading kwargs override the saved values.
    assert ClarityImageProcessor.from_pretrained(tmp_path, box_min_area=9).box_min_area == 9
    # save -> load -> save writes the same file.
    loaded.save_pretrained(tmp_path / "again")
    assert (tmp_path / "again" / "preprocessor_config.json").read_text() == (
        tmp_path / "preprocessor_config.json"
    ).read_text()


def test_invalid_settings_are_rejected():
    with pytest.raises(ValueError, match="intensity_scaling"):
        ClarityImageProcessor(intensity_scaling="gamma")
    with pytest.raises(ValueError, match="size"):
        ClarityImageProcessor(size={"longest_edge": 3})
    with pytest.raises(TypeError, match="unexpected keyword"):
        ClarityImageProcessor()(np.zeros((4, 4)), do_magic=True)


@pytest.mark.parametrize(
    "size,expected",
    [
        (32, (32, 32)),
        (np.int64(32), (32, 32)),
        ((24, 40), (24, 40)),
        ([24, 40], (24, 40)),
        ({"height": 24, "width": 40}, (24, 40)),
        ({"height": 24, "width": 40, "shortest_edge": None}, (24, 40)),
        ({"shortest_edge": 28}, (28, 28)),
        (0, None),
        (-3, None),
        (2.5, None),
        (True, None),
        ("32", None),
        ((1, 2, 3), None),
        ({"height": 24}, None),
        ({"shortest_edge": 24, "longest_edge": 40}, None),
        ({"height": 0, "width": 40}, None),
    ],
)
def test_size_forms_resolve_to_height_and_width(size, expected):
    # Every form transformers' get_size_dict reads for a fixed output size, and the checks it leaves out.
    if expected is None:
        with pytest.raises(ValueError, match="size must be a positive int"):
            ClarityImageProcessor(size=size)
        return
    processor = ClarityImageProcessor(size=size)
    assert processor.size == {"height": expected[0], "width": expected[1]}
    pixels = processor(np.zeros((50, 60), dtype=np.uint8), return_tensors="np")["pixel_values"]
    assert pixels.shape == (1, 3, *expected)


# --------------------------------------------------------------------------------------------------------------------
# Post-processing (synthetic model outputs)
# --------------------------------------------------------------------------------------------------------------------


def _outputs(logits, heatmaps):
    return ModelOutput(
        logits=torch.as_tensor(logits, dtype=torch.float32), heatmaps=torch.as_tensor(heatmaps)
    )


def test_post_process_image_classification(processor):
    logits = torch.tensor([[2.0, -1.0, 0.0], [-3.0, 0.5, 1.5]])
    outputs = _outputs(logits, torch.zeros(2, 3, 4, 4))
    labels = {0: "Atelectasis", 1: "Cardiomegaly", 2: "Effusion"}
    result = processor.post_process_image_classification(outputs, id2label=labels)
    assert [entry["label"] for entry in result[0]] == ["Atelectasis", "Effusion", "Cardiomegaly"]
    assert [entry["label"] for entry in result[1]] == ["Effusion", "Cardiomegaly", "Atelectasis"]
    assert result[0][0]["score"] == pytest.approx(1 / (1 + np.exp(-2.0)), abs=1e-6)
    assert result[1][2]["score"] == pytest.approx(1 / (1 + np.exp(3.0)), abs=1e-6)
    # multi-label: scores do not sum to one
    assert sum(entry["score"] for entry in result[0]) == pytest.approx(0.8808 + 0.5 + 0.2689, abs=1e-3)
    top = processor.post_process_image_classification(dict(logits=logits), top_k=1, id2label=labels)
    assert [[entry["label"] for entry in image] for image in top] == [["Atelectasis"], ["Effusion"]]
    # Without labels: LABEL_i (the processor keeps none: an old config's id2label is not read); string keys from
    # JSON work too; labels that do not name the C outputs are an error, never silently wrong names.
    assert processor.post_process_image_classification(outputs)[0][0]["label"] == "LABEL_0"
    named = ClarityImageProcessor(id2label={"0": "a", "1": "b", "2": "c"})
    assert named.post_process_image_classification(outputs)[0][0]["label"] == "LABEL_0"
    by_json = processor.post_process_image_classification(outputs, id2label={"0": "a", "1": "b", "2": "c"})
    assert by_json[0][0]["label"] == "a"
    fourteen = dict(enumerate(NIH_PATHOLOGIES))
    with pytest.raises(ValueError, match="id2label names 14 labels but the model outputs 3 scores"):
        processor.post_process_image_classification(outputs, id2label=fourteen)


def _blob_heatmaps(grid=(8, 8)):
    """(1, 2, h, w): class 0 has a hot cell at row 2, col 5 (1.0) and a weaker one at row 6, col 1 (0.6);
    class 1 is constant."""
    maps = torch.zeros(1, 2, *grid)
    maps[0, 0, 2, 5] = 1.0
    maps[0, 0, 6, 1] = 0.6
    maps[0, 1] = 0.25
    return maps


def test_post_process_heatmaps_maps_back_to_the_original_size(processor):
    heatmaps = _blob_heatmaps()
    out = processor.post_process_heatmaps(_outputs(torch.zeros(1, 2), heatmaps), target_sizes=[(1024, 512)])
    assert len(out) == 1 and out[0].shape == (2, 1024, 512) and out[0].dtype == torch.float32
    maps = out[0]
    assert maps[0].min() == 0.0 and maps[0].max() == pytest.approx(1.0)
    assert torch.count_nonzero(maps[1]) == 0  # constant map -> zeros
    # The hot cell (row 2 of 8, col 5 of 8) lands at rows 256-383, cols 320-383 of the 1024 x 512 image.
    peak = torch.nonzero(maps[0] == maps[0].max())
    assert (
        256 <= peak[:, 0].min()
        and peak[:, 0].max() < 384
        and 320 <= peak[:, 1].min()
        and peak[:, 1].max() < 384
    )
    # target_sizes as a tensor, and None (model grid) work too.
    out = processor.post_process_heatmaps(_outputs(torch.zeros(1, 2), heatmaps), torch.tensor([[100, 60]]))
    assert out[0].shape == (2, 100, 60)
    assert processor.post_process_heatmaps(heatmaps)[0].shape == (2, 8, 8)
    with pytest.raises(ValueError, match="target sizes"):
        processor.post_process_heatmaps(heatmaps, target_sizes=[(10, 10), (10, 10)])


def test_post_process_object_detection_boxes_and_scores(processor):
    heatmaps = _blob_heatmaps()
    logits = torch.tensor([[1.0, 3.0]])  # p0 = 0.731, p1 = 0.953
    p0 = float(torch.sigmoid(logits[0, 0]))
    outputs = _outputs(logits, heatmaps)
    result = processor.post_process_object_detection(outputs, threshold=0.1, target_sizes=[(1024, 512)])
    assert len(result) == 1
    det = result[0]
    assert set(det) == {"scores", "labels", "boxes"}
    assert det["labels"].dtype == torch.int64 and det["boxes"].dtype == torch.float32
    # Class 1's map is constant: no component. Class 0: two components, scored p0 * peak.
    assert det["labels"].tolist() == [0, 0]
    assert det["scores"].tolist() == pytest.approx([p0 * 1.0, p0 * 0.6], abs=1e-4)
    # Main blob: cell (row 2, col 5) of an 8x8 grid on a 1024 (H) x 512 (W) image, bilinear, threshold 0.5:
    # x in [320, 384), y in [256, 384).
    np.testing.assert_allclose(det["boxes"][0].numpy(), [320, 256, 384, 384], atol=2)
    # Secondary blob (peak 0.6 of 1 after normalisation): centred on cell (row 6, col 1).
    x1, y1, x2, y2 = det["boxes"][1].tolist()
    assert (x1 + x2) / 2 == pytest.approx(96, abs=2) and (y1 + y2) / 2 == pytest.approx(832, abs=2)
    assert x2 - x1 < 64 and y2 - y1 < 128  # smaller than the main one: less of it is above 0.5

    # threshold applies to the box score: the 0.6-peak box (score 0.44) goes at 0.5, the main one (0.73) stays.
    det = processor.post_process_object_detection(outputs, threshold=0.5, target_sizes=[(1024, 512)])[0]
    assert det["scores"].tolist() == pytest.approx([p0], abs=1e-4)
    # class_threshold drops the class altogether.
    det = processor.post_process_object_detection(
        outputs, threshold=0.1, class_threshold=0.8, target_sizes=[(1024, 512)]
    )[0]
    assert len(det["scores"]) == 0 and det["boxes"].shape == (0, 4)
    # A higher heatmap threshold shrinks the box; a per-class list is accepted.
    det = processor.post_process_object_detection(
        outputs, threshold=0.1, target_sizes=[(1024, 512)], heatmap_threshold=[0.9, 0.5]
    )[0]
    assert len(det["scores"]) == 1
    x1, y1, x2, y2 = det["boxes"][0].tolist()
    assert 320 < x1 < x2 < 384 and 256 < y1 < y2 < 384
    # top_k, and relative boxes when no target size is given.
    det = processor.post_process_object_detection(outputs, threshold=0.1, top_k=1)[0]
    assert len(det["scores"]) == 1
    np.testing.assert_allclose(det["boxes"][0].numpy(), [5 / 8, 2 / 8, 6 / 8, 3 / 8], atol=1e-6)


def test_boxes_on_real_dicom_map_back_to_its_size():
    processor = ClarityImageProcessor(size=64)
    enc = processor(DICOM, return_tensors="pt", return_original_sizes=True)
    assert enc["pixel_values"].shape == (1, 3, 64, 64)
    heatmaps = torch.zeros(1, 14, 8, 8)
    heatmaps[0, 3, 4, 2] = 1.0  # grid cell (row 4, col 2) -> pixels y in [512, 640), x in [256, 384)
    outputs = _outputs(torch.full((1, 14), 4.0), heatmaps)
    maps = processor.post_process_heatmaps(outputs, enc["original_sizes"])
    assert maps[0].shape == (14, 1024, 1024)
    det = processor.post_process_object_detection(outputs, threshold=0.5, target_sizes=enc["original_sizes"])[
        0
    ]
    assert det["labels"].tolist() == [3]
    np.testing.assert_allclose(det["boxes"][0].numpy(), [256, 512, 384, 640], atol=2)


# --------------------------------------------------------------------------------------------------------------------
# With the model: pipelines and remote-code loading in a fresh process
# --------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from clarity_hf import ClarityConfig, ClarityForMultiLabelLocalization

    torch.manual_seed(0)
    config = ClarityConfig.from_preset("clarity-tiny")
    model = ClarityForMultiLabelLocalization(config).eval()
    folder = tmp_path_factory.mktemp("clarity_tiny")
    model.save_pretrained(folder)
    # The processor is registered for AutoImageProcessor where it is defined: save_pretrained writes auto_map.
    ClarityImageProcessor(size=config.image_size).save_pretrained(folder)
    return folder


def test_saved_folder_has_processor_code_and_auto_map(tiny_model_dir):
    saved = json.loads((tiny_model_dir / "preprocessor_config.json").read_text())
    assert saved["auto_map"] == {"AutoImageProcessor": "image_processing_clarity.ClarityImageProcessor"}
    assert saved["size"] == {"height": 64, "width": 64} and "id2label" not in saved
    assert (tiny_model_dir / "image_processing_clarity.py").is_file()


REMOTE_SCRIPT = WITHOUT_CLARITY_HF + textwrap.dedent(
    """
    import json
    import numpy as np, torch
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModel, pipeline

    folder, image_path, out_path = sys.argv[1:4]
    processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    enc = processor(image_path, return_tensors="pt")
    with torch.no_grad():
        out = model(**enc)
    image = Image.open(image_path)
    classifier = pipeline("image-classification", model=folder, trust_remote_code=True)
    detector = pipeline("object-detection", model=folder, trust_remote_code=True)
    result = {
        "processor_class": type(processor).__module__ + "." + type(processor).__name__,
        "pixel_values": enc["pixel_values"].numpy().tolist(),
        "logits": out.logits[0].tolist(),
        "classification": classifier(image_path, top_k=14),
        "classification_default": classifier(image_path),
        "detection": detector(image_path, threshold=0.0),
        "detection_half": detector(image_path, threshold=0.5),
        "direct_detection": {
            k: v.tolist()
            for k, v in processor.post_process_object_detection(
                out, threshold=0.0, target_sizes=[(image.height, image.width)]
            )[0].items()
        },
    }
    json.dump(result, open(out_path, "w"))
    """
)


@pytest.fixture(scope="module")
def remote_results(tiny_model_dir, tmp_path_factory, nih_array):
    work = tmp_path_factory.mktemp("remote")
    image_path = work / "nih_crop.png"
    Image.fromarray(nih_array[40:440, 10:310]).save(image_path)  # 400 (H) x 300 (W): not the model's 64 x 64
    script = work / "run.py"
    script.write_text(REMOTE_SCRIPT)
    out_path = work / "result.json"
    run_without_clarity_hf(script, tiny_model_dir, image_path, out_path)
    return json.loads(out_path.read_text()), image_path


def test_remote_code_processor_is_bit_identical(remote_results, tiny_model_dir):
    result, image_path = remote_results
    assert result["processor_class"].startswith("transformers_modules.")
    local = ClarityImageProcessor.from_pretrained(tiny_model_dir)(str(image_path), return_tensors="pt")
    remote = torch.tensor(result["pixel_values"], dtype=torch.float32)
    assert remote.shape == (1, 3, 64, 64) and torch.equal(remote, local["pixel_values"])


def test_image_classification_pipeline(remote_results):
    from clarity_hf import NIH_PATHOLOGIES

    result, _ = remote_results
    entries = result["classification"]
    assert sorted(entry["label"] for entry in entries) == sorted(NIH_PATHOLOGIES)
    expected = {NIH_PATHOLOGIES[i]: 1 / (1 + np.exp(-logit)) for i, logit in enumerate(result["logits"])}
    for entry in entries:
        assert entry["score"] == pytest.approx(expected[entry["label"]], abs=1e-5)  # sigmoid, not softmax
    assert sum(entry["score"] for entry in entries) > 1.5  # independent (multi-label) scores
    assert len(result["classification_default"]) == 5  # the pipeline's own default top_k


def test_object_detection_pipeline_boxes_in_original_pixels(remote_results):
    from clarity_hf import NIH_PATHOLOGIES

    result, _ = remote_results
    detections = result["detection"]
    assert len(detections) >= 14  # threshold 0: every class gives at least its main component
    height, width = 400, 300
    for det in detections:
        assert det["label"] in NIH_PATHOLOGIES
        box = det["box"]
        assert 0 <= box["xmin"] < box["xmax"] <= width and 0 <= box["ymin"] < box["ymax"] <= height
    assert max(det["box"]["ymax"] for det in detections) > 64  # not the model's 64 x 64 frame
    direct = result["direct_detection"]
    assert [det["score"] for det in detections] == pytest.approx(direct["scores"], abs=1e-6)
    assert [NIH_PATHOLOGIES.index(det["label"]) for det in detections] == direct["labels"]
    assert [[det["box"][k] for k in ("xmin", "ymin", "xmax", "ymax")] for det in detections] == [
        [int(v) for v in box] for box in direct["boxes"]
    ]
    # threshold is passed through: only boxes scoring >= 0.5 remain.
    assert all(det["score"] >= 0.5 for det in result["detection_half"])
    assert len(result["detection_half"]) == sum(score >= 0.5 for score in direct["scores"])
