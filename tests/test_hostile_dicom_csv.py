# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Hostile DICOM, DICOMDIR, CSV and COCO inputs, each built here: every one is an error naming the file (and the
line, for a CSV) or a refused reference, never pixels read the wrong way, a bare traceback, or a file read from
outside the folder the input belongs to."""

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from clarity_hf.data.generic import load_coco_dataset, load_csv_dataset
from clarity_hf.inference.discovery import find_images
from clarity_hf.xray_io import ImageDecodeError, load_unit_gray


def ramp(height: int = 24, width: int = 20, maximum: int = 4095) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.round((x + y) / (height + width - 2) * maximum).astype(np.uint16)


def write_dicom(path: Path, pixels: np.ndarray, samples: int = 1, photometric: str = "MONOCHROME2", **attrs):
    """A minimal uncompressed secondary-capture DICOM; `attrs` are set as given (strings for DS / IS values)."""
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.PatientName, ds.Modality = "ANON", "ANON", "DX"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "120000", "1", "1"
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.SamplesPerPixel = samples
    if samples > 1:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    bits = 8 if pixels.dtype == np.uint8 else 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(path), enforce_file_format=True)
    return path


def decode_error(path: Path, *pieces: str) -> str:
    with pytest.raises(ImageDecodeError) as info:
        load_unit_gray(str(path))
    message = str(info.value)
    assert path.name in message
    for piece in pieces:
        assert piece in message, message
    return message


# --------------------------------------------------------------------------------------------------------------------
# DICOM attributes
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("center", "width"),
    [("", ""), ("", "400"), ("2000", "")],
    ids=["both-empty", "empty-center", "empty-width"],
)
def test_empty_window_center_or_width_names_the_file(tmp_path, center, width):
    path = write_dicom(tmp_path / "window.dcm", ramp(), WindowCenter=center, WindowWidth=width)
    decode_error(path, "Window Center / Width is empty")


@pytest.mark.parametrize(
    "attrs",
    [{"WindowCenter": "2000"}, {"WindowWidth": "500"}, {"WindowCenter": ""}],
    ids=["center-without-width", "width-without-center", "empty-center-without-width"],
)
def test_half_a_window_is_an_error_not_an_unwindowed_image(tmp_path, attrs):
    """Window Center and Width come as a pair (DICOM PS3.3 C.11.2): one without the other is not read as no window."""
    path = write_dicom(tmp_path / "half_window.dcm", ramp(), **attrs)
    decode_error(path, "Window Center / Width")


def test_window_centers_and_widths_of_different_counts_are_an_error(tmp_path):
    path = write_dicom(tmp_path / "windows.dcm", ramp(), WindowCenter=["1000", "3000"], WindowWidth="500")
    decode_error(path, "2 Window Center", "1 Window Width")


def test_rescale_intercept_1e308_is_an_error_not_a_black_image(tmp_path):
    path = write_dicom(tmp_path / "intercept.dcm", ramp(), RescaleIntercept="1e308", RescaleSlope="1")
    decode_error(path, "one value")


@pytest.mark.parametrize(
    ("center", "width"),
    [("1e6", "10"), ("2000", "1e308")],
    ids=["window-above-the-values", "window-1e308-wide"],
)
def test_window_that_blanks_the_image_is_an_error(tmp_path, center, width):
    path = write_dicom(tmp_path / "blank.dcm", ramp(), WindowCenter=center, WindowWidth=width)
    decode_error(path, "would be blank")


def test_rescale_slope_that_overflows_the_stored_range_is_an_error(tmp_path):
    """16 stored bits x slope 1e304 exceed float64, though the pixels present stay finite."""
    path = write_dicom(tmp_path / "slope.dcm", ramp(maximum=4095), RescaleSlope="1e304", RescaleIntercept="0")
    decode_error(path, "overflow")


@pytest.mark.parametrize(
    ("samples", "photometric", "problem"),
    [
        (1, "HSV", "unsupported DICOM Photometric Interpretation 'HSV'"),
        (1, "CMYK", "unsupported"),
        (1, "PALETTE COLOR", "without its palette lookup tables"),
        (1, "RGB", "does not fit Samples per Pixel 1"),
        (3, "MONOCHROME2", "does not fit Samples per Pixel 3"),
        (3, "ARGB", "unsupported"),
    ],
)
def test_unsupported_or_inconsistent_photometric_interpretation_is_an_error(
    tmp_path, samples, photometric, problem
):
    pixels = ramp(maximum=255).astype(np.uint8)
    if samples == 3:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    path = write_dicom(tmp_path / "photometric.dcm", pixels, samples=samples, photometric=photometric)
    decode_error(path, problem)


def test_palette_color_with_its_tables_is_read_through_them(tmp_path):
    """The counterpart: a PALETTE COLOR image with a grey ramp palette reads as the palette's grey values."""
    pixels = ramp(maximum=255).astype(np.uint8)
    lut = (255 - np.arange(256)).astype(np.uint16)  # inverted: index 0 is white
    attrs = {}
    for colour in ("Red", "Green", "Blue"):
        attrs[f"{colour}PaletteColorLookupTableDescriptor"] = [256, 0, 8]
        attrs[f"{colour}PaletteColorLookupTableData"] = lut.astype(np.uint8).tobytes()
    path = write_dicom(tmp_path / "palette.dcm", pixels, photometric="PALETTE COLOR", **attrs)
    out = load_unit_gray(str(path))
    np.testing.assert_allclose(out, (255 - pixels) / 255.0, atol=1e-6)


