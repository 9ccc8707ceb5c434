"""One decoding for every path (processor, training transform, cache, loaders) and the decode-error policy: the
pixel limit, ImageDecodeError for every bad file, and no silently wrong pixels."""

import struct
import zlib

import numpy as np
import pytest
import torch
from helpers import clarity_dataset_of_files
from PIL import Image, ImageFile

from clarity_hf.data.cache import build_cache, load_cache
from clarity_hf.data.features import get_build_report
from clarity_hf.data.generic import load_image_folder
from clarity_hf.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_processor, eval_transform
from clarity_hf.image_processing_clarity import ClarityImageProcessor, ClarityImageProcessorKwargs
from clarity_hf.training.arguments import ClarityTrainingConfig
from clarity_hf.training.data import ClarityTrainingDataset, train_collator
from clarity_hf.xray_io import (
    DEFAULT_MAX_IMAGE_PIXELS,
    ImageDecodeError,
    image_size,
    load_unit_gray,
    resolve_max_image_pixels,
)

pydicom = pytest.importorskip("pydicom")

SIDE = 32
MEAN = np.asarray(IMAGENET_MEAN, dtype=np.float32)[:, None, None]
STD = np.asarray(IMAGENET_STD, dtype=np.float32)[:, None, None]


# --------------------------------------------------------------------------------------------------------------------
# Writers of tiny test files
# --------------------------------------------------------------------------------------------------------------------


def _ramp(height=41, width=37) -> np.ndarray:
    """A smooth image with structure in both directions, values in [0, 1]."""
    y, x = np.mgrid[0:height, 0:width]
    return (0.5 + 0.35 * np.sin(x / 5.0) * np.cos(y / 7.0) + 0.1 * (x / width)).clip(0, 1)


def write_dicom(
    path, pixels: np.ndarray, photometric="MONOCHROME2", bits_stored=12, transfer_syntax=None, **attrs
):
    """A minimal uncompressed (or, with `transfer_syntax`, encapsulated) single-frame DICOM file."""
    from pydicom.dataset import Dataset as DicomDataset
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = transfer_syntax or ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # CR image storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = DicomDataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits_stored, bits_stored - 1, 0
    for key, value in attrs.items():
        if isinstance(key, str):
            setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint16).tobytes()
    if transfer_syntax is not None:
        from pydicom.encaps import encapsulate

        ds.PixelData = encapsulate([b"\x00" * 64])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    ds.save_as(str(path), enforce_file_format=True)
    return path


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def write_png_header(path, width: int, height: int, rows: int = 0) -> bytes:
    """An 8-bit gray PNG declaring width x height; its IDAT holds `rows` zero rows (all of them: a real image)."""
    compressor = zlib.compressobj(1)
    row = b"\x00" * (width + 1)  # filter byte + pixels
    idat = b"".join(compressor.compress(row) for _ in range(rows)) + compressor.flush()
    data = (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )
    path.write_bytes(data)
    return data


def parity_files(tmp_path) -> dict[str, str]:
    """8-bit PNG, 16-bit PNG, RGB JPEG, RGBA PNG, DICOM MONOCHROME1 and MONOCHROME2 with a VOI window."""
    ramp = _ramp()
    files = {}
    files["png8"] = tmp_path / "gray8.png"
    Image.fromarray((ramp * 255).round().astype(np.uint8)).save(files["png8"])
    files["png16"] = tmp_path / "gray16.png"
    Image.fromarray((ramp * 4095).round().astype(np.uint16)).save(files["png16"])  # 12 bits in 16
    rgb = np.stack([ramp, ramp[::-1], ramp[:, ::-1]], axis=-1)
    files["jpeg_rgb"] = tmp_path / "rgb.jpg"
    Image.fromarray((rgb * 255).round().astype(np.uint8), "RGB").save(files["jpeg_rgb"], quality=95)
    rgba = np.concatenate([rgb, np.linspace(0, 1, ramp.size).reshape(ramp.shape)[..., None]], axis=-1)
    files["png_rgba"] = tmp_path / "rgba.png"
    Image.fromarray((rgba * 255).round().astype(np.uint8), "RGBA").save(files["png_rgba"])
    stored = (ramp * 4095).round().astype(np.uint16)
    files["dicom_mono1"] = write_dicom(tmp_path / "mono1.dcm", stored, "MONOCHROME1")
    files["dicom_mono2_window"] = write_dicom(
        tmp_path / "mono2.dcm", stored, "MONOCHROME2", WindowCenter="1800", WindowWidth="2400"
    )
    return {key: str(path) for key, path in files.items()}


