# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Decoding of chest X-ray inputs for CLARiTy: files (PNG, JPEG, TIFF, ... and DICOM), PIL images, numpy arrays,
torch tensors and pydicom Datasets in; one (H, W) float64 grayscale image in [0, 1] out (see `load_unit_gray`).

This file is shipped with the Hub code files: it imports only numpy, PIL and torch (pydicom lazily, when a DICOM is
read). Training, the dataset cache, evaluation and inference all decode through it, so the model always sees the
same pixels.
"""

import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

# ITU-R 601-2 luma, the weights of PIL's `convert("L")`, applied in float.
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float64)
_INTENSITY_SCALINGS = ("bit_depth", "minmax")
_DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")


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
    if high - low <= 0:
        return np.zeros_like(values, dtype=np.float64)
    return np.clip((values.astype(np.float64) - low) / (high - low), 0.0, 1.0)


def _pil_to_array(image: Image.Image) -> np.ndarray:
    """A PIL image as an array, keeping its bit depth: (H, W) for one-band modes, (H, W, C) otherwise."""
    mode = image.mode
    if mode.startswith("I;16"):
        return np.asarray(image).astype(np.uint16)
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
        raise ValueError(
            f"{name}: has rank {array.ndim} (shape {tuple(array.shape)}); expected an image of shape (H, W), "
            "(H, W, C) or (C, H, W) with C in 1..4 (or a 4-D batch of those)"
        )
    first, last = array.shape[0] in (1, 2, 3, 4), array.shape[-1] in (1, 2, 3, 4)
    if first and (prefer_channels_first or not last):
        return np.moveaxis(array, 0, -1)
    if last:
        return array
    raise ValueError(
        f"{name}: 3-D input of shape {tuple(array.shape)} has no channel axis of size 1-4 (first or last); "
        "expected (H, W), (H, W, C) or (C, H, W)"
    )


def _to_gray(array: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, C) raw values -> (H, W) float64 raw values: RGB(A) -> luma (alpha dropped), LA -> L."""
    if array.ndim == 2:
        return array.astype(np.float64)
    channels = array.shape[-1]
    if channels in (1, 2):
        return array[..., 0].astype(np.float64)
    rgb = array[..., :3]
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
        return rgb[..., 0].astype(np.float64)  # grayscale stored as RGB: exact, no weighting round-off
    return rgb.astype(np.float64) @ _LUMA_WEIGHTS


def _array_to_unit_gray(
    array: np.ndarray, name: str, do_rescale: bool, scaling: str, prefer_channels_first: bool = False
) -> np.ndarray:
    """Validate a raw array and turn it into an (H, W) float64 grayscale image, scaled to [0, 1] if `do_rescale`."""
    if (
        array.dtype == object
        or not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_)
        or np.iscomplexobj(array)
    ):
        raise ValueError(f"{name}: unsupported dtype {array.dtype}; expected integer, float or bool pixels")
    if array.size == 0:
        raise ValueError(f"{name}: is empty (shape {tuple(array.shape)})")
    array = _channels_last(array, prefer_channels_first, name)
    height, width = array.shape[:2]
    if height < 2 or width < 2:
        raise ValueError(
            f"{name}: is too small ({height}x{width} pixels); an image needs at least 2x2 pixels"
        )
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise ValueError(f"{name}: contains {bad} NaN or infinite value(s)")
    dtype = array.dtype
    if array.ndim == 3 and array.shape[-1] in (2, 4):
        array = array[..., : array.shape[-1] - 1]  # drop alpha before measuring the value range
    if not do_rescale:
        return _to_gray(array)
    low, high = _intensity_range(array, dtype, scaling)
    return _scale(_to_gray(array), low, high)


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