# --------------------------------------------------------------------------------------------------------------------
# DICOMDIR references
# --------------------------------------------------------------------------------------------------------------------


def dicomdir_with_references(tmp_path: Path, *file_ids) -> tuple[Path, list[Path]]:
    """A DICOMDIR (pydicom's FileSet) of two images whose first records' ReferencedFileID are replaced by
    `file_ids`; returns the DICOMDIR and the images written inside its folder."""
    from pydicom.fileset import FileSet

    sources = [write_dicom(tmp_path / "src" / f"{i}.dcm", ramp() + i) for i in range(len(file_ids) + 1)]
    fileset = FileSet()
    for source in sources:
        fileset.add(pydicom.dcmread(source))
    media = tmp_path / "archive" / "media"
    fileset.write(media)
    dicomdir = media / "DICOMDIR"
    ds = pydicom.dcmread(dicomdir)
    images = [r for r in ds.DirectoryRecordSequence if "ReferencedFileID" in r]
    for record, file_id in zip(images, file_ids):
        record.ReferencedFileID = file_id
    ds.save_as(dicomdir, enforce_file_format=True)
    kept = [media.joinpath(*images[-1].ReferencedFileID)]
    return dicomdir, kept


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on the hostile ReferencedFileID
def test_dicomdir_references_out_of_its_folder_are_refused(tmp_path):
    outside = write_dicom(tmp_path / "outside" / "x.dcm", ramp())  # exists, and must not be read
    absolute = write_dicom(tmp_path / "abs.dcm", ramp())
    dicomdir, kept = dicomdir_with_references(tmp_path, ["..", "..", "outside", "x.dcm"], str(absolute))
    found, problems = find_images([dicomdir])
    assert found == kept
    reasons = {str(path): reason for path, reason in problems}
    assert (
        str(outside) in reasons
        and "climbs out" in reasons[str(outside)]
        and "DICOMDIR" in reasons[str(outside)]
    )
    assert str(absolute) in reasons and "absolute" in reasons[str(absolute)]


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on the hostile ReferencedFileID
def test_dicomdir_reference_through_a_symbolic_link_out_is_refused(tmp_path):
    outside = write_dicom(tmp_path / "outside" / "x.dcm", ramp())
    dicomdir, kept = dicomdir_with_references(tmp_path, ["LINK", "x.dcm"])
    (dicomdir.parent / "LINK").symlink_to(outside.parent, target_is_directory=True)
    found, problems = find_images([dicomdir])
    assert found == kept and outside not in found
    assert len(problems) == 1 and "symbolic link" in problems[0][1]


# --------------------------------------------------------------------------------------------------------------------
# CSV and COCO
# --------------------------------------------------------------------------------------------------------------------


def png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((ramp(maximum=255)).astype(np.uint8)).save(path)
    return path


def test_csv_with_a_repeated_label_column_is_refused(tmp_path):
    """`path,Mass,Mass` with a row "1,0": the dict reader would keep only one of the two values."""
    png(tmp_path / "a.png")
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("path,Mass,Mass\na.png,1,0\n")
    with pytest.raises(ValueError, match=r"labels\.csv:1: .*'Mass'.*more than once"):
        load_csv_dataset(csv_path)