def unnormalise(pixel_values) -> np.ndarray:
    """(B, 3, S, S) normalised -> the gray image in [0, 1] before normalisation, (B, S, S)."""
    values = np.asarray(pixel_values, dtype=np.float32)
    return (values * STD + MEAN)[:, 0]


# --------------------------------------------------------------------------------------------------------------------
# The same pixels everywhere
# --------------------------------------------------------------------------------------------------------------------


def test_training_loop_feeds_the_processors_pixels(tmp_path):
    files = parity_files(tmp_path)
    processor = build_processor(SIDE)
    expected = processor(list(files.values()), return_tensors="pt")["pixel_values"]
    assert torch.isfinite(expected).all()

    # The training loop's own dataset and collator, without augmentation.
    dataset = ClarityTrainingDataset(
        clarity_dataset_of_files(list(files.values())), SIDE, ClarityTrainingConfig()
    )
    batch = train_collator()([dataset[i] for i in range(len(dataset))])
    assert batch["problems"] == [] and batch["pixel_values"].shape == expected.shape
    fed = unnormalise(batch["pixel_values"])
    reference = unnormalise(expected)
    for index, kind in enumerate(files):
        difference = np.abs(fed[index] - reference[index]).max()
        assert difference <= 1e-6, f"{kind}: training pixels differ from the processor's by {difference}"

    # Through the 8-bit cache: within the stated quantisation (round(255 x)), at most 1/255 of the range.
    cached = build_cache(
        clarity_dataset_of_files(list(files.values())), tmp_path / "cache", SIDE, progress=False
    )
    cached_set = ClarityTrainingDataset(cached["train"], SIDE, ClarityTrainingConfig())
    from_cache = unnormalise(
        train_collator()([cached_set[i] for i in range(len(cached_set))])["pixel_values"]
    )
    for index, kind in enumerate(files):
        difference = np.abs(from_cache[index] - reference[index]).max()
        assert difference <= 0.5 / 255 + 1e-5, f"{kind}: cached pixels differ by {difference * 255:.2f}/255"

    # The decoding is the processor's, not a per-image min-max: 12-bit data keep their level, MONOCHROME1 is
    # inverted and the VOI window clips.
    gray16 = reference[list(files).index("png16")]
    assert 0.1 < gray16.min() and gray16.max() < 0.99
    mono1, mono2 = (
        reference[list(files).index("dicom_mono1")],
        reference[list(files).index("dicom_mono2_window")],
    )
    assert np.corrcoef(mono1.ravel(), mono2.ravel())[0, 1] < -0.9
    assert (mono2 == 1.0).any()  # values above center + width / 2 are clipped by the window


def test_one_pixel_recipe_saved_with_the_model_and_used_as_fallback(tmp_path):
    from clarity_hf.configuration_clarity import ClarityConfig
    from clarity_hf.evaluation.run import load_model_for_evaluation
    from clarity_hf.modeling_clarity import ClarityForMultiLabelLocalization

    config = ClarityConfig.from_preset("clarity-tiny")
    ClarityForMultiLabelLocalization(config).save_pretrained(tmp_path / "model")
    # A model saved alone gets the recipe's processor; a folder without one falls back to the same recipe.
    saved = load_model_for_evaluation(tmp_path / "model")[1].to_dict()
    assert saved.pop("auto_map") == {"AutoImageProcessor": "image_processing_clarity.ClarityImageProcessor"}
    assert saved == build_processor(config).to_dict()
    (tmp_path / "model" / "preprocessor_config.json").unlink()
    _, processor, _ = load_model_for_evaluation(tmp_path / "model")  # no preprocessor_config.json
    assert processor.image_mean == pytest.approx(IMAGENET_MEAN) and processor.image_std == pytest.approx(
        IMAGENET_STD
    )
    assert processor.size == {"height": config.image_size, "width": config.image_size}
    assert processor.resample == int(Image.Resampling.BILINEAR)
    assert processor.to_dict() == build_processor(config).to_dict()
    transform = eval_transform(config.image_size)
    assert transform.from_processor(processor).resample == processor.resample


# --------------------------------------------------------------------------------------------------------------------
# Processor arguments, the transformers way
# --------------------------------------------------------------------------------------------------------------------


