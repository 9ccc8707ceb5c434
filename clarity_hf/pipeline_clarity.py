# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""The pipelines of a CLARiTy folder: `chest-xray-localization` (scores, the class heatmaps at the image's original
size and the boxes of their connected components) and `image-classification` (the widget's task: scores only).

This file is shipped next to the weights (a Hub code file: `ClarityForMultiLabelLocalization.save_pretrained` copies
it and declares both tasks in `config.json` under `custom_pipelines`), so that
`pipeline("chest-xray-localization" or "image-classification", model=repo_or_folder, trust_remote_code=True)`
resolves these classes. Both read images with the image processor (`image_processing_clarity.py`, loaded by the
pipeline factory): DICOM, 16-bit PNG and the rest decode through `xray_io`, never through an 8-bit RGB copy. Scores
follow the model's `config.problem_type` and names its `config.id2label` (the processor's post-processing).
"""

import numpy as np
from transformers import Pipeline
from transformers.pipelines.image_classification import ClassificationFunction, ImageClassificationPipeline

PIPELINE_TASK = "chest-xray-localization"
CUSTOM_PIPELINES = {
    PIPELINE_TASK: {
        "impl": "pipeline_clarity.ClarityLocalizationPipeline",
        "pt": ["AutoModel"],
        "tf": [],
        "type": "image",
    },
    "image-classification": {
        "impl": "pipeline_clarity.ClarityImageClassificationPipeline",
        "pt": ["AutoModelForImageClassification"],
        "tf": [],
        "type": "image",
    },
}
# An explicit `function_to_apply` of the image-classification pipeline, as the problem type that scores that way.
_PROBLEM_TYPE_OF_FUNCTION = {
    ClassificationFunction.SIGMOID: "multi_label_classification",
    ClassificationFunction.SOFTMAX: "single_label_classification",
    ClassificationFunction.NONE: "regression",
}


def model_labels(config) -> list[str]:
    """The model's label names in logit order (`config.id2label`)."""
    return [config.id2label[i] for i in range(config.num_labels)]


def box_records(detection, labels, classes=None, box_as_list: bool = False, ndigits: int | None = None):
    """One image's `post_process_object_detection` result -> `[{"label", "score", "box"}]`, highest score first:
    the box record of the pipeline, `clarity-predict` (JSON and table) and the Space. `box` is
    `{"xmin", "ymin", "xmax", "ymax"}` (or `[xmin, ymin, xmax, ymax]` with `box_as_list`); `classes` keeps only
    boxes of those names; `ndigits` rounds scores to it and coordinates to 2 decimals."""
    records = []
    for score, label_index, box in zip(
        detection["scores"].tolist(), detection["labels"].tolist(), detection["boxes"].tolist()
    ):
        label = labels[int(label_index)]
        if classes is not None and label not in classes:
            continue
        if ndigits is not None:
            score, box = round(float(score), ndigits), [round(float(v), 2) for v in box]
        coordinates = list(box) if box_as_list else dict(zip(("xmin", "ymin", "xmax", "ymax"), box))
        records.append({"label": label, "score": score, "box": coordinates})
    return records


