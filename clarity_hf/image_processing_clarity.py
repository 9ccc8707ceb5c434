# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Image processor for CLARiTy: chest X-ray files in, pixel_values out; logits / heatmaps in, scores, heatmaps and
boxes out. Imports only numpy, PIL, torch, transformers and its sibling Hub files `xray_io` (decoding) and
`heatmaps` (normalise, upsample, boxes), relatively.

This file is one of the Hub code files: it relies only on the public, stable parts of `transformers`
(`BaseImageProcessor` for save / load and `BatchFeature`), so that the same file runs on transformers 4.57 and 5.x.
`ClarityImageProcessor` overrides `__init__`, `__call__`, `preprocess` and `to_dict` itself and never uses the 5.x
backend machinery (which needs torchvision for `ViTImageProcessor`).
"""

import copy
import math

import numpy as np
import torch
from PIL import Image
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature, get_size_dict
from transformers.image_utils import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    validate_preprocess_arguments,
)
from transformers.processing_utils import ImagesKwargs

from .heatmaps import (
    DEFAULT_BOX_RESOLUTION,
    check_unit_interval,
    class_boxes,
    heatmap_to_boxes,
    heatmaps_at_size,
    normalize_heatmap,
    upsample_heatmaps,
)
from .xray_io import _INTENSITY_SCALINGS, ImageDecodeError, load_unit_gray, resolve_max_image_pixels

_RESAMPLE_BY_NAME = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
# Keyword arguments that transformers (or users following the usual image-processor idiom) may pass and that have no
# meaning here: accepted and ignored.
_IGNORED_KWARGS = (
    "data_format",
    "input_data_format",
    "device",
    "do_convert_rgb",
    "do_center_crop",
    "crop_size",
)


def _flatten_images(images) -> list:
    """A single input or a (nested) list of inputs -> flat list; 4-D arrays / tensors are split into images.

    Not transformers' `make_flat_list_of_images`: that one refuses file paths, DICOM datasets, bytes and 2-D (gray)
    arrays, which are this processor's usual inputs."""
    if isinstance(images, (list, tuple)):
        flat = []
        for item in images:
            flat.extend(_flatten_images(item))
        return flat
    if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
        return list(images)
    return [images]


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _resolve_size(size) -> tuple[int, int]:
    """An int, (height, width) or {"height", "width"} / {"shortest_edge"} -> (height, width), both positive.

    transformers' `get_size_dict` reads the forms; the checks it leaves out (exactly two sides, positive ints, not
    bools, `shortest_edge` alone as a square) are made here."""
    try:
        value = size
        if hasattr(size, "keys"):  # a mapping; sides left unset (None) are dropped
            value = {key: side for key, side in dict(size).items() if side is not None}
        if isinstance(value, (list, tuple)) and len(value) != 2:
            raise ValueError(value)
        size_dict = get_size_dict(int(value) if _is_int(value) else value, param_name="size")
    except (TypeError, ValueError):
        size_dict = {}
    if set(size_dict) == {"shortest_edge"}:
        size_dict = {"height": size_dict["shortest_edge"], "width": size_dict["shortest_edge"]}
    sides = (size_dict.get("height"), size_dict.get("width"))
    if not all(_is_int(side) and side > 0 for side in sides):
        raise ValueError(
            f"size must be a positive int or {{'height': H, 'width': W}} with positive ints, got {size!r}"
        )
    return int(sides[0]), int(sides[1])


def _resolve_resample(resample) -> Image.Resampling:
    """A filter name ("bilinear", ...) or a `PIL.Image.Resampling` value -> that value."""
    if isinstance(resample, str) and resample.lower() in _RESAMPLE_BY_NAME:
        return _RESAMPLE_BY_NAME[resample.lower()]
    if _is_int(resample) and int(resample) in {int(value) for value in Image.Resampling}:
        return Image.Resampling(int(resample))
    raise ValueError(
        f"resample must be one of {sorted(_RESAMPLE_BY_NAME)} or a PIL.Image.Resampling value, got {resample!r}"
    )


