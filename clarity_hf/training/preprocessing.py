# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""The run's image processor: the pixels training feeds the model, and the `preprocessor_config.json` saved with it.

Preprocessing travels with the model: a run that starts from a saved folder (`model_name_or_path`) keeps that
folder's `ClarityImageProcessor` (filter, mean / std, intensity scaling, pixel limit, box settings), unless an option
of the run (`image_mean`, `image_std`, `resample`) overrides a field; the size is always the model's `image_size`.
A run from a preset, a DINO checkpoint or a folder without a CLARiTy processor uses the recipe (`build_processor`:
ImageNet mean / std, bilinear), which is also `ClarityImageProcessor()`'s default. The log says which it is.
"""

from __future__ import annotations

import logging

from transformers.image_processing_utils import ImageProcessingMixin

from ..data.transforms import DEFAULT_RESAMPLE, build_processor
from ..image_processing_clarity import ClarityImageProcessor

__all__ = ["run_processor", "saved_processor"]

logger = logging.getLogger(__name__)
# The run's options that override a field of the starting folder's processor when set.
OVERRIDABLE = ("image_mean", "image_std", "resample")


def saved_processor(model_name_or_path: str | None) -> ClarityImageProcessor | None:
    """The `ClarityImageProcessor` saved with a model (folder or Hub id), or None when it has none (no
    `preprocessor_config.json`, or another model's processor such as a ConvNeXt teacher's)."""
    if not model_name_or_path:
        return None
    try:
        values, _ = ImageProcessingMixin.get_image_processor_dict(str(model_name_or_path))
    except (OSError, ValueError):
        return None
    if values.get("image_processor_type") != ClarityImageProcessor.__name__:
        return None
    values = {k: v for k, v in values.items() if k not in ("auto_map", "image_processor_type")}
    return ClarityImageProcessor(**values)


def run_processor(config, image_size: int, report=None) -> ClarityImageProcessor:
    """The processor of a run with training options `config` for a model of side `image_size` (see the module
    docstring); `report` (default: this module's logger at INFO) receives one line saying where the settings come
    from."""
    report = report or logger.info
    overrides = {name: getattr(config, name, None) for name in OVERRIDABLE}
    overrides = {name: value for name, value in overrides.items() if value is not None}
    base = saved_processor(getattr(config, "model_name_or_path", None))
    if base is None:
        processor = build_processor(
            image_size,
            overrides.get("image_mean"),
            overrides.get("image_std"),
            resample=overrides.get("resample", DEFAULT_RESAMPLE),
        )
        report(
            f"preprocessing: the recipe's (size {image_size}, resample {processor.resample}, mean "
            f"{processor.image_mean}, std {processor.image_std})"
        )
        return processor
    values = base.to_dict()
    for key in ("auto_map", "image_processor_type"):
        values.pop(key, None)
    kept = {
        name: values[name] for name in ("size", "resample", "image_mean", "image_std", "intensity_scaling")
    }
    processor = ClarityImageProcessor(**{**values, **overrides, "size": image_size})
    kept_fields = {k: v for k, v in kept.items() if k not in overrides and k != "size"}
    report(
        f"preprocessing: kept from {config.model_name_or_path}'s processor: {kept_fields}"
        + (f"; overridden by the run's options: {overrides}" if overrides else "")
        + (
            f"; size {kept['size']} -> {processor.size} (the model's image_size)"
            if kept["size"] != processor.size
            else ""
        )
    )
    return processor
