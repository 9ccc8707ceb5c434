# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Decoding of chest X-ray inputs for CLARiTy: files (PNG, JPEG, TIFF, ... and DICOM), encoded bytes, PIL images,
numpy arrays, torch tensors and pydicom Datasets in; one (H, W) float64 grayscale image in [0, 1] out (see
`load_unit_gray`).

This file is shipped with the Hub code files: it imports only numpy, PIL and torch (pydicom lazily, when a DICOM is
read). Training, the dataset cache, evaluation and inference all decode through it, so the model always sees the
same pixels.

Error policy: every input that cannot be turned into an image raises `ImageDecodeError` (a `ValueError`) naming the
input and the problem: missing, empty, truncated or unidentified files, images larger than the pixel limit, corrupt
or inconsistent DICOM attributes, NaN / infinite values. Readers that skip bad images catch this one class.

Pixel limit: a file or Dataset whose header declares more than `max_image_pixels` pixels (height x width x frames)
is refused before its pixel data are decoded. The default, `DEFAULT_MAX_IMAGE_PIXELS` = 8192 x 8192 (67 M pixels),
is more than three times the largest chest or mammography detector (about 4300 x 4300). Decoding keeps the file's
own bit depth until the grey image is made, and makes it in blocks of rows (float64 arithmetic on a few MB at a
time), so an image at the limit needs its decoded pixels plus one grey copy (8 bytes a pixel in float64, 4 with
`dtype=np.float32`, which the processor asks for); see README for the measured peaks. Change it per call (`max_image_pixels=`), for the processor
(`ClarityImageProcessor(max_image_pixels=...)`) or for the process (environment variable
`CLARITY_MAX_IMAGE_PIXELS`). PIL's own bomb limit (`PIL.Image.MAX_IMAGE_PIXELS`, twice of which raises) still
applies to PIL-readable files.
"""

import io
import math
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

# ITU-R 601-2 luma, the weights of PIL's `convert("L")`, applied in float.
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float64)
_BLOCK_PIXELS = 1 << 20  # pixels per block of rows when making the grey image (8 MB of float64)
_INTENSITY_SCALINGS = ("bit_depth", "minmax")
_DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
DEFAULT_MAX_IMAGE_PIXELS = 8192 * 8192
MAX_IMAGE_PIXELS_ENV = "CLARITY_MAX_IMAGE_PIXELS"
# Pixel data larger than this stay on disk until the header has passed the pixel limit (pydicom `defer_size`).
_DICOM_DEFER_SIZE = 1 << 20


class ImageDecodeError(ValueError):
    """An input that cannot be decoded into an image; the message names the input and the problem."""


class MissingImageError(ImageDecodeError):
    """An input that holds no image at all: a missing file, None, or an entry with neither bytes nor path."""


def resolve_max_image_pixels(max_image_pixels: int | None = None) -> int:
    """The pixel limit in force: `max_image_pixels` if given, else `$CLARITY_MAX_IMAGE_PIXELS`, else
    `DEFAULT_MAX_IMAGE_PIXELS`. Raises ValueError for a value that is not a positive integer."""
    source = "max_image_pixels"
    if max_image_pixels is None:
        text = os.environ.get(MAX_IMAGE_PIXELS_ENV, "").strip()
        if not text:
            return DEFAULT_MAX_IMAGE_PIXELS
        source = f"environment variable {MAX_IMAGE_PIXELS_ENV}"
        try:
            max_image_pixels = int(text)
        except ValueError:
            raise ValueError(f"{source} must be a positive integer, got {text!r}") from None
    if isinstance(max_image_pixels, bool) or not isinstance(max_image_pixels, (int, np.integer)):
        raise ValueError(f"{source} must be a positive integer, got {max_image_pixels!r}")
    if max_image_pixels <= 0:
        raise ValueError(f"{source} must be a positive integer, got {max_image_pixels}")
    return int(max_image_pixels)


def check_pixel_count(
    name: str, height: int, width: int, frames: int = 1, max_image_pixels: int | None = None
):
    """Raise `ImageDecodeError` if an image of height x width x frames pixels exceeds the pixel limit."""
    limit = resolve_max_image_pixels(max_image_pixels)
    count = int(height) * int(width) * max(int(frames), 1)
    if count > limit:
        frames_text = f" x {int(frames)} frames" if int(frames) > 1 else ""
        raise ImageDecodeError(
            f"{name}: declares {int(width)}x{int(height)}{frames_text} = {count} pixels, more than the limit of "
            f"{limit} (a decompression bomb or an unusually large image); raise max_image_pixels or "
            f"{MAX_IMAGE_PIXELS_ENV} to read it"
        )


def _require_pydicom():
    try:
        import pydicom
    except ImportError as err:  # pragma: no cover - pydicom is a dependency of clarity_hf
        raise ImportError("reading DICOM files needs pydicom: `pip install pydicom`") from err
    return pydicom


DICOM_EXTRA_HINT = 'pip install "clarity_hf[dicom]"'


def _missing_dicom_decoder(ds, name: str) -> str | None:
    """The error message for compressed pixel data (JPEG 2000, JPEG lossless, JPEG-LS, ...) that no installed
    pydicom plugin can decode, naming the transfer syntax and the extra that brings the decoders; None when a decoder
    is available (or pydicom cannot tell: it then raises its own error, which the caller wraps)."""
    file_meta = getattr(ds, "file_meta", None)
    syntax = getattr(file_meta, "TransferSyntaxUID", None) if file_meta is not None else None
    if syntax is None or not getattr(syntax, "is_compressed", False):
        return None
    try:
        from pydicom.pixels import get_decoder  # pydicom >= 3

        available = get_decoder(syntax).is_available
    except Exception:  # pydicom 2.x, or a transfer syntax pydicom has no decoder class for
        return None
    if available:
        return None
    return (
        f"{name}: DICOM pixel data is compressed with {syntax.name} (transfer syntax {syntax}) and no decoder for "
        f"it is installed; install the decoders with `{DICOM_EXTRA_HINT}` (pylibjpeg with its openjpeg and libjpeg "
        "plugins, and pyjpegls)"
    )


# --------------------------------------------------------------------------------------------------------------------
# Decoding: every input becomes one float64 (H, W) grayscale array in [0, 1].
# --------------------------------------------------------------------------------------------------------------------


def _describe(item, index: int) -> str:
    """How an input is named in error messages: its file path, else its position, type, shape and dtype."""
    if isinstance(item, (str, os.PathLike)):
        return f"file '{os.fspath(item)}'"
    kind = f"{type(item).__module__}.{type(item).__qualname__}".replace("builtins.", "")
    if isinstance(item, (np.ndarray, torch.Tensor)):
        return f"input #{index} of type {kind} (shape {tuple(item.shape)}, dtype {item.dtype})"
    if isinstance(item, Image.Image):
        return f"input #{index} of type {kind} (mode {item.mode}, size {item.size[0]}x{item.size[1]})"
    if isinstance(item, (bytes, bytearray, memoryview)):
        return f"input #{index} ({len(item)} encoded bytes)"
    if isinstance(item, dict) and item.get("path"):
        return f"file '{item['path']}'"
    return f"input #{index} of type {kind}"


def _bit_depth_range(max_value: float) -> float:
    """Largest value of the smallest usual detector bit depth (8, 10, 12, 14, 16, else exact) holding max_value."""
    bits = int(math.ceil(max_value)).bit_length()
    if bits <= 8:
        bits = 8
    elif bits <= 16:
        bits += bits % 2
    return float(2**bits - 1)


def _intensity_range(values: np.ndarray, dtype: np.dtype, scaling: str) -> tuple[float, float]:
    """The (low, high) raw values that map to 0 and 1 (see `ClarityImageProcessor`, "Intensities")."""
    low, high = float(values.min()), float(values.max())
    if scaling == "minmax":
        return low, high
    if dtype == np.bool_:
        return 0.0, 1.0
    if dtype == np.uint8:
        return 0.0, 255.0
    if low < 0:
        return low, high
    if np.issubdtype(dtype, np.integer):
        return 0.0, _bit_depth_range(high)
    if high <= 1.0:
        return 0.0, 1.0
    if high <= 255.0:
        return 0.0, 255.0
    if high <= 65535.0:
        return 0.0, _bit_depth_range(high)
    return low, high


def _scale(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """(values - low) / (high - low) clipped to [0, 1], in float64. Halving every term first keeps the differences
    finite for any finite inputs (values near +-1.8e308 would overflow to inf and give NaN)."""
    half_span = 0.5 * high - 0.5 * low
    if not half_span > 0:
        return np.zeros(np.shape(values), dtype=np.float64)
    return np.clip((0.5 * values.astype(np.float64) - 0.5 * low) / half_span, 0.0, 1.0)


def _pil_to_array(image: Image.Image) -> np.ndarray:
    """A PIL image as an array, keeping its bit depth: (H, W) for one-band modes, (H, W, C) otherwise."""
    mode = image.mode
    if mode.startswith("I;16"):
        return np.asarray(image).astype(np.uint16, copy=False)  # I;16B is big-endian: copied only then
    if mode in ("L", "I", "F", "RGB", "RGBA", "LA"):
        return np.asarray(image)
    if mode == "1":
        return np.asarray(image.convert("L"))
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in image.info
        return np.asarray(image.convert("RGBA" if has_alpha else "RGB"))
    if mode in ("La",):
        return np.asarray(image.convert("LA"))
    return np.asarray(image.convert("RGB"))  # RGBX, RGBa, CMYK, YCbCr, LAB, HSV, ...


def _channels_last(array: np.ndarray, prefer_channels_first: bool, name: str) -> np.ndarray:
    """(H, W) stays; a 3-D array becomes (H, W, C) with C in 1..4; anything else is rejected."""
    if array.ndim == 2:
        return array
    if array.ndim != 3:
        raise ImageDecodeError(
            f"{name}: has rank {array.ndim} (shape {tuple(array.shape)}); expected an image of shape (H, W), "
            "(H, W, C) or (C, H, W) with C in 1..4 (or a 4-D batch of those)"
        )
    first, last = array.shape[0] in (1, 2, 3, 4), array.shape[-1] in (1, 2, 3, 4)
    if first and (prefer_channels_first or not last):
        return np.moveaxis(array, 0, -1)
    if last:
        return array
    raise ImageDecodeError(
        f"{name}: 3-D input of shape {tuple(array.shape)} has no channel axis of size 1-4 (first or last); "
        "expected (H, W), (H, W, C) or (C, H, W)"
    )


def _channels_equal(array: np.ndarray) -> bool:
    """Whether an (H, W, C >= 3) image is grey stored as RGB (compared a block of rows at a time)."""
    rows = max(1, _BLOCK_PIXELS // max(1, array.shape[1]))
    for start in range(0, array.shape[0], rows):
        block = array[start : start + rows]
        if not (
            np.array_equal(block[..., 0], block[..., 1]) and np.array_equal(block[..., 0], block[..., 2])
        ):
            return False
    return True


def _to_gray(array: np.ndarray, channels_equal: bool | None = None) -> np.ndarray:
    """(H, W) or (H, W, C) raw values -> (H, W) float64 raw values: RGB(A) -> luma (alpha dropped), LA -> L.
    `channels_equal` is `_channels_equal(array)` when known (for the whole image, not this block of rows)."""
    if array.ndim == 2:
        return array.astype(np.float64)
    channels = array.shape[-1]
    if channels in (1, 2):
        return array[..., 0].astype(np.float64)
    if channels_equal if channels_equal is not None else _channels_equal(array):
        return array[..., 0].astype(np.float64)  # grayscale stored as RGB: exact, no weighting round-off
    gray = array[..., 0] * _LUMA_WEIGHTS[0]  # channel by channel: never an (H, W, 3) float64 copy
    gray += array[..., 1] * _LUMA_WEIGHTS[1]
    gray += array[..., 2] * _LUMA_WEIGHTS[2]
    return gray


def _unit_gray_by_blocks(
    array: np.ndarray, do_rescale: bool, low: float, high: float, dtype, check=None
) -> np.ndarray:
    """`_scale(_to_gray(array), low, high)` (or `_to_gray(array)` without `do_rescale`) as a `dtype` array, computed
    in float64 on blocks of rows: the same numbers as one float64 pass, without its full-size float64 temporaries.
    `check(block)` sees each float64 block before it is stored."""
    height, width = array.shape[:2]
    out = np.empty((height, width), dtype=dtype)
    equal = _channels_equal(array) if array.ndim == 3 and array.shape[-1] >= 3 else None
    rows = max(1, _BLOCK_PIXELS // max(1, width))
    for start in range(0, height, rows):
        gray = _to_gray(array[start : start + rows], equal)
        if do_rescale:
            gray = _scale(gray, low, high)
        if check is not None:
            check(gray)
        out[start : start + rows] = gray
    return out


def _array_to_unit_gray(
    array: np.ndarray,
    name: str,
    do_rescale: bool,
    scaling: str,
    prefer_channels_first: bool = False,
    dtype=np.float64,
) -> np.ndarray:
    """Validate a raw array and turn it into an (H, W) `dtype` grayscale image, scaled to [0, 1] if `do_rescale`
    (computed in float64 either way, see `_unit_gray_by_blocks`)."""
    if (
        array.dtype == object
        or not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_)
        or np.iscomplexobj(array)
    ):
        raise ImageDecodeError(
            f"{name}: unsupported dtype {array.dtype}; expected integer, float or bool pixels"
        )
    if array.size == 0:
        raise ImageDecodeError(f"{name}: is empty (shape {tuple(array.shape)})")
    array = _channels_last(array, prefer_channels_first, name)
    height, width = array.shape[:2]
    if height < 2 or width < 2:
        raise ImageDecodeError(
            f"{name}: is too small ({height}x{width} pixels); an image needs at least 2x2 pixels"
        )
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise ImageDecodeError(f"{name}: contains {bad} NaN or infinite value(s)")
    out_dtype, dtype = dtype, array.dtype
    if array.ndim == 3 and array.shape[-1] in (2, 4):
        array = array[..., : array.shape[-1] - 1]  # drop alpha before measuring the value range
    if not do_rescale:

        def fits_float32(gray: np.ndarray) -> None:
            if np.abs(gray).max() > np.finfo(np.float32).max:
                raise ImageDecodeError(
                    f"{name}: values up to {np.abs(gray).max():.3g} do not fit in float32; use do_rescale=True"
                )

        return _unit_gray_by_blocks(array, False, 0.0, 1.0, out_dtype, check=fits_float32)
    low, high = _intensity_range(array, dtype, scaling)
    return _unit_gray_by_blocks(array, True, low, high, out_dtype)


def _is_dicom_file(path: Path) -> bool:
    if path.suffix.lower() in _DICOM_SUFFIXES:
        return True
    with open(path, "rb") as handle:
        head = handle.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def _first_value(value) -> float:
    """DICOM multi-valued attributes (e.g. several windows): the first one, as float."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0]
    return float(value)