def _check_bool(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _check_statistics(name: str, values, positive: bool) -> list[float]:
    """image_mean / image_std: one number or 3 (one per output channel), finite; std strictly positive."""
    if isinstance(values, (int, float, np.number)) and not isinstance(values, bool):
        values = [values] * 3
    try:
        values = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number or 3 numbers, got {values!r}") from None
    if len(values) != 3:
        raise ValueError(f"{name} needs 3 values (the output has 3 channels), got {len(values)}: {values}")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{name} must be finite, got {values}")
    if positive and min(values) <= 0:
        raise ValueError(f"{name} must be positive (it divides the pixels), got {values}")
    return values


def _check_intensity_scaling(value) -> str:
    if value not in _INTENSITY_SCALINGS:
        raise ValueError(f"intensity_scaling must be one of {_INTENSITY_SCALINGS}, got {value!r}")
    return value


def _check_unit_thresholds(name: str, value):
    """A float in [0, 1], or a list of them (one per class); a `ValueError` naming `name` otherwise."""
    if isinstance(value, (list, tuple, np.ndarray, torch.Tensor)):
        return [check_unit_interval(v, name) for v in list(value)]
    return check_unit_interval(value, name)


# `config.problem_type` -> how logits become scores: the one mapping every scoring path reads (the processor, both
# pipelines, clarity-predict, the Space, the ONNX metadata). `None` is multi-label, as the model's loss treats it.
SCORE_FUNCTIONS = {
    None: "sigmoid",
    "multi_label_classification": "sigmoid",
    "single_label_classification": "softmax",
    "regression": "identity",
}


def score_function(problem_type) -> str:
    """The name of the score function of `problem_type`: "sigmoid", "softmax" or "identity"."""
    if problem_type not in SCORE_FUNCTIONS:
        raise ValueError(
            f"problem_type must be one of {[k for k in SCORE_FUNCTIONS if k]} or None, got {problem_type!r}"
        )
    return SCORE_FUNCTIONS[problem_type]


def scores_from_logits(logits, problem_type=None) -> torch.Tensor:
    """(..., C) logits -> float32 scores along the last axis: sigmoid (multi-label, and `None`), softmax
    (single-label) or the logits themselves (regression)."""
    logits = torch.as_tensor(logits).detach().float().cpu()
    name = score_function(problem_type)
    if name == "sigmoid":
        return torch.sigmoid(logits)
    if name == "softmax":
        return torch.softmax(logits, dim=-1)
    return logits


def label_names(id2label, num_classes: int) -> list[str]:
    """The C names of `id2label` (a model config's; JSON string keys work too), in logit order; `LABEL_i` without
    one. A `ValueError` when the mapping does not name exactly the C outputs: scores never get another model's
    names."""
    if id2label is None:
        return [f"LABEL_{index}" for index in range(num_classes)]
    mapping = {int(k): str(v) for k, v in dict(id2label).items()}
    if sorted(mapping) != list(range(num_classes)):
        raise ValueError(
            f"id2label names {len(mapping)} labels but the model outputs {num_classes} scores: pass the id2label of "
            "the model that made these outputs (model.config.id2label)"
        )
    return [mapping[index] for index in range(num_classes)]


def resize_unit_gray(
    image: np.ndarray, size: tuple[int, int], resample, box=None, clip: bool = True
) -> np.ndarray:
    """(H, W) float image -> (height, width) float32, resampled by PIL on a float32 ('F') image, so no 8-bit
    round-off; `box` (left, top, right, bottom) in source pixels resizes that region only (PIL's `box`). `clip`
    clips to [0, 1] (bicubic / lanczos overshoot). The one resize of the processor and the training transform."""
    height, width = size
    resized = Image.fromarray(np.asarray(image, dtype=np.float32)).resize(
        (int(width), int(height)), resample=_resolve_resample(resample), box=box
    )
    out = np.asarray(resized, dtype=np.float32)
    return np.clip(out, 0.0, 1.0) if clip else out


class ClarityImageProcessorKwargs(ImagesKwargs, total=False):
    """The processor's own arguments, beyond transformers' `ImagesKwargs`.

    intensity_scaling (`str`): "bit_depth" or "minmax" (see `ClarityImageProcessor`, "Intensities").
    max_image_pixels (`int`): refuse files whose header declares more pixels (see `clarity_hf.xray_io`).
    return_original_sizes (`bool`): also return the (height, width) of every input.
    heatmap_threshold (`float` or `list[float]`): threshold of the boxes in [0, 1].
    box_min_area (`int`): smallest connected component that gives a box.
    """

    intensity_scaling: str | None
    max_image_pixels: int | None
    return_original_sizes: bool | None
    heatmap_threshold: float | list[float] | None
    box_min_area: int | None


def _get_output(outputs, key: str):
    """`outputs[key]` for ModelOutputs and dicts, `outputs.key` for other objects."""
    if isinstance(outputs, (tuple, list)) and not hasattr(outputs, "keys"):
        raise ValueError(
            f"post-processing needs the model output as a ModelOutput or dict with `{key}`, got a "
            f"{type(outputs).__name__}; call the model with return_dict=True"
        )
    try:
        value = outputs[key]
    except (KeyError, TypeError):
        value = getattr(outputs, key, None)
    if value is None:
        raise ValueError(
            f"post-processing needs `{key}` in the model outputs (keys: {list(getattr(outputs, 'keys', list)())})"
        )
    return torch.as_tensor(value)


def _target_sizes_list(target_sizes, batch_size: int) -> list[tuple[int, int]] | None:
    """`target_sizes` as one (height, width) pair of positive integers per image, or None; a `ValueError` naming
    the argument for anything else (an int instead of pairs, a wrong count, zero, negative or fractional sizes)."""
    if target_sizes is None:
        return None
    if isinstance(target_sizes, (torch.Tensor, np.ndarray)):
        target_sizes = target_sizes.tolist()
    if not isinstance(target_sizes, (list, tuple)):
        raise ValueError(
            f"target_sizes must be a list of (height, width) pairs, one per image, got {target_sizes!r}"
        )
    sizes = []
    for size in target_sizes:
        if isinstance(size, (torch.Tensor, np.ndarray)):
            size = size.tolist()
        if not isinstance(size, (list, tuple)) or len(size) != 2:
            raise ValueError(f"target_sizes: each target size must be a (height, width) pair, got {size!r}")
        try:
            pair = tuple(float(v) for v in size)
        except (TypeError, ValueError) as err:
            raise ValueError(f"target_sizes: (height, width) must be numbers, got {size!r}") from err
        if not all(math.isfinite(v) and v >= 1 and v == int(v) for v in pair):
            raise ValueError(f"target_sizes: (height, width) must be positive integers, got {size!r}")
        sizes.append((int(pair[0]), int(pair[1])))
    if len(sizes) != batch_size:
        raise ValueError(f"target_sizes: got {len(sizes)} target sizes for a batch of {batch_size} images")
    return sizes


class ClarityImageProcessor(BaseImageProcessor):
    r"""
    Image processor for CLARiTy chest X-ray models.

    Preprocessing (`__call__` / `preprocess`): each input becomes one grayscale float image in [0, 1], is resized to
    `size` on a float32 ('F') PIL image (no 8-bit round-off), repeated to 3 channels and normalised with
    `image_mean` / `image_std`; the result is `pixel_values` (B, 3, H, W) float32.

    Inputs: a single image or a (nested) list of them; 4-D arrays / tensors are batches.
        - PIL images of modes L, I;16 (and I;16B/L), I, F, RGB, RGBA, P, PA, LA, 1, and anything PIL can convert to RGB.
        - numpy arrays (H, W), (H, W, C) (or (C, H, W)), C in 1..4, of integer, float or bool dtype.
        - torch tensors (H, W), (C, H, W) or (H, W, C) (C first is preferred where both fit).
        - paths (str / Path) of PNG, JPEG or other PIL-readable files (EXIF orientation applied), and of DICOM files
          (recognised by the `DICM` marker or a .dcm / .dicom / .dic suffix), and pydicom Datasets.
        - encoded file bytes, and `{"bytes", "path"}` dicts (a `datasets` Image column read with `decode=False`).
    Decoding is `xray_io.load_unit_gray`, shared with training and the dataset cache.

    Grayscale: RGB(A) becomes ITU-R 601-2 luma (0.299 R + 0.587 G + 0.114 B) computed in float; alpha is dropped;
    an RGB image whose three channels are equal keeps its values exactly.

    Intensities (`do_rescale=True`, `intensity_scaling="bit_depth"`): uint8 / 8-bit data are divided by 255. Other
    unsigned integer data (16-bit PNGs, I;16, uint16 arrays) carry no bit depth, so it is inferred from the maximum:
    the smallest of 8, 10, 12, 14, 16 bits (above 16: exact) that holds it, and the data are divided by
    2**bits - 1 (12-bit data stored in 16 bits are scaled by 4095, full-range 16-bit data by 65535). Floats in
    [0, 1] are kept, floats in [0, 255] are divided by 255, floats up to 65535 are scaled like integers; data with
    negative values or beyond 65535 are min-max scaled. `intensity_scaling="minmax"` min-max scales every image
    instead; `do_rescale=False` uses the values as they are (e.g. already in [0, 1]).

    DICOM (pydicom, imported only when a DICOM is read): the modality LUT (Rescale Slope / Intercept or a Modality
    LUT Sequence) is applied; then the VOI transform: a VOI LUT Sequence (scaled by its bit depth), else the first
    window (Window Center / Width, VOI LUT Function LINEAR, LINEAR_EXACT or SIGMOID) maps straight to [0, 1], else
    the range that Bits Stored can hold (signed or unsigned, through slope / intercept) maps to [0, 1] (12-bit data
    by 4095, 16-bit by 65535). MONOCHROME1 images are inverted last so that bone is bright, as in MONOCHROME2.
    Colour DICOMs are converted to luma. Multi-frame DICOMs are rejected. DICOM data are always mapped to [0, 1] this
    way, whatever `do_rescale` says.

    Bad inputs (empty, smaller than 2x2, NaN / inf, wrong rank or channel count, missing / unreadable /
    non-image files, corrupt DICOMs or DICOM attributes, files whose header declares more than `max_image_pixels`
    pixels, unsupported types) raise `clarity_hf.xray_io.ImageDecodeError` (a `ValueError`) that names the input
    (its path, or "input #i of type ...") and the problem. Bad argument values raise a `ValueError` naming the
    argument.

    `return_original_sizes=True` adds `original_sizes`, (B, 2) (height, width) of the inputs, for the
    post-processing methods. It is off by default because pipelines pass every returned key to the model, whose
    forward does not take it.

    Post-processing: `post_process_image_classification` (a score per label, by the model's `problem_type`),
    `post_process_heatmaps` (per image (C, H, W) maps at the original size) and the ObjectDetectionPipeline-compatible
    `post_process_object_detection` (boxes from connected components of the thresholded heatmaps).

    Args:
        do_resize (`bool`, defaults to `True`): resize to `size`.
        size (`dict[str, int]`, defaults to `{"height": 224, "width": 224}`): output size (an int means square).
        resample (`int` or `str`, defaults to `2` = bilinear, the training recipes' filter): PIL resampling filter
            (`"bilinear"`, `"bicubic"`, ... or a `PIL.Image.Resampling` value); applied to float32 images, results
            clipped to [0, 1].
        do_rescale (`bool`, defaults to `True`): scale intensities to [0, 1] as described above.
        intensity_scaling (`str`, defaults to `"bit_depth"`): `"bit_depth"` or `"minmax"`.
        do_normalize (`bool`, defaults to `True`): subtract `image_mean`, divide by `image_std` per channel.
        image_mean (`list[float]`, defaults to ImageNet's): per-channel mean.
        image_std (`list[float]`, defaults to ImageNet's): per-channel std.
        heatmap_threshold (`float` or `list[float]`, defaults to 0.5): threshold on the [0, 1]-normalised heatmap
            for the boxes of `post_process_object_detection` (one value, or one per class: tuned thresholds can be
            saved with the processor).
        box_min_area (`int`, defaults to 1): smallest connected component (in target pixels) that gives a box.
        max_image_pixels (`int`, *optional*): refuse files and DICOM Datasets whose header declares more pixels
            (height x width x frames), before decoding them; `None` uses `$CLARITY_MAX_IMAGE_PIXELS`, else
            8192 x 8192 (`clarity_hf.xray_io.DEFAULT_MAX_IMAGE_PIXELS`).
    """

    model_input_names = ["pixel_values"]
    valid_kwargs = ClarityImageProcessorKwargs
    # The arguments `preprocess` takes (transformers' argument-validation test compares the two).
    _valid_processor_keys = [
        "images",
        "do_resize",
        "size",
        "resample",
        "do_rescale",
        "intensity_scaling",
        "do_normalize",
        "image_mean",
        "image_std",
        "max_image_pixels",
        "return_tensors",
        "return_original_sizes",
    ]

    def __init__(
        self,
        do_resize: bool = True,
        size: dict | int | None = None,
        resample: int | str = Image.Resampling.BILINEAR,
        do_rescale: bool = True,
        intensity_scaling: str = "bit_depth",
        do_normalize: bool = True,
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        heatmap_threshold: float | list[float] = 0.5,
        box_min_area: int = 1,
        max_image_pixels: int | None = None,
        **kwargs,
    ):
        kwargs.pop("image_processor_type", None)
        # Labels are the model config's alone; older folders saved a copy here, which is not read.
        kwargs.pop("id2label", None)
        kwargs.pop("label2id", None)
        do_convert_rgb = kwargs.pop("do_convert_rgb", None)
        for key in ("rescale_factor", "do_center_crop", "crop_size"):
            kwargs.pop(key, None)  # keys a generic image-processor config may carry; meaningless here
        super().__init__(**kwargs)
        if do_convert_rgb is not None:  # recorded as transformers does; every image becomes gray regardless
            self.do_convert_rgb = _check_bool("do_convert_rgb", do_convert_rgb)
        height, width = _resolve_size(224 if size is None else size)
        self.do_resize = _check_bool("do_resize", do_resize)
        self.size = {"height": height, "width": width}
        self.resample = int(_resolve_resample(resample))
        self.do_rescale = _check_bool("do_rescale", do_rescale)
        self.intensity_scaling = _check_intensity_scaling(intensity_scaling)
        self.do_normalize = _check_bool("do_normalize", do_normalize)
        self.image_mean = _check_statistics(
            "image_mean", IMAGENET_DEFAULT_MEAN if image_mean is None else image_mean, positive=False
        )
        self.image_std = _check_statistics(
            "image_std", IMAGENET_DEFAULT_STD if image_std is None else image_std, positive=True
        )
        self.heatmap_threshold = _check_unit_thresholds("heatmap_threshold", heatmap_threshold)
        if not _is_int(box_min_area) or box_min_area < 0:
            raise ValueError(f"box_min_area must be a non-negative int, got {box_min_area!r}")
        self.box_min_area = int(box_min_area)
        if max_image_pixels is not None:
            max_image_pixels = resolve_max_image_pixels(max_image_pixels)
        self.max_image_pixels = max_image_pixels

    def to_dict(self) -> dict:
        """The processor's configuration (what `save_pretrained` writes to `preprocessor_config.json`)."""
        output = {}
        for key, value in self.__dict__.items():
            if key.startswith("_"):
                continue
            if hasattr(value, "keys") and not isinstance(value, dict):  # transformers 5.x SizeDict
                value = dict(value)
            output[key] = copy.deepcopy(value)
        output["image_processor_type"] = type(self).__name__
        return output

    def __call__(self, images=None, **kwargs) -> BatchFeature:
        """Preprocess an image or a batch of images (see `preprocess`)."""
        return self.preprocess(images, **kwargs)

    def preprocess(
        self,
        images=None,
        do_resize: bool | None = None,
        size: dict | int | None = None,
        resample: int | str | None = None,
        do_rescale: bool | None = None,
        intensity_scaling: str | None = None,
        do_normalize: bool | None = None,
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        max_image_pixels: int | None = None,
        return_tensors=None,
        return_original_sizes: bool = False,
        **kwargs,
    ) -> BatchFeature:
        """
        Preprocess one image or a list of images into `pixel_values`.

        Args:
            images: one input or a (nested) list of inputs (see the class docstring).
            do_resize, size, resample, do_rescale, intensity_scaling, do_normalize, image_mean, image_std,
            max_image_pixels: override the processor's settings for this call (checked as in `__init__`).
            return_tensors (`str`, *optional*): `"pt"` (torch) or `"np"`; `None` gives a list of numpy arrays.
            return_original_sizes (`bool`, defaults to `False`): also return `original_sizes`, the (height, width) of
                every input, to pass as `target_sizes` to the post-processing methods.

        Returns:
            `BatchFeature` with `pixel_values` (B, 3, H, W) float32 (and `original_sizes` (B, 2) when asked).
        """
        if "image" in kwargs and images is None:
            images = kwargs.pop("image")
        for key in _IGNORED_KWARGS:
            kwargs.pop(key, None)
        if kwargs:
            raise TypeError(
                f"ClarityImageProcessor.preprocess got unexpected keyword arguments {sorted(kwargs)}"
            )
        do_resize = _check_bool("do_resize", self.do_resize if do_resize is None else do_resize)
        height, width = _resolve_size(self.size if size is None else size)
        resample = _resolve_resample(self.resample if resample is None else resample)
        do_rescale = _check_bool("do_rescale", self.do_rescale if do_rescale is None else do_rescale)
        intensity_scaling = _check_intensity_scaling(
            self.intensity_scaling if intensity_scaling is None else intensity_scaling
        )
        do_normalize = _check_bool(
            "do_normalize", self.do_normalize if do_normalize is None else do_normalize
        )
        _check_bool("return_original_sizes", return_original_sizes)
        mean = np.asarray(
            _check_statistics("image_mean", self.image_mean if image_mean is None else image_mean, False),
            dtype=np.float32,
        ).reshape(-1, 1, 1)
        std = np.asarray(
            _check_statistics("image_std", self.image_std if image_std is None else image_std, True),
            dtype=np.float32,
        ).reshape(-1, 1, 1)
        max_image_pixels = resolve_max_image_pixels(
            self.max_image_pixels if max_image_pixels is None else max_image_pixels
        )
        # transformers' check that every enabled step has its arguments (as ViT's processor does); the values
        # themselves are checked above.
        validate_preprocess_arguments(
            do_normalize=do_normalize,
            image_mean=mean,
            image_std=std,
            do_resize=do_resize,
            size={"height": height, "width": width},
            resample=resample,
        )

        if images is None:
            raise ValueError("no images given: pass `images=` one image or a list of images")
        flat = _flatten_images(images)
        if not flat:
            raise ValueError("no images given: `images` is an empty list")

        pixel_values, original_sizes = [], []
        for index, item in enumerate(flat):
            # float32 from the reader: the values the float64 image would round to, at half its memory
            image = load_unit_gray(
                item, index, do_rescale, intensity_scaling, max_image_pixels, dtype=np.float32
            )
            original_sizes.append(image.shape)
            if do_resize and image.shape != (height, width):
                image = resize_unit_gray(image, (height, width), resample, clip=do_rescale)
            image = np.repeat(image[None], 3, axis=0)
            if do_normalize:
                image = (image - mean) / std
            pixel_values.append(image.astype(np.float32))

        if return_tensors is not None:
            shapes = {value.shape for value in pixel_values}
            if len(shapes) > 1:
                raise ValueError(
                    f"images of different sizes {sorted(shapes)} cannot be stacked; use do_resize=True or "
                    "return_tensors=None"
                )
            data = {"pixel_values": np.stack(pixel_values)}
            if return_original_sizes:
                data["original_sizes"] = np.asarray(original_sizes, dtype=np.int64)
        else:
            data = {"pixel_values": pixel_values}
            if return_original_sizes:
                data["original_sizes"] = [tuple(int(v) for v in size) for size in original_sizes]
        return BatchFeature(data=data, tensor_type=return_tensors)

    # ----------------------------------------------------------------------------------------------------------------
    # Post-processing
    # ----------------------------------------------------------------------------------------------------------------

    def post_process_image_classification(
        self, outputs, top_k: int | None = None, id2label: dict | None = None, problem_type: str | None = None
    ):
        """
        Scores per label: `scores_from_logits` of `outputs.logits` (B, C) for the model's `problem_type` (sigmoid
        for multi-label and `None`, softmax for single-label, the logits for regression).

        Args:
            outputs: the model output (ModelOutput or dict) with `logits`.
            top_k (`int`, *optional*): keep the k best labels per image (default: all C).
            id2label (`dict[int, str]`, *optional*): the model's `config.id2label` (the processor keeps no labels);
                without it the labels are `LABEL_i`. A mapping that does not name the C outputs is a `ValueError`.
            problem_type (`str`, *optional*): the model's `config.problem_type`.

        Returns:
            `list[list[dict]]`: per image, `{"label": str, "score": float}` for each class, highest score first.
        """
        logits = _get_output(outputs, "logits").detach().float().cpu()
        if logits.dim() == 1:
            logits = logits[None]
        labels = label_names(id2label, logits.shape[-1])
        results = []
        for scores in scores_from_logits(logits, problem_type).tolist():
            entries = sorted(
                ({"label": label, "score": score} for label, score in zip(labels, scores)),
                key=lambda entry: entry["score"],
                reverse=True,
            )
            results.append(entries if top_k is None else entries[: max(int(top_k), 0)])
        return results

    def post_process_heatmaps(
        self,
        outputs,
        target_sizes=None,
        normalize: bool = True,
        classes: list[int] | None = None,
        as_uint8: bool = False,
    ) -> list[torch.Tensor]:
        """
        Class heatmaps at the original image size.

        Args:
            outputs: the model output (ModelOutput or dict) with `heatmaps` (B, C, h, w), or that tensor itself.
            target_sizes (*optional*): (height, width) per image ((B, 2) tensor or list), e.g. the processor's
                `original_sizes`; `None` keeps the model's (h, w) grid.
            normalize (`bool`, defaults to `True`): min-max normalise each upsampled map to [0, 1] (a constant map
                becomes zeros), as in the localisation protocol.
            classes (`list[int]`, *optional*): only these class indices, in this order (default: all C); the other
                classes are never upsampled.
            as_uint8 (`bool`, defaults to `False`): return round(255 * normalised map) as uint8, upsampling one
                class at a time (a 2000 x 2000 image then never holds more than one float map at full size).

        Returns:
            `list[torch.Tensor]`: per image a (K, H, W) tensor (float32, or uint8 with `as_uint8`), bilinearly
            upsampled from the model's grid (`heatmaps_at_size`).
        """
        heatmaps = outputs if isinstance(outputs, torch.Tensor) else _get_output(outputs, "heatmaps")
        heatmaps = heatmaps.detach().float().cpu()
        if heatmaps.dim() != 4:
            raise ValueError(f"heatmaps must be (B, C, h, w), got shape {tuple(heatmaps.shape)}")
        sizes = _target_sizes_list(target_sizes, heatmaps.shape[0])
        if classes is not None:
            classes = [int(c) for c in classes]
            bad = [c for c in classes if not 0 <= c < heatmaps.shape[1]]
            if bad:
                raise ValueError(f"classes: indices {bad} are outside 0..{heatmaps.shape[1] - 1}")
            heatmaps = heatmaps[:, classes]
        return [
            heatmaps_at_size(heatmaps[index], None if sizes is None else sizes[index], normalize, as_uint8)
            for index in range(heatmaps.shape[0])
        ]

    def post_process_object_detection(
        self,
        outputs,
        threshold: float = 0.5,
        target_sizes=None,
        heatmap_threshold: float | list[float] | None = None,
        class_threshold: float | None = None,
        top_k: int | None = None,
        min_area: int | None = None,
        box_resolution: int | None = DEFAULT_BOX_RESOLUTION,
        problem_type: str | None = None,
    ) -> list[dict[str, torch.Tensor]]:
        """
        Boxes from the class heatmaps, in the format of transformers' `ObjectDetectionPipeline`.

        For each image and each class c with score p_c >= max(threshold, class_threshold) (p_c is
        `scores_from_logits` for `problem_type`: sigmoid(logit_c) for a multi-label model),
        the heatmap of c is upsampled (bilinear) to the target size, min-max normalised to [0, 1], thresholded at
        `heatmap_threshold` (`>=`) and split into 8-connected components (`heatmap_to_boxes`); each component gives
        one box, its bounding rectangle. The box's score is p_c times the component's peak normalised heat, so the
        hottest component of a class scores exactly p_c and weaker secondary components score lower; boxes scoring
        below `threshold` are dropped. (Box scores never exceed p_c, so classes below `threshold` are skipped
        without computing their maps.)

        Images larger than `box_resolution` (longest side) are handled in a frame of that longest side and the boxes
        scaled back to the target size, so post-processing costs the same for any image size; box edges then differ
        from the exact computation by about one frame pixel (side / 512 by default). `box_resolution=None` computes
        at the target size itself (exact, and slow for large images).

        Args:
            outputs: the model output (ModelOutput or dict) with `logits` (B, C) and `heatmaps` (B, C, h, w).
            threshold (`float`, defaults to 0.5): smallest box score kept (the pipeline's `threshold`), in [0, 1].
            target_sizes (*optional*): (height, width) per image ((B, 2) tensor or list): boxes in those pixels.
                `None` gives boxes relative to the image, in [0, 1] (as DETR's post-processing).
            heatmap_threshold (`float` or per-class `list[float]`, *optional*): defaults to the processor's
                `heatmap_threshold` (0.5); each in [0, 1].
            class_threshold (`float`, *optional*): extra lower bound on p_c (e.g. keep weak secondary boxes of
                confident classes with `threshold=0.1, class_threshold=0.5`).
            top_k (`int`, *optional*): keep the k best boxes per image.
            min_area (`int`, *optional*): smallest component in target pixels (defaults to the processor's
                `box_min_area`).
            box_resolution (`int`, *optional*, defaults to 512): longest side of the frame boxes are computed in;
                `None` for the exact computation at the target size.
            problem_type (`str`, *optional*): the model's `config.problem_type` (how p_c is computed).

        Returns:
            `list[dict]`: per image `{"scores": (K,) float32, "labels": (K,) int64 class indices, "boxes": (K, 4)
            float32 xyxy}`, highest score first; box corners are pixel edges (a box covering pixel columns
            x0..x1-1 has xmin=x0, xmax=x1).
        """
        logits = _get_output(outputs, "logits").detach().float().cpu()
        heatmaps = _get_output(outputs, "heatmaps").detach().float().cpu()
        if logits.dim() != 2 or heatmaps.dim() != 4 or heatmaps.shape[:2] != logits.shape:
            raise ValueError(
                f"expected logits (B, C) and heatmaps (B, C, h, w), got {tuple(logits.shape)} and "
                f"{tuple(heatmaps.shape)}"
            )
        batch, num_classes = logits.shape
        threshold = check_unit_interval(threshold, "threshold")
        class_floor = max(
            threshold,
            0.0 if class_threshold is None else check_unit_interval(class_threshold, "class_threshold"),
        )
        sizes = _target_sizes_list(target_sizes, batch)
        map_thresholds = _check_unit_thresholds(
            "heatmap_threshold", self.heatmap_threshold if heatmap_threshold is None else heatmap_threshold
        )
        if isinstance(map_thresholds, list):
            if len(map_thresholds) != num_classes:
                raise ValueError(
                    f"heatmap_threshold has {len(map_thresholds)} values for {num_classes} classes"
                )
        else:
            map_thresholds = [map_thresholds] * num_classes
        min_area = self.box_min_area if min_area is None else int(min_area)
        if box_resolution is not None and int(box_resolution) < 1:
            raise ValueError(f"box_resolution must be a positive int or None, got {box_resolution!r}")
        probabilities = scores_from_logits(logits, problem_type)

        results = []
        for index in range(batch):
            classes = torch.nonzero(probabilities[index] >= class_floor).flatten().tolist()
            found = class_boxes(
                heatmaps[index, classes],
                [map_thresholds[cls] for cls in classes],
                None if sizes is None else sizes[index],
                min_area=min_area,
                max_side=box_resolution,
            )
            all_boxes, all_scores, all_labels = [], [], []
            for cls, (boxes, peaks) in zip(classes, found):
                scores = float(probabilities[index, cls]) * peaks
                keep = scores >= threshold
                all_boxes.append(boxes[keep])
                all_scores.append(scores[keep])
                all_labels.append(np.full(int(keep.sum()), cls, dtype=np.int64))
            if all_boxes:
                boxes = np.concatenate(all_boxes).astype(np.float32)
                scores = np.concatenate(all_scores).astype(np.float32)
                labels = np.concatenate(all_labels)
            else:
                boxes = np.zeros((0, 4), dtype=np.float32)
                scores = np.zeros((0,), dtype=np.float32)
                labels = np.zeros((0,), dtype=np.int64)
            order = np.argsort(-scores, kind="stable")
            if top_k is not None:
                order = order[: max(int(top_k), 0)]
            results.append(
                {
                    "scores": torch.from_numpy(scores[order].copy()),
                    "labels": torch.from_numpy(labels[order].copy()),
                    "boxes": torch.from_numpy(boxes[order].copy()),
                }
            )
        return results


# `save_pretrained` then writes `auto_map` and copies this file and its relative imports (as remote-code models do).
ClarityImageProcessor.register_for_auto_class("AutoImageProcessor")

__all__ = [
    "SCORE_FUNCTIONS",
    "ClarityImageProcessor",
    "ClarityImageProcessorKwargs",
    "ImageDecodeError",
    "heatmap_to_boxes",
    "label_names",
    "normalize_heatmap",
    "resize_unit_gray",
    "score_function",
    "scores_from_logits",
    "upsample_heatmaps",
]
