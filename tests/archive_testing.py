# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Test helpers for archive runs: a tiny model folder, DICOM files written with pydicom's encoders, and a folder
tree of good and bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def make_model_dir(folder: Path) -> Path:
    """clarity-tiny with random weights (seed 0) and its 64-pixel processor, saved to `folder`."""
    from clarity_hf import ClarityConfig, ClarityForMultiLabelLocalization
    from clarity_hf.evaluation.run import build_processor

    torch.manual_seed(0)
    model = ClarityForMultiLabelLocalization(ClarityConfig.from_preset("clarity-tiny")).eval()
    model.save_pretrained(folder)
    build_processor(64).save_pretrained(folder)
    return folder


def write_dicom(path: Path, array: np.ndarray, syntax=None, bits_stored: int = 12) -> Path:
    """A MONOCHROME2 secondary-capture DICOM of `array`, compressed with `syntax` (pydicom's encoders) if given."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.PatientName = "ANON", "ANON"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "120000", "1", "1"
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.Modality = "DX"
    ds.set_pixel_data(array, "MONOCHROME2", bits_stored)
    if syntax is not None:
        ds.compress(syntax)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def gradient(height: int, width: int, maximum: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 1, width)[None, :] * np.linspace(0.3, 1, height)[:, None]
    noisy = np.clip(base + 0.05 * rng.standard_normal((height, width)), 0, 1)
    return np.round(noisy * maximum).astype(np.uint16 if maximum > 255 else np.uint8)


def make_tree(root: Path) -> tuple[dict[str, tuple[int, int]], dict[str, str]]:
    """A folder tree of good and bad files. Returns ({path: (height, width)} of the good images, {path: a piece of
    the reason} of the bad ones)."""
    from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

    good, bad = {}, {}
    (root / "a" / "nested").mkdir(parents=True)
    (root / "b").mkdir()
    Image.fromarray(gradient(80, 100, 255)).save(root / "a" / "good.png")
    good["a/good.png"] = (80, 100)
    Image.fromarray(gradient(90, 70, 255, seed=1)).convert("RGB").save(root / "b" / "photo.jpg", quality=95)
    good["b/photo.jpg"] = (90, 70)
    write_dicom(root / "a" / "nested" / "IM0001", gradient(66, 77, 4095, seed=2))  # DICOM without extension
    good["a/nested/IM0001"] = (66, 77)
    write_dicom(root / "b" / "rle.dcm", gradient(60, 50, 4095, seed=3), RLELossless)
    good["b/rle.dcm"] = (60, 50)
    write_dicom(root / "b" / "jpegls.dcm", gradient(64, 48, 4095, seed=4), JPEGLSLossless)
    good["b/jpegls.dcm"] = (64, 48)
    write_dicom(root / "b" / "j2k.dcm", gradient(40, 72, 4095, seed=5), JPEG2000Lossless)
    good["b/j2k.dcm"] = (40, 72)
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    bad["corrupt.png"] = "is not an image file"
    (root / "empty.dcm").write_bytes(b"")
    bad["empty.dcm"] = "is empty (0 bytes)"
    (root / "notes.txt").write_text("not an image\n")
    bad["notes.txt"] = "is not an image file"
    truncated = (root / "a" / "good.png").read_bytes()
    (root / "a" / "truncated.png").write_bytes(truncated[: len(truncated) // 2])
    bad["a/truncated.png"] = "truncated"
    (root / ".hidden.png").write_bytes(b"ignored")  # hidden files are not part of the archive
    return (
        {str(root / k): v for k, v in good.items()},
        {str(root / k): v for k, v in bad.items()},
    )
