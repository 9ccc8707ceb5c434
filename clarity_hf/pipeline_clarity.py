# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""The `chest-xray-localization` pipeline: one call gives the 14 scores, the class heatmaps at the image's original
size and the boxes of their connected components.

This file is shipped next to the weights (a Hub code file) and registered in `config.json` under `custom_pipelines`,
so that `pipeline("chest-xray-localization", model=repo_or_folder, trust_remote_code=True)` resolves it. It imports
only numpy, torch and transformers; the image processor (`image_processing_clarity.py`, loaded by the pipeline
factory) reads the images and post-processes the outputs.
"""

import numpy as np
from transformers import Pipeline

PIPELINE_TASK = "chest-xray-localization"
CUSTOM_PIPELINES = {
    PIPELINE_TASK: {
        "impl": "pipeline_clarity.ClarityLocalizationPipeline",
        "pt": ["AutoModel"],
        "tf": [],
        "type": "image",
    }
}


class ClarityLocalizationPipeline(Pipeline):
    """Chest X-ray multi-label classification with weakly-supervised localization.

    Inputs: whatever the `ClarityImageProcessor` reads: a path (PNG, JPEG, DICOM), a PIL image, a numpy array or a
    tensor, or a list of them. Each image gives a dict with:
        - `scores`: {pathology: sigmoid probability}, in the model's label order
          (`post_process_image_classification`);
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

    def postprocess(self, model_outputs, threshold=0.5, heatmap_threshold=None, classes=None, return_heatmaps=True):
        id2label = self.model.config.id2label
        labels = [id2label[i] for i in range(self.model.config.num_labels)]
        outputs = {"logits": model_outputs["logits"], "heatmaps": model_outputs["heatmaps"]}
        target_sizes = model_outputs["original_sizes"]
        ranked = self.image_processor.post_process_image_classification(outputs, id2label=id2label)[0]
        by_label = {entry["label"]: entry["score"] for entry in ranked}
        scores = {label: by_label[label] for label in labels}
        detections = self.image_processor.post_process_object_detection(
            outputs, threshold=threshold, target_sizes=target_sizes, heatmap_threshold=heatmap_threshold
        )[0]
        boxes = []
        for score, label_index, box in zip(
            detections["scores"].tolist(), detections["labels"].tolist(), detections["boxes"].tolist()
        ):
            label = labels[label_index]
            if classes is not None and label not in classes:
                continue
            xmin, ymin, xmax, ymax = box
            boxes.append(
                {"label": label, "score": score, "box": {"xmin": xmin, "ymin": ymin, "xmax": xmax, "ymax": ymax}}
            )
        result = {"scores": scores, "boxes": boxes}
        if return_heatmaps:
            heatmaps = self.image_processor.post_process_heatmaps(outputs, target_sizes=target_sizes)[0]
            result["heatmaps"] = heatmaps.numpy().astype(np.float32)
        return result


__all__ = ["ClarityLocalizationPipeline", "CUSTOM_PIPELINES", "PIPELINE_TASK"]