def _value_count(value) -> int:
    return len(value) if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else 1


def _dicom_number(ds, keyword: str, name: str, default: float | None = None) -> float | None:
    """A numeric DICOM attribute as a finite float (the first value if several), `default` when absent;
    ImageDecodeError naming the file and the attribute when it is malformed."""
    try:
        if keyword not in ds or ds[keyword].value in (None, ""):
            return default
        value = _first_value(ds[keyword].value)
    except (
        Exception
    ) as err:  # pydicom converts DS / IS text lazily and raises ValueError (or worse) on garbage
        raise ImageDecodeError(
            f"{name}: DICOM attribute {keyword} is malformed ({type(err).__name__}: {err})"
        ) from err
    if not math.isfinite(value):
        raise ImageDecodeError(f"{name}: DICOM attribute {keyword} is not finite ({value})")
    return value


def _dicom_header_int(ds, keyword: str, name: str, default: int | None = None) -> int:
    value = _dicom_number(ds, keyword, name, default)
    if value is None:
        raise ImageDecodeError(f"{name}: DICOM file has no {keyword} attribute")
    return int(value)


def _check_dicom_header(ds, name: str, max_image_pixels: int | None) -> None:
    """Refuse a Dataset whose Rows x Columns x frames exceed the pixel limit, before its pixel data are decoded."""
    rows = _dicom_header_int(ds, "Rows", name)
    columns = _dicom_header_int(ds, "Columns", name)
    frames = _dicom_header_int(ds, "NumberOfFrames", name, 1)
    if rows < 1 or columns < 1:
        raise ImageDecodeError(f"{name}: DICOM header declares {columns}x{rows} pixels")
    check_pixel_count(name, rows, columns, frames, max_image_pixels)