def test_processor_declares_its_arguments_like_transformers():
    import inspect

    processor = ClarityImageProcessor()
    assert processor.valid_kwargs is ClarityImageProcessorKwargs
    # transformers' ImageProcessingTestMixin.test_image_processor_preprocess_arguments
    arguments = inspect.getfullargspec(processor.preprocess).args
    arguments.remove("self")
    assert sorted(arguments) == sorted(processor._valid_processor_keys)
    init_arguments = set(inspect.signature(ClarityImageProcessor.__init__).parameters) - {"self", "kwargs"}
    assert init_arguments <= set(ClarityImageProcessorKwargs.__annotations__)


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"image_std": [0.0, 0.0, 0.0]}, "image_std"),
        ({"image_std": [0.2, -0.1, 0.2]}, "image_std"),
        ({"image_std": [0.2, float("nan"), 0.2]}, "image_std"),
        ({"image_mean": [0.5, 0.5]}, "image_mean"),
        ({"size": 0}, "size"),
        ({"size": {"height": -4, "width": 32}}, "size"),
        ({"resample": 99}, "resample"),
        ({"resample": "sinc"}, "resample"),
        ({"do_resize": "yes"}, "do_resize"),
        ({"do_normalize": 1}, "do_normalize"),
        ({"intensity_scaling": "log"}, "intensity_scaling"),
        ({"max_image_pixels": 0}, "max_image_pixels"),
        ({"heatmap_threshold": 1.5}, "heatmap_threshold"),
    ],
)
def test_bad_processor_argument_values_are_refused(arguments, named):
    with pytest.raises(ValueError, match=named):
        ClarityImageProcessor(**arguments)
    if named not in ("heatmap_threshold",):  # the preprocess overrides are checked the same way
        with pytest.raises(ValueError, match=named):
            ClarityImageProcessor()(np.zeros((8, 8), dtype=np.uint8), **arguments)


# --------------------------------------------------------------------------------------------------------------------
# Pixel limit: refused from the header, before decoding
# --------------------------------------------------------------------------------------------------------------------


def test_png_bomb_is_an_image_decode_error_everywhere(tmp_path):
    bomb = tmp_path / "bomb.png"
    data = write_png_header(bomb, 60000, 60000)
    assert len(data) < 1000
    with pytest.raises(ImageDecodeError, match="bomb.png"):
        ClarityImageProcessor()(str(bomb))
    assert eval_transform(16).transform_one({"bytes": None, "path": str(bomb)}, name="bomb")["valid"] is False
    # The cache skips and counts it; the image-folder loader skips and reports it.
    good = tmp_path / "good.png"
    Image.fromarray((_ramp() * 255).astype(np.uint8)).save(good)
    cached = build_cache(
        clarity_dataset_of_files([str(good), str(bomb)]),
        tmp_path / "cache",
        16,
        skip_missing=True,
        progress=False,
    )
    assert len(cached["train"]) == 1 and get_build_report(cached).counts == {"undecodable_image": 1}
    folder = tmp_path / "folder" / "A"
    folder.mkdir(parents=True)
    (folder / "good.png").write_bytes(good.read_bytes())
    (folder / "bomb.png").write_bytes(data)
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    loaded = load_image_folder(tmp_path / "folder", skip_missing=True)
    assert loaded["image_id"] == ["A/good.png"]
    with pytest.raises(ValueError, match="bomb.png"):
        load_image_folder(tmp_path / "folder")


def test_pixel_limit_refuses_before_loading(tmp_path, monkeypatch):
    large = tmp_path / "large.png"
    write_png_header(large, 10000, 10000, rows=10000)  # a real, fully compressed 10000 x 10000 image

    def no_decoding(self, *args, **kwargs):
        raise AssertionError("the pixel data were decoded")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    monkeypatch.setenv("CLARITY_MAX_IMAGE_PIXELS", str(1000 * 1000))
    with pytest.raises(
        ImageDecodeError, match=r"large.png.*10000x10000 = 100000000 pixels.*limit of 1000000"
    ):
        load_unit_gray(str(large))
    with pytest.raises(ImageDecodeError, match="limit"):
        image_size(large)
    monkeypatch.delenv("CLARITY_MAX_IMAGE_PIXELS")
    # The processor's argument: the default (8192 x 8192) refuses it too; a lower one refuses a smaller image.
    assert resolve_max_image_pixels() == DEFAULT_MAX_IMAGE_PIXELS == 8192 * 8192
    with pytest.raises(ImageDecodeError, match="limit of 67108864"):
        ClarityImageProcessor()(str(large))
    monkeypatch.undo()
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(small)
    with pytest.raises(ImageDecodeError, match="limit of 1000"):
        ClarityImageProcessor(max_image_pixels=1000)(str(small))
    assert ClarityImageProcessor(max_image_pixels=4096)(str(small))["pixel_values"][0].shape == (3, 224, 224)
    monkeypatch.setenv("CLARITY_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ValueError, match="CLARITY_MAX_IMAGE_PIXELS"):
        ClarityImageProcessor()(str(small))


@pytest.mark.parametrize("compressed", [False, True], ids=["uncompressed", "rle"])
def test_dicom_header_over_the_limit_is_refused_before_pixel_data(tmp_path, monkeypatch, compressed):
    from pydicom.uid import RLELossless

    path = write_dicom(
        tmp_path / "huge.dcm",
        np.zeros((4, 4), np.uint16),
        transfer_syntax=RLELossless if compressed else None,
    )
    ds = pydicom.dcmread(str(path))
    ds.Rows, ds.Columns = 16000, 16000
    ds.save_as(str(path))

    def no_decoding(self):
        raise AssertionError("pixel_array was decoded")

    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(no_decoding))
    with pytest.raises(ImageDecodeError, match=r"huge.dcm.*16000x16000 = 256000000 pixels"):
        ClarityImageProcessor()(str(path))
    with pytest.raises(ImageDecodeError, match="16000x16000"):
        image_size(path)


