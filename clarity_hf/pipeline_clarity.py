# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""The `chest-xray-localization` pipeline: one call gives the 14 scores, the class heatmaps at the image's original
size and the boxes of their connected components.

This file is shipped next to the weights (a Hub code file) and registered in `config.json` under `custom_pipelines`,
so that `pipeline("chest-xray-localization", model=repo_or_folder, trust_remote_code=True)` resolves it. It imports
only numpy, PIL, torch, transformers and its sibling `image_processing_clarity.py` (pydicom lazily, for `.dcm`).
"""

import os

import numpy as np
import torch
from PIL import Image
from transformers import Pipeline

from .image_processing_clarity import heatmap_to_boxes, upsample_heatmaps

PIPELINE_TASK = "chest-xray-localization"
CUSTOM_PIPELINES = {
    PIPELINE_TASK: {
        "impl": "pipeline_clarity.ClarityLocalizationPipeline",
        "pt": ["AutoModel"],
        "tf": [],
        "type": "image",
    }
}
DICOM_SUFFIXES = (".dcm", ".dicom")


def _dicom_to_image(path: str) -> Image.Image:
    """A DICOM file -> an 8-bit grayscale PIL image (VOI LUT / windowing when present, MONOCHROME1 inverted)."""
    try:
        import pydicom
        from pydicom.pixels import apply_voi_lut
    except ImportError as err:  # pragma: no cover - pydicom is a clarity_hf dependency
        raise ImportError(f"reading {path} needs pydicom: `pip install pydicom`") from err
    try:
        dataset = pydicom.dcmread(path)
        pixels = dataset.pixel_array
    except Exception as err:
        raise ValueError(f"{path}: not a readable DICOM image ({err})") from err
    pixels = np.asarray(apply_voi_lut(pixels, dataset), dtype=np.float32)
    if pixels.ndim == 3 and pixels.shape[-1] in (3, 4):
        pixels = pixels[..., :3].mean(-1)
    if pixels.ndim != 2:
        raise ValueError(f"{path}: expected a single 2-D frame, got pixel data of shape {pixels.shape}")
    low, high = float(pixels.min()), float(pixels.max())
    pixels = (pixels - low) / (high - low) if high > low else np.zeros_like(pixels)
    if getattr(dataset, "PhotometricInterpretation", "") == "MONOCHROME1":
        pixels = 1.0 - pixels
    return Image.fromarray(np.round(pixels * 255).astype(np.uint8), mode="L")


def load_xray(image) -> Image.Image:
    """A path (PNG, JPEG, DICOM), a PIL image or a (H, W) / (H, W, 3) uint8 array -> a grayscale PIL image."""
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no image file at {path}")
        if path.lower().endswith(DICOM_SUFFIXES):
            return _dicom_to_image(path)
        try:
            with Image.open(path) as opened:
                image = opened.copy()
        except Exception as err:
            raise ValueError(f"{path}: not a readable PNG/JPEG image ({err})") from err
    elif isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a path, a PIL image or a numpy array, got {type(image).__name__}")
    if image.mode in ("I;16", "I;16B", "I", "F"):
        array = np.asarray(image, dtype=np.float32)
        low, high = float(array.min()), float(array.max())
        array = (array - low) / (high - low) if high > low else np.zeros_like(array)
        return Image.fromarray(np.round(array * 255).astype(np.uint8), mode="L")
    return image.convert("L")


class ClarityLocalizationPipeline(Pipeline):
    """Chest X-ray multi-label classification with weakly-supervised localization.

    Each image gives a dict with:
        - `scores`: {pathology: sigmoid probability}, in the model's label order;
        - `heatmaps`: float32 array (C, H, W) in [0, 1] at the image's original size (`return_heatmaps=True`);
        - `boxes`: a list of {"label", "score", "box": {"xmin", "ymin", "xmax", "ymax"}} in original pixels, one
          per connected component of each class heatmap thresholded at `heatmap_threshold` (after min-max
          normalisation); `score` is the class probability, `peak` the component's peak heatmap value.

    Args (call time):
        heatmap_threshold (`float`, defaults to 0.5): threshold on the normalised heatmap.
        score_threshold (`float`, *optional*): only classes whose probability reaches it get boxes.
        classes (`list[str]`, *optional*): only these classes get boxes (default: every class).
        return_heatmaps (`bool`, defaults to `True`).
    """

    _load_processor = False
    _load_image_processor = True
    _load_feature_extractor = False
    _load_tokenizer = False

    def _sanitize_parameters(
        self, heatmap_threshold=None, score_threshold=None, classes=None, return_heatmaps=None, **kwargs
    ):
        postprocess = {}
        if heatmap_threshold is not None:
            if not 0.0 <= float(heatmap_threshold) <= 1.0:
                raise ValueError(f"heatmap_threshold must be in [0, 1], got {heatmap_threshold}")
            postprocess["heatmap_threshold"] = float(heatmap_threshold)
        if score_threshold is not None:
            postprocess["score_threshold"] = float(score_threshold)
        if classes is not None:
            known = set(self.model.config.id2label.values())
            unknown = [name for name in classes if name not in known]
            if unknown:
                raise ValueError(f"unknown classes {unknown}; known: {sorted(known)}")
            postprocess["classes"] = list(classes)
        if return_heatmaps is not None:
            postprocess["return_heatmaps"] = bool(return_heatmaps)
        return {}, {}, postprocess

    def preprocess(self, image):
        image = load_xray(image)
        inputs = self.image_processor(images=image.convert("RGB"), return_tensors="pt")
        inputs["original_size"] = (image.height, image.width)
        return inputs

    def _forward(self, model_inputs):
        original_size = model_inputs.pop("original_size")
        pixel_values = model_inputs["pixel_values"].to(self.model.device, self.model.dtype)
        outputs = self.model(pixel_values=pixel_values)
        return {"logits": outputs.logits, "heatmaps": outputs.heatmaps, "original_size": original_size}

    def postprocess(
        self, model_outputs, heatmap_threshold=0.5, score_threshold=None, classes=None, return_heatmaps=True
    ):
        labels = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        probabilities = torch.sigmoid(model_outputs["logits"][0].float()).tolist()
        scores = dict(zip(labels, probabilities))
        height, width = model_outputs["original_size"]
        heatmaps = upsample_heatmaps(model_outputs["heatmaps"][0].float().cpu(), (height, width)).numpy()
        boxes = []
        for index, label in enumerate(labels):
            if classes is not None and label not in classes:
                continue
            if score_threshold is not None and scores[label] < score_threshold:
                continue
            class_boxes, peaks = heatmap_to_boxes(heatmaps[index], heatmap_threshold)
            for (x0, y0, x1, y1), peak in zip(class_boxes.tolist(), peaks.tolist()):
                boxes.append(
                    {
                        "label": label,
                        "score": scores[label],
                        "peak": peak,
                        "box": {"xmin": x0, "ymin": y0, "xmax": x1, "ymax": y1},
                    }
                )
        result = {"scores": scores, "boxes": boxes}
        if return_heatmaps:
            result["heatmaps"] = heatmaps.astype(np.float32)
        return result


__all__ = ["ClarityLocalizationPipeline", "CUSTOM_PIPELINES", "PIPELINE_TASK", "load_xray"]