@pytest.mark.parametrize(
    ("header", "kwargs"),
    [
        ("path,Mass, Mass", {}),  # two label columns that differ only by a space: one label, twice
        # the repeated name's first column would stay 0
        ("path,Mass,Nodule", {"label_names": ["Mass", "Mass"]}),
        ("path,findings", {"label_column": "findings", "label_names": ["Mass", "Nodule", "Mass"]}),
    ],
    ids=["header-differs-by-a-space", "label-names-repeated", "label-names-repeated-with-label-column"],
)
def test_csv_label_set_naming_a_label_twice_is_refused(tmp_path, header, kwargs):
    png(tmp_path / "a.png")
    csv_path = tmp_path / "labels.csv"
    row = "a.png,Mass" if "label_column" in kwargs else "a.png,1,0"
    csv_path.write_text(f"{header}\n{row}\n")
    with pytest.raises(ValueError, match=r"labels\.csv:1: .*'Mass'.*more than once"):
        load_csv_dataset(csv_path, **kwargs)


def test_latin1_csv_names_the_file_and_line(tmp_path):
    png(tmp_path / "a.png")
    png(tmp_path / "b.png")
    csv_path = tmp_path / "latin1.csv"
    csv_path.write_bytes("path,Mass\na.png,1\nb.png,0\n# caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.csv:4: not UTF-8"):
        load_csv_dataset(csv_path)


def test_latin1_boxes_csv_names_the_file_and_line(tmp_path):
    png(tmp_path / "a.png")
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("path,Mass\na.png,1\n")
    boxes = tmp_path / "boxes.csv"
    boxes.write_bytes(
        "image,label,x,y,w,h\na.png,Mass,1,1,4,4\na.png,Mass,2,2,4,4 caf\u00e9\n".encode("latin-1")
    )
    with pytest.raises(ValueError, match=r"boxes\.csv:3: not UTF-8"):
        load_csv_dataset(csv_path, boxes_csv=boxes)


def coco(tmp_path: Path, file_name: str) -> Path:
    annotation = tmp_path / "coco" / "annotations.json"
    annotation.parent.mkdir(parents=True, exist_ok=True)
    annotation.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": file_name, "height": 24, "width": 20}],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}],
                "categories": [{"id": 1, "name": "Mass"}],
            }
        )
    )
    return annotation


@pytest.mark.parametrize("kind", ["parent", "absolute", "symlink"])
def test_coco_file_name_outside_image_root_is_refused(tmp_path, kind):
    secret = png(tmp_path / "x.png")  # a readable image outside image_root
    root = tmp_path / "coco" / "images"
    root.mkdir(parents=True)
    file_name = {"parent": "../../x.png", "absolute": str(secret), "symlink": "link/x.png"}[kind]
    if kind == "symlink":
        (root / "link").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(ValueError, match=r"annotations\.json: image #0.*file_name.*must stay inside"):
        load_coco_dataset(coco(tmp_path, file_name), root)
    dataset = load_coco_dataset(coco(tmp_path, file_name), root, skip_missing=True)
    assert len(dataset) == 0


def test_coco_file_name_inside_image_root_still_loads(tmp_path):
    root = tmp_path / "coco" / "images"
    png(root / "sub" / "a.png")
    dataset = load_coco_dataset(coco(tmp_path, "sub/a.png"), root)
    assert len(dataset) == 1 and dataset[0]["labels"] == [1.0]


def test_training_csv_label_column_with_a_stray_value_is_refused_not_dropped(tmp_path):
    """`path,Mass,Nodule` with a "2" in Nodule: the column is not all 0/1, and was silently left out of the label
    set (the model trained on Mass alone)."""
    from clarity_hf.data.sources import load_training_data

    rows = [f"{png(tmp_path / f'{i}.png').name},{i % 2},{(i // 2) % 2}" for i in range(6)]
    rows[3] = rows[3].rsplit(",", 1)[0] + ",2"
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("path,Mass,Nodule\n" + "\n".join(rows) + "\n")
    with pytest.raises(ValueError, match=r"labels\.csv:5: .*'Nodule'.*'2'"):
        load_training_data(csv_path)


def test_training_csv_columns_left_out_of_the_label_set_are_named(tmp_path, caplog):
    from clarity_hf.data.features import get_label_names
    from clarity_hf.data.sources import load_training_data

    rows = [f"{png(tmp_path / f'{i}.png').name},{i % 2},{40 + i}" for i in range(6)]
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("path,Mass,age_years\n" + "\n".join(rows) + "\n")
    with caplog.at_level("WARNING", logger="clarity_hf.data.sources"):
        data = load_training_data(csv_path)
    assert get_label_names(data["train"]) == ["Mass"]
    assert (
        "labels.csv" in caplog.text and "'age_years'" in caplog.text and "not used as labels" in caplog.text
    )