# --------------------------------------------------------------------------------------------------------------------
# No silently wrong pixels; every DICOM problem names the file
# --------------------------------------------------------------------------------------------------------------------


def test_huge_finite_values_give_finite_pixels():
    processor = ClarityImageProcessor(size=8, do_normalize=False)
    for array in (
        np.array([[-1e308, 1e308], [0.0, 1e308]]).repeat(4, 0).repeat(4, 1),
        np.array([[0.0, 1e308], [5e307, 1e308]]).repeat(4, 0).repeat(4, 1),
    ):
        out = processor(array, do_resize=False, return_tensors="np")["pixel_values"][0, 0]
        assert np.isfinite(out).all() and out.min() == 0.0 and out.max() == 1.0
    with pytest.raises(ImageDecodeError, match="float32"):
        processor(np.full((4, 4), 1e308), do_rescale=False)


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({"RescaleSlope": "0", "RescaleIntercept": "0"}, "Rescale Slope is 0"),
        ({"WindowCenter": "2000", "WindowWidth": "0"}, "Window Width 0 is invalid"),
        ({"WindowCenter": "2000", "WindowWidth": "0.5"}, "Window Width 0.5 is invalid"),
        ({"WindowCenter": "2000", "WindowWidth": "0", "VOILUTFunction": "SIGMOID"}, "must be > 0"),
    ],
)
def test_dicom_attributes_that_would_give_wrong_pixels_are_errors(tmp_path, attributes, message):
    path = write_dicom(tmp_path / "bad.dcm", (_ramp() * 4095).astype(np.uint16), **attributes)
    with pytest.raises(ImageDecodeError, match=rf"bad.dcm.*{message}"):
        ClarityImageProcessor()(str(path))


def test_dicom_window_width_one_is_the_standard_threshold(tmp_path):
    stored = (_ramp() * 4095).astype(np.uint16)
    path = write_dicom(tmp_path / "w1.dcm", stored, WindowCenter="2000", WindowWidth="1")
    out = load_unit_gray(str(path))
    np.testing.assert_array_equal(out, (stored > 1999.5).astype(np.float64))


def test_malformed_dicom_window_center_and_voi_lut_name_the_file(tmp_path):
    from pydicom.dataelem import RawDataElement
    from pydicom.dataset import Dataset as DicomDataset
    from pydicom.tag import Tag

    stored = (_ramp() * 4095).astype(np.uint16)
    path = write_dicom(tmp_path / "center.dcm", stored, WindowWidth="400")
    ds = pydicom.dcmread(str(path))
    ds[0x00281050] = RawDataElement(Tag(0x00281050), "DS", 4, b"abc ", 0, False, True)
    ds.save_as(str(path))
    with pytest.raises(ImageDecodeError, match=r"center.dcm.*WindowCenter is malformed"):
        ClarityImageProcessor()(str(path))

    path = write_dicom(tmp_path / "lut.dcm", stored)
    ds = pydicom.dcmread(str(path))
    item = DicomDataset()
    item.LUTDescriptor = [64, 0, 40]  # 40 bits per entry: pydicom raises NotImplementedError
    item.LUTData = np.arange(64, dtype=np.uint16).tobytes()
    ds.VOILUTSequence = [item]
    ds.save_as(str(path))
    with pytest.raises(ImageDecodeError, match=r"lut.dcm.*VOI LUT.*40"):
        ClarityImageProcessor()(str(path))