class ClarityLocalizationPipeline(Pipeline):
    """Chest X-ray multi-label classification with weakly-supervised localization.

    Inputs: whatever the `ClarityImageProcessor` reads: a path (PNG, JPEG, DICOM), a PIL image, a numpy array or a
    tensor, or a list of them. Each image gives a dict with:
        - `scores`: {label: score}, in the model's label order (`post_process_image_classification`: sigmoid
          probabilities for a multi-label model, softmax for single-label, the outputs for regression);
        - `heatmaps`: float32 array (C, H, W) in [0, 1] at the image's original size (`post_process_heatmaps`;
          only with `return_heatmaps=True`, the default);
        - `boxes`: a list of {"label", "score", "box": {"xmin", "ymin", "xmax", "ymax"}} in original pixels
          (`post_process_object_detection`: one box per connected component of a class heatmap thresholded at
          `heatmap_threshold`; its score is the class probability times the component's peak heat).

    Call-time arguments:
        threshold (`float`, defaults to 0.5): smallest box score kept.
        heatmap_threshold (`float` or per-class list, *optional*): threshold on the normalised heatmap (defaults to
            the processor's `heatmap_threshold`).
        classes (`list[str]`, *optional*): only boxes of these classes.
        return_heatmaps (`bool`, defaults to `True`).
    """

    _load_processor = False
    _load_image_processor = True
    _load_feature_extractor = False
    _load_tokenizer = False

    def _sanitize_parameters(
        self, threshold=None, heatmap_threshold=None, classes=None, return_heatmaps=None, **kwargs
    ):
        postprocess = {}
        if threshold is not None:
            postprocess["threshold"] = float(threshold)
        if heatmap_threshold is not None:
            postprocess["heatmap_threshold"] = heatmap_threshold
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
        inputs = self.image_processor(images=image, return_tensors="pt", return_original_sizes=True)
        original_sizes = inputs.pop("original_sizes")
        return {"pixel_values": inputs["pixel_values"], "original_sizes": original_sizes}

    def _forward(self, model_inputs):
        original_sizes = model_inputs.pop("original_sizes")
        pixel_values = model_inputs["pixel_values"].to(self.model.device, self.model.dtype)
        outputs = self.model(pixel_values=pixel_values)
        return {"logits": outputs.logits, "heatmaps": outputs.heatmaps, "original_sizes": original_sizes}

    def postprocess(
        self, model_outputs, threshold=0.5, heatmap_threshold=None, classes=None, return_heatmaps=True
    ):
        config = self.model.config
        labels = model_labels(config)
        outputs = {"logits": model_outputs["logits"], "heatmaps": model_outputs["heatmaps"]}
        target_sizes = model_outputs["original_sizes"]
        ranked = self.image_processor.post_process_image_classification(
            outputs, id2label=config.id2label, problem_type=config.problem_type
        )[0]
        by_label = {entry["label"]: entry["score"] for entry in ranked}
        scores = {label: by_label[label] for label in labels}
        detections = self.image_processor.post_process_object_detection(
            outputs,
            threshold=threshold,
            target_sizes=target_sizes,
            heatmap_threshold=heatmap_threshold,
            problem_type=config.problem_type,
        )[0]
        result = {"scores": scores, "boxes": box_records(detections, labels, classes)}
        if return_heatmaps:
            heatmaps = self.image_processor.post_process_heatmaps(outputs, target_sizes=target_sizes)[0]
            result["heatmaps"] = heatmaps.numpy().astype(np.float32)
        return result


class ClarityImageClassificationPipeline(ImageClassificationPipeline):
    """transformers' `image-classification` pipeline (same arguments and output: `[{"label", "score"}]`, top 5 by
    default) for CLARiTy: the image processor reads the input itself (a path, bytes, a DICOM, a 16-bit PNG, a PIL
    image, an array), so no 8-bit RGB copy is made first, and the scores follow `config.problem_type` unless
    `function_to_apply` is given."""

    def __init__(self, *args, **kwargs):
        # ImageClassificationPipeline's own check lists only transformers' models; a CLARiTy folder is always valid.
        Pipeline.__init__(self, *args, **kwargs)

    def preprocess(self, image, timeout=None):
        return self.image_processor(images=image, return_tensors="pt")

    def _forward(self, model_inputs):
        pixel_values = model_inputs["pixel_values"].to(self.model.device, self.model.dtype)
        return {"logits": self.model(pixel_values=pixel_values).logits}

    def postprocess(self, model_outputs, function_to_apply=None, top_k=5):
        config = self.model.config
        problem_type = (
            config.problem_type if function_to_apply is None else _PROBLEM_TYPE_OF_FUNCTION[function_to_apply]
        )
        top_k = None if top_k is None else min(int(top_k), config.num_labels)
        return self.image_processor.post_process_image_classification(
            {"logits": model_outputs["logits"]},
            top_k=top_k,
            id2label=config.id2label,
            problem_type=problem_type,
        )[0]


__all__ = [
    "CUSTOM_PIPELINES",
    "PIPELINE_TASK",
    "ClarityImageClassificationPipeline",
    "ClarityLocalizationPipeline",
    "box_records",
    "model_labels",
]