def _window(ds, name: str) -> tuple[float, float, str]:
    """The first VOI window (center, width, function), checked against DICOM PS3.3 C.11.2.1.2: the width must be
    >= 1 for LINEAR and > 0 for LINEAR_EXACT and SIGMOID. A window breaking that rule is an error, not a guess."""
    center = _dicom_number(ds, "WindowCenter", name)
    width = _dicom_number(ds, "WindowWidth", name)
    if center is None or width is None:  # present but empty: which window was meant cannot be told
        raise ImageDecodeError(
            f"{name}: DICOM Window Center / Width is empty or missing ({ds.get('WindowCenter', '')!r} / "
            f"{ds.get('WindowWidth', '')!r})"
        )
    counts = [_value_count(ds["WindowCenter"].value), _value_count(ds["WindowWidth"].value)]
    if counts[0] != counts[1]:  # the n-th center pairs with the n-th width: which pairs were meant is unknown
        raise ImageDecodeError(
            f"{name}: DICOM has {counts[0]} Window Center value(s) but {counts[1]} Window Width value(s)"
        )
    function = str(getattr(ds, "VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        raise ImageDecodeError(f"{name}: unsupported VOI LUT Function {function!r}")
    smallest_ok = width >= 1.0 if function == "LINEAR" else width > 0.0
    if not smallest_ok:
        bound = ">= 1" if function == "LINEAR" else "> 0"
        raise ImageDecodeError(
            f"{name}: DICOM Window Width {width:g} is invalid for VOI LUT Function {function} (must be {bound}, "
            "DICOM PS3.3 C.11.2.1.2)"
        )
    return center, width, function


# PhotometricInterpretation values read, by SamplesPerPixel (pydicom converts YBR to RGB when decoding).
_GRAY_PHOTOMETRIC = ("MONOCHROME1", "MONOCHROME2", "PALETTE COLOR")
_COLOUR_PHOTOMETRIC = (
    "RGB",
    "YBR_FULL",
    "YBR_FULL_422",
    "YBR_ICT",
    "YBR_RCT",
    "YBR_PARTIAL_420",
    "YBR_PARTIAL_422",
)


def _photometric(ds, samples: int, name: str) -> str:
    """The checked PhotometricInterpretation (MONOCHROME2 when absent from a one-sample image); an unsupported
    value (HSV, ARGB, CMYK), one that disagrees with SamplesPerPixel or PALETTE COLOR without its lookup tables is
    an error rather than pixels read the wrong way."""
    value = ds.get("PhotometricInterpretation")
    photometric = (
        str(value).strip().upper() if value not in (None, "") else ("MONOCHROME2" if samples == 1 else "")
    )
    expected = _GRAY_PHOTOMETRIC if samples == 1 else _COLOUR_PHOTOMETRIC if samples == 3 else ()
    if photometric not in _GRAY_PHOTOMETRIC + _COLOUR_PHOTOMETRIC:
        raise ImageDecodeError(f"{name}: unsupported DICOM Photometric Interpretation {photometric!r}")
    if photometric not in expected:
        raise ImageDecodeError(
            f"{name}: DICOM Photometric Interpretation {photometric!r} does not fit Samples per Pixel {samples}"
        )
    if photometric == "PALETTE COLOR" and not all(
        f"{colour}PaletteColorLookupTableDescriptor" in ds
        and (
            f"{colour}PaletteColorLookupTableData" in ds
            or f"Segmented{colour}PaletteColorLookupTableData" in ds
        )
        for colour in ("Red", "Green", "Blue")
    ):
        raise ImageDecodeError(f"{name}: DICOM PALETTE COLOR image without its palette lookup tables")
    return photometric


def _palette_to_unit_gray(ds, pixels: np.ndarray, name: str) -> np.ndarray:
    """A PALETTE COLOR image through its lookup tables -> luma in [0, 1] (table entries span their bit depth)."""
    try:
        from pydicom.pixels import apply_color_lut
    except ImportError:  # pydicom 2.x
        from pydicom.pixel_data_handlers.util import apply_color_lut
    try:
        rgb = apply_color_lut(pixels, ds)
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
    except Exception as err:  # a malformed palette
        raise ImageDecodeError(
            f"{name}: DICOM palette lookup tables could not be applied ({type(err).__name__}: {err})"
        ) from err
    return _scale(_to_gray(rgb), 0.0, float(2 ** (16 if bits > 8 else 8) - 1))


def _dicom_to_unit_gray(ds, name: str, scaling: str, max_image_pixels: int | None = None) -> np.ndarray:
    """A pydicom Dataset -> (H, W) float64 in [0, 1], bone bright (see `ClarityImageProcessor`, "DICOM")."""
    try:
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:  # pydicom 2.x
        from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut

    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ImageDecodeError(f"{name}: DICOM file has no pixel data")
    _check_dicom_header(ds, name, max_image_pixels)
    missing = _missing_dicom_decoder(ds, name)
    if missing is not None:
        raise ImageDecodeError(missing)
    frames = _dicom_header_int(ds, "NumberOfFrames", name, 1)
    samples = _dicom_header_int(ds, "SamplesPerPixel", name, 1)
    if frames > 1:
        raise ImageDecodeError(
            f"{name}: multi-frame DICOM ({frames} frames) is not supported; pass one frame as an array instead"
        )
    photometric = _photometric(ds, samples, name)
    slope = _dicom_number(ds, "RescaleSlope", name, 1.0)
    _dicom_number(ds, "RescaleIntercept", name, 0.0)
    if slope == 0:
        raise ImageDecodeError(f"{name}: DICOM Rescale Slope is 0, which maps every pixel to one value")
    try:
        pixels = ds.pixel_array
    except Exception as err:  # pydicom raises many types for bad or unsupported pixel data
        raise ImageDecodeError(
            f"{name}: DICOM pixel data could not be decoded ({type(err).__name__}: {err})"
        ) from err
    if pixels.size == 0:
        raise ImageDecodeError(f"{name}: DICOM pixel data is empty (shape {tuple(pixels.shape)})")
    if pixels.ndim != (2 if samples == 1 else 3):
        raise ImageDecodeError(f"{name}: DICOM pixel data has unexpected shape {tuple(pixels.shape)}")
    if pixels.shape[0] < 2 or pixels.shape[1] < 2:
        raise ImageDecodeError(f"{name}: is too small ({pixels.shape[0]}x{pixels.shape[1]} pixels)")
    if np.issubdtype(pixels.dtype, np.floating) and not np.isfinite(pixels).all():
        raise ImageDecodeError(f"{name}: DICOM pixel data contains NaN or infinite values")
    if (
        samples > 1
    ):  # colour DICOM (pydicom already converts YBR to RGB): luma, scaled by the stored bit depth
        bits = _dicom_header_int(ds, "BitsStored", name, 8)
        return _scale(_to_gray(pixels), 0.0, float(2**bits - 1))
    if photometric == "PALETTE COLOR":
        unit = _palette_to_unit_gray(ds, pixels, name)
        return _scale(unit, float(unit.min()), float(unit.max())) if scaling == "minmax" else unit

    try:
        values = np.asarray(apply_modality_lut(pixels, ds), dtype=np.float64)
    except Exception as err:  # a malformed Modality LUT Sequence
        raise ImageDecodeError(
            f"{name}: DICOM modality LUT could not be applied ({type(err).__name__}: {err})"
        ) from err
    if not np.isfinite(values).all():
        raise ImageDecodeError(
            f"{name}: DICOM modality LUT (Rescale Slope / Intercept) gives non-finite values"
        )
    if values.min() == values.max() and pixels.min() != pixels.max():
        # e.g. RescaleIntercept 1e308: float64 cannot tell the stored values apart any more
        raise ImageDecodeError(
            f"{name}: DICOM modality LUT (Rescale Slope / Intercept) maps every pixel to one value "
            f"({float(values.flat[0]):g}): the image would be constant"
        )

    voi_luts = getattr(ds, "VOILUTSequence", None)
    if voi_luts is not None and len(voi_luts) > 0:
        # VOI LUT table: pydicom applies it; its output spans the table's bit depth (LUT Descriptor, 3rd value).
        try:
            lut_bits = int(voi_luts[0].LUTDescriptor[2])
            # A LUT is indexed by integer input values; pydicom warns about (and may misread) float arrays.
            integral = np.array_equal(values, np.round(values)) and np.abs(values).max() < 2.0**62
            lut_input = values.astype(np.int64) if integral else values
            out = np.asarray(apply_voi_lut(lut_input, ds, index=0, prefer_lut=True), dtype=np.float64)
        except Exception as err:  # e.g. NotImplementedError for an unsupported LUT Descriptor bit depth
            raise ImageDecodeError(
                f"{name}: DICOM VOI LUT Sequence could not be applied ({type(err).__name__}: {err})"
            ) from err
        unit = _scale(out, 0.0, float(2**lut_bits - 1))
    elif "WindowCenter" in ds or "WindowWidth" in ds:  # half a window is an error in _window, not no window
        center, width, function = _window(ds, name)
        if function == "SIGMOID":
            unit = 1.0 / (1.0 + np.exp(np.clip(-4.0 * (values - center) / width, -700.0, 700.0)))
        elif function == "LINEAR_EXACT":
            unit = np.clip((values - center) / width + 0.5, 0.0, 1.0)
        elif width == 1.0:  # LINEAR with width 1: a threshold at center - 0.5 (C.11.2.1.2.1)
            unit = (values > center - 0.5).astype(np.float64)
        else:  # LINEAR, DICOM PS3.3 C.11.2.1.2.1
            unit = np.clip((values - (center - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0)
    else:
        low, high = _dicom_value_range(ds, pixels, values, slope, name)
        unit = _scale(values, low, high)
    if unit.min() == unit.max() and pixels.min() != pixels.max():
        # a window far outside the values (or absurdly wide) would hand the model a blank image
        raise ImageDecodeError(
            f"{name}: DICOM VOI window / LUT maps every pixel to one value ({float(unit.flat[0]):g}): the image "
            "would be blank"
        )
    if (
        photometric == "MONOCHROME1"
    ):  # low values are bright: invert so that bone is bright, as in MONOCHROME2
        unit = 1.0 - unit
    if scaling == "minmax":
        unit = _scale(unit, float(unit.min()), float(unit.max()))
    return unit


def _dicom_value_range(
    ds, pixels: np.ndarray, values: np.ndarray, slope: float, name: str
) -> tuple[float, float]:
    """The range of values the stored bits can hold, after the modality transform (slope / intercept)."""
    if "ModalityLUTSequence" in ds or np.issubdtype(pixels.dtype, np.floating):
        return float(values.min()), float(values.max())  # no bit-depth bound: the actual range
    bits = _dicom_header_int(ds, "BitsStored", name, 0) or 8 * pixels.dtype.itemsize
    if _dicom_header_int(ds, "PixelRepresentation", name, 0) == 1:
        stored = (-(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1)
    else:
        stored = (0.0, 2.0**bits - 1)
    intercept = _dicom_number(ds, "RescaleIntercept", name, 0.0)
    ends = [stored[0] * slope + intercept, stored[1] * slope + intercept]
    if not all(math.isfinite(end) for end in ends) or ends[0] == ends[1]:
        raise ImageDecodeError(
            f"{name}: DICOM Rescale Slope {slope:g} / Intercept {intercept:g} overflow the {bits}-bit stored "
            f"range (it maps to {ends[0]:g} .. {ends[1]:g})"
        )
    return min(ends), max(ends)


def _checked_file(item, name: str) -> tuple[Path, bool]:
    """A path -> (that Path, whether it is a DICOM file); MissingImageError or ImageDecodeError otherwise."""
    path = Path(os.fspath(item)).expanduser()
    if not path.exists():
        raise MissingImageError(f"{name}: no such file")
    if path.is_dir():
        raise ImageDecodeError(f"{name}: is a directory, not an image file")
    try:
        if path.stat().st_size == 0:
            raise ImageDecodeError(f"{name}: is empty (0 bytes)")
        return path, _is_dicom_file(path)
    except OSError as err:
        raise ImageDecodeError(f"{name}: could not be read ({err})") from err


def _dcmread(source, name: str, **kwargs):
    """`pydicom.dcmread(source, force=True, **kwargs)`, any failure an ImageDecodeError naming the file."""
    pydicom = _require_pydicom()
    try:
        return pydicom.dcmread(source, force=True, **kwargs)
    except Exception as err:
        raise ImageDecodeError(f"{name}: is not a readable DICOM file ({type(err).__name__}: {err})") from err


def _read_dicom(source, name: str, scaling: str, max_image_pixels: int | None) -> np.ndarray:
    """A DICOM file path or encoded bytes -> (H, W) float64 in [0, 1]. Pixel data above 1 MiB are read only after
    the header has passed the pixel limit (deferred reading)."""
    if isinstance(source, Path):
        ds = _dcmread(str(source), name, defer_size=_DICOM_DEFER_SIZE)
    else:
        ds = _dcmread(io.BytesIO(source), name)
    return _dicom_to_unit_gray(ds, name, scaling, max_image_pixels)


def _open_checked(source, name: str, max_image_pixels: int | None) -> Image.Image:
    """`Image.open` (lazy: only the header is read) with the pixel limit checked before any decoding. The caller
    loads and closes the image. PIL's bomb error and unidentified files become ImageDecodeError."""
    try:
        with warnings.catch_warnings():
            # PIL warns above Image.MAX_IMAGE_PIXELS; the package's own limit decides below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(source if isinstance(source, Path) else io.BytesIO(source))
    except Image.DecompressionBombError as err:
        raise ImageDecodeError(f"{name}: refused as a decompression bomb by PIL ({err})") from err
    except Image.UnidentifiedImageError as err:
        raise ImageDecodeError(
            f"{name}: is not an image file PIL can read (PNG, JPEG, ...) nor a DICOM file"
        ) from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageDecodeError(
            f"{name}: image file could not be opened ({type(err).__name__}: {err})"
        ) from err
    try:
        check_pixel_count(name, image.height, image.width, 1, max_image_pixels)
    except ImageDecodeError:
        image.close()
        raise
    return image


def open_image(source, name: str | None = None, max_image_pixels: int | None = None) -> Image.Image:
    """A PIL-readable file (path or encoded bytes) -> a loaded PIL image, refused before decoding when its header
    declares more pixels than the limit. For masks and other non-X-ray images; X-rays go through
    `load_unit_gray`. Raises ImageDecodeError (MissingImageError for an absent file)."""
    if isinstance(source, (str, os.PathLike)):
        name = name or f"file '{os.fspath(source)}'"
        source, _ = _checked_file(source, name)
    else:
        source = bytes(source)
        name = name or f"input ({len(source)} encoded bytes)"
    image = _open_checked(source, name, max_image_pixels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image.load()
        except Image.DecompressionBombError as err:
            raise ImageDecodeError(f"{name}: refused as a decompression bomb by PIL ({err})") from err
        except (OSError, SyntaxError, ValueError) as err:
            raise ImageDecodeError(
                f"{name}: image file could not be decoded ({type(err).__name__}: {err})"
            ) from err
    return image


def _read_image(source, name: str, max_image_pixels: int | None) -> np.ndarray:
    image = open_image(source, name, max_image_pixels)
    try:
        ImageOps.exif_transpose(
            image, in_place=True
        )  # in place: no full-size copy when there is nothing to turn
        return _pil_to_array(image)
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageDecodeError(
            f"{name}: image file could not be decoded ({type(err).__name__}: {err})"
        ) from err
    finally:
        image.close()


def image_size(item, max_image_pixels: int | None = None) -> tuple[int, int]:
    """(height, width) of an image file (PNG, JPEG, TIFF, ... or DICOM), read from its header only; raises
    ImageDecodeError when the file is unreadable or declares more pixels than the limit."""
    name = f"file '{os.fspath(item)}'"
    path, is_dicom = _checked_file(item, name)
    if is_dicom:
        ds = _dcmread(str(path), name, stop_before_pixels=True)
        _check_dicom_header(ds, name, max_image_pixels)
        return _dicom_header_int(ds, "Rows", name), _dicom_header_int(ds, "Columns", name)
    image = _open_checked(path, name, max_image_pixels)
    with image:
        return image.height, image.width


def load_unit_gray(
    item,
    index: int = 0,
    do_rescale: bool = True,
    scaling: str = "bit_depth",
    max_image_pixels: int | None = None,
    dtype=np.float64,
) -> np.ndarray:
    """Any supported input -> (H, W) float64, in [0, 1] when `do_rescale` (DICOMs always); see
    `ClarityImageProcessor`'s docstring for the intensity rules. `dtype=np.float32` gives the same values rounded to
    float32 with half the memory (the arithmetic stays float64, a block of rows at a time).

    Inputs: a path (str / PathLike), encoded file bytes, a `{"bytes", "path"}` dict (the `datasets` Image feature
    undecoded), a PIL image, a numpy array, a torch tensor or a pydicom Dataset. Files and Datasets are refused
    before decoding when their header declares more than `max_image_pixels` pixels (see `resolve_max_image_pixels`).
    Raises ImageDecodeError (MissingImageError for an absent file or empty entry) naming the input.
    """
    name = _describe(item, index)
    if isinstance(item, dict):
        data, path = item.get("bytes"), item.get("path")
        if data:
            item = bytes(data)
        elif path:
            item = path
        else:
            raise MissingImageError(f"{name}: image entry has neither bytes nor path")
    if item is None:
        raise MissingImageError(f"{name}: no image")
    if isinstance(item, (bytes, bytearray, memoryview)):
        data = bytes(item)
        if not data:
            raise ImageDecodeError(f"{name}: is empty (0 bytes)")
        if data[128:132] == b"DICM":
            return _read_dicom(data, name, scaling, max_image_pixels).astype(dtype, copy=False)
        return _array_to_unit_gray(
            _read_image(data, name, max_image_pixels), name, do_rescale, scaling, dtype=dtype
        )
    if isinstance(item, (str, os.PathLike)):
        path, is_dicom = _checked_file(item, name)
        if is_dicom:
            return _read_dicom(path, name, scaling, max_image_pixels).astype(dtype, copy=False)
        return _array_to_unit_gray(
            _read_image(path, name, max_image_pixels), name, do_rescale, scaling, dtype=dtype
        )
    if type(item).__module__.startswith("pydicom") and type(item).__name__ in ("Dataset", "FileDataset"):
        return _dicom_to_unit_gray(item, name, scaling, max_image_pixels).astype(dtype, copy=False)
    if isinstance(item, Image.Image):
        check_pixel_count(name, item.height, item.width, 1, max_image_pixels)  # a lazily opened image
        try:
            array = _pil_to_array(item)
        except (OSError, ValueError) as err:
            raise ImageDecodeError(f"{name}: PIL image could not be decoded ({err})") from err
        return _array_to_unit_gray(array, name, do_rescale, scaling, dtype=dtype)
    if isinstance(item, torch.Tensor):
        tensor = item.detach().cpu()
        if tensor.is_floating_point() and tensor.dtype != torch.float64:
            tensor = tensor.float()
        return _array_to_unit_gray(
            tensor.numpy(), name, do_rescale, scaling, prefer_channels_first=True, dtype=dtype
        )
    if isinstance(item, np.ndarray):
        return _array_to_unit_gray(item, name, do_rescale, scaling, dtype=dtype)
    raise ImageDecodeError(
        f"{name}: unsupported input; expected a PIL image, a numpy array, a torch tensor, a pydicom Dataset, "
        "encoded image bytes or the path of a PNG / JPEG / DICOM file"
    )


__all__ = [
    "DEFAULT_MAX_IMAGE_PIXELS",
    "MAX_IMAGE_PIXELS_ENV",
    "ImageDecodeError",
    "MissingImageError",
    "check_pixel_count",
    "image_size",
    "load_unit_gray",
    "open_image",
    "resolve_max_image_pixels",
]