def test_nan_and_inf_inputs_and_truncated_files_are_clear_errors(tmp_path):
    processor = ClarityImageProcessor()
    with pytest.raises(ImageDecodeError, match="NaN or infinite"):
        processor(np.array([[0.0, np.nan], [1.0, 0.5]]))
    with pytest.raises(ImageDecodeError, match="NaN or infinite"):
        processor(Image.fromarray(np.array([[0.0, np.inf], [1.0, 0.5]], dtype=np.float32)))
    full = tmp_path / "full.png"
    Image.fromarray((np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)).save(full)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(full.read_bytes()[:300])
    with pytest.raises(ImageDecodeError, match="truncated.png"):
        processor(str(truncated))
    with pytest.raises(ImageDecodeError, match="missing.png': no such file"):
        processor(str(tmp_path / "missing.png"))


def test_nan_heatmaps_give_no_nan_maps_or_boxes():
    processor = ClarityImageProcessor()
    heatmaps = torch.rand(2, 3, 8, 8)
    heatmaps[0, 1] = float("nan")
    heatmaps[1, 2, 3, 3] = float("nan")
    outputs = {"logits": torch.full((2, 3), 5.0), "heatmaps": heatmaps}
    maps = processor.post_process_heatmaps(outputs, target_sizes=[(16, 16), (16, 16)])
    assert all(torch.isfinite(m).all() for m in maps)
    assert torch.count_nonzero(maps[0][1]) == 0 and maps[0][0].max() == 1.0
    detections = processor.post_process_object_detection(outputs, threshold=0.1, target_sizes=[(16, 16)] * 2)
    for detection in detections:
        assert torch.isfinite(detection["boxes"]).all() and torch.isfinite(detection["scores"]).all()
    assert 1 not in detections[0]["labels"].tolist() and 2 not in detections[1]["labels"].tolist()


def test_cache_is_loadable_and_states_its_quantisation(tmp_path):
    files = parity_files(tmp_path)
    build_cache(clarity_dataset_of_files([files["png16"]]), tmp_path / "cache", 16, progress=False)
    import json

    info = json.loads((tmp_path / "cache" / "clarity_cache.json").read_text())
    assert info["resample"] == "bilinear" and "round(255 * x)" in info["pixels"]
    assert len(load_cache(tmp_path / "cache")["train"]) == 1


def test_large_dicom_pixel_data_are_read_after_the_header_check(tmp_path):
    # 2 MiB of pixel data: above the deferred-reading size, so pixel_array reads them from the file afterwards.
    stored = (np.random.default_rng(0).random((1024, 1024)) * 4095).astype(np.uint16)
    path = write_dicom(tmp_path / "big.dcm", stored)
    np.testing.assert_array_equal(load_unit_gray(str(path)), stored / 4095.0)
    assert image_size(path) == (1024, 1024)


def test_predict_cli_reports_a_bomb_without_a_traceback(tmp_path, capsys):
    from clarity_hf import ClarityConfig, ClarityForMultiLabelLocalization
    from clarity_hf.commands.cli import predict_main

    folder = tmp_path / "model"
    ClarityForMultiLabelLocalization(ClarityConfig.from_preset("clarity-tiny")).save_pretrained(folder)
    build_processor(64).save_pretrained(folder)
    bomb = tmp_path / "bomb.png"
    write_png_header(bomb, 60000, 60000)
    assert predict_main([str(bomb), "--model", str(folder), "--output", str(tmp_path / "o.png")]) == 2
    error = capsys.readouterr().err
    assert "bomb.png" in error and "decompression bomb" in error and "Traceback" not in error


def test_dicom_voi_lut_sequence_maps_stored_values_through_the_table(tmp_path):
    from pydicom.dataset import Dataset as DicomDataset

    stored = (_ramp() * 4095).astype(np.uint16)
    table = np.round(np.sqrt(np.arange(4096) / 4095.0) * 65535).astype(
        np.uint16
    )  # a non-linear 16-bit VOI LUT
    path = write_dicom(tmp_path / "voi.dcm", stored)
    ds = pydicom.dcmread(str(path))
    item = DicomDataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.LUTData = table.tobytes()
    ds.VOILUTSequence = [item]
    ds.save_as(str(path))
    np.testing.assert_allclose(load_unit_gray(str(path)), table[stored] / 65535.0, atol=1e-12)