def _dicom_to_unit_gray(ds, name: str, scaling: str) -> np.ndarray:
    """A pydicom Dataset -> (H, W) float64 in [0, 1], bone bright (see `ClarityImageProcessor`, "DICOM")."""
    try:
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:  # pydicom 2.x
        from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut

    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ValueError(f"{name}: DICOM file has no pixel data")
    missing = _missing_dicom_decoder(ds, name)
    if missing is not None:
        raise ValueError(missing)
    try:
        pixels = ds.pixel_array
    except Exception as err:  # pydicom raises many types for bad or unsupported pixel data
        raise ValueError(
            f"{name}: DICOM pixel data could not be decoded ({type(err).__name__}: {err})"
        ) from err
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    if frames > 1:
        raise ValueError(
            f"{name}: multi-frame DICOM ({frames} frames) is not supported; pass one frame as an array instead"
        )
    if pixels.size == 0:
        raise ValueError(f"{name}: DICOM pixel data is empty (shape {tuple(pixels.shape)})")
    if pixels.ndim != (2 if samples == 1 else 3):
        raise ValueError(f"{name}: DICOM pixel data has unexpected shape {tuple(pixels.shape)}")
    if pixels.shape[0] < 2 or pixels.shape[1] < 2:
        raise ValueError(f"{name}: is too small ({pixels.shape[0]}x{pixels.shape[1]} pixels)")
    if (
        samples > 1
    ):  # colour DICOM (pydicom already converts YBR to RGB): luma, scaled by the stored bit depth
        bits = int(getattr(ds, "BitsStored", 8) or 8)
        return _scale(_to_gray(pixels), 0.0, float(2**bits - 1))

    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    values = np.asarray(apply_modality_lut(pixels, ds), dtype=np.float64)
    if np.issubdtype(pixels.dtype, np.floating) and not np.isfinite(values).all():
        raise ValueError(f"{name}: DICOM pixel data contains NaN or infinite values")

    voi_luts = getattr(ds, "VOILUTSequence", None)
    if voi_luts is not None and len(voi_luts) > 0:
        # VOI LUT table: pydicom applies it; its output spans the table's bit depth (LUT Descriptor, 3rd value).
        out = np.asarray(apply_voi_lut(values, ds, index=0, prefer_lut=True), dtype=np.float64)
        lut_bits = int(voi_luts[0].LUTDescriptor[2])
        unit = _scale(out, 0.0, float(2**lut_bits - 1))
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        center, width = _first_value(ds.WindowCenter), _first_value(ds.WindowWidth)
        function = str(getattr(ds, "VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
        if function == "SIGMOID":
            unit = 1.0 / (1.0 + np.exp(-4.0 * (values - center) / max(width, 1e-12)))
        elif function == "LINEAR_EXACT":
            unit = np.clip((values - center) / max(width, 1e-12) + 0.5, 0.0, 1.0)
        else:  # LINEAR, DICOM PS3.3 C.11.2.1.2.1
            unit = np.clip((values - (center - 0.5)) / max(width - 1.0, 1e-12) + 0.5, 0.0, 1.0)
    else:
        low, high = _dicom_value_range(ds, pixels, values)
        unit = _scale(values, low, high)
    if (
        photometric == "MONOCHROME1"
    ):  # low values are bright: invert so that bone is bright, as in MONOCHROME2
        unit = 1.0 - unit
    if scaling == "minmax":
        unit = _scale(unit, float(unit.min()), float(unit.max()))
    return unit


def _dicom_value_range(ds, pixels: np.ndarray, values: np.ndarray) -> tuple[float, float]:
    """The range of values the stored bits can hold, after the modality transform (slope / intercept)."""
    if "ModalityLUTSequence" in ds or np.issubdtype(pixels.dtype, np.floating):
        return float(values.min()), float(values.max())  # no bit-depth bound: the actual range
    bits = int(getattr(ds, "BitsStored", 0) or 0) or 8 * pixels.dtype.itemsize
    if int(getattr(ds, "PixelRepresentation", 0) or 0) == 1:
        stored = (-(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1)
    else:
        stored = (0.0, 2.0**bits - 1)
    slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
    ends = [stored[0] * slope + intercept, stored[1] * slope + intercept]
    return min(ends), max(ends)


def _read_dicom_file(path: Path, name: str, scaling: str) -> np.ndarray:
    pydicom = _require_pydicom()
    try:
        ds = pydicom.dcmread(str(path), force=True)
    except Exception as err:
        raise ValueError(f"{name}: is not a readable DICOM file ({type(err).__name__}: {err})") from err
    return _dicom_to_unit_gray(ds, name, scaling)


def _read_image_file(path: Path, name: str) -> np.ndarray:
    try:
        with Image.open(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
            return _pil_to_array(image)
    except Image.UnidentifiedImageError as err:
        raise ValueError(
            f"{name}: is not an image file PIL can read (PNG, JPEG, ...) nor a DICOM file"
        ) from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"{name}: image file could not be decoded ({type(err).__name__}: {err})") from err


def load_unit_gray(item, index: int = 0, do_rescale: bool = True, scaling: str = "bit_depth") -> np.ndarray:
    """Any supported input -> (H, W) float64, in [0, 1] when `do_rescale` (DICOMs always); see
    `ClarityImageProcessor`'s docstring for the intensity rules. Raises ValueError naming the input."""
    name = _describe(item, index)
    if isinstance(item, (str, os.PathLike)):
        path = Path(os.fspath(item)).expanduser()
        if not path.exists():
            raise ValueError(f"{name}: no such file")
        if path.is_dir():
            raise ValueError(f"{name}: is a directory, not an image file")
        try:
            is_dicom = _is_dicom_file(path)
        except OSError as err:
            raise ValueError(f"{name}: could not be read ({err})") from err
        if is_dicom:
            return _read_dicom_file(path, name, scaling)
        return _array_to_unit_gray(_read_image_file(path, name), name, do_rescale, scaling)
    if type(item).__module__.startswith("pydicom") and type(item).__name__ in ("Dataset", "FileDataset"):
        return _dicom_to_unit_gray(item, name, scaling)
    if isinstance(item, Image.Image):
        try:
            array = _pil_to_array(item)
        except (OSError, ValueError) as err:
            raise ValueError(f"{name}: PIL image could not be decoded ({err})") from err
        return _array_to_unit_gray(array, name, do_rescale, scaling)
    if isinstance(item, torch.Tensor):
        tensor = item.detach().cpu()
        if tensor.is_floating_point() and tensor.dtype != torch.float64:
            tensor = tensor.float()
        return _array_to_unit_gray(tensor.numpy(), name, do_rescale, scaling, prefer_channels_first=True)
    if isinstance(item, np.ndarray):
        return _array_to_unit_gray(item, name, do_rescale, scaling)
    raise ValueError(
        f"{name}: unsupported input; expected a PIL image, a numpy array, a torch tensor, a pydicom Dataset or the "
        "path of a PNG / JPEG / DICOM file"
    )


__all__ = ["load_unit_gray"]
