# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""CLARiTy weakly-supervised localization (Wang et al. 2017 protocol, extended) as an `evaluate` metric.

`evaluate.load(<path of this folder>)` copies only this file into evaluate's module cache, so the metric cannot
import its neighbours with relative imports; it imports the installed (or importable) `clarity_hf` package instead
and calls `clarity_hf.evaluation.localization.LocalizationEvaluator`, the same code as the Python API, so both
give identical numbers.
"""

import datasets
import evaluate

try:
    from clarity_hf.configuration_clarity import NIH_BOXED_PATHOLOGIES, NIH_PATHOLOGIES
    from clarity_hf.evaluation.localization import (
        DEFAULT_THRESHOLD_GRID,
        IOBB_THRESHOLDS,
        IOU_THRESHOLDS,
        LocalizationEvaluator,
    )
except ImportError as err:  # pragma: no cover - exercised only without clarity_hf
    raise ImportError(
        "the clarity_localization metric calls the clarity_hf package: `pip install clarity_hf` (or run from a "
        "checkout whose root is on sys.path)"
    ) from err

_CITATION = """\
@inproceedings{wang2017chestxray8,
  title={ChestX-ray8: Hospital-scale Chest X-ray Database and Benchmarks on Weakly-Supervised Classification and
         Localization of Common Thorax Diseases},
  author={Wang, Xiaosong and Peng, Yifan and Lu, Le and Lu, Zhiyong and Bagheri, Mohammadhadi and Summers, Ronald M.},
  booktitle={CVPR},
  year={2017}
}
@article{statheros2025clarity,
  title={CLARiTy: A Vision Transformer for Multi-Label Classification and Weakly-Supervised Localization of Chest
         X-ray Pathologies},
  author={Statheros and Wang and Klein},
  journal={arXiv:2512.16700},
  year={2025}
}
"""

_DESCRIPTION = """\
Localization accuracy of class heatmaps against ground-truth boxes: each heatmap is upsampled to the image's original
size, normalised to [0, 1], thresholded and split into connected components (one box each). A ground-truth box is
found at T(IoU) = t if any predicted box of its class has IoU > t (T = 0.1 ... 0.7), likewise for IoBB
(intersection over the predicted box's area, T in {0.1, 0.25, 0.5, 0.75, 0.9}). Reports per class, macro over the
boxed classes, and false-positive boxes per image. The heatmap threshold is fixed, per class, Wang et al.'s
reconstructed two-level mode ("wang2017"), or tuned on the `tune` split and reported on the `eval` split.
"""

_KWARGS_DESCRIPTION = """
Args (inputs, one entry per image):
    heatmaps: (C, h, w) nested lists of floats, channel order `class_names`.
    boxes: list of dicts {label, x, y, w, h} in the original pixel frame.
    original_size: [height, width] of the original image.
    image_id: string.
    box_split: "tune", "eval" or "".
Args (options of `compute`):
    threshold: float, list of levels, dict class -> float, or "wang2017" (default 0.5); ignored if `tune_grid`.
    split: evaluate only images of this `box_split` (default None: all); ignored if `tune_grid`.
    tune_grid: list of thresholds: tune on `tune_split`, report on `eval_split` (default None: no tuning).
    per_class: tune one threshold per class (default False).
    tune_split / eval_split: default "tune" / "eval".
    class_names, boxed_classes, iou_thresholds, iobb_thresholds, fp_iou, fp_mode, min_area: see
        `clarity_hf.evaluation.LocalizationEvaluator`.
Returns:
    the `LocalizationResult` dict of `LocalizationEvaluator.compute` (or the `TuningResult` of
    `tune_and_evaluate` when `tune_grid` is given): `iou` / `iobb` hold `thresholds`, `per_class` and `macro`
    accuracy lists; `false_positives` holds `per_image`, `per_class`, `total` and the `criterion`.
Examples:
    >>> metric = evaluate.load("clarity_hf/evaluation/metrics/clarity_localization")
    >>> result = metric.compute(heatmaps=[...], boxes=[...], original_size=[[1024, 1024]], image_id=["a.png"],
    ...                         box_split=["eval"], threshold=0.5)
    >>> result["iou"]["macro"]
"""

_BOX = {
    "label": datasets.Value("string"),
    "x": datasets.Value("float64"),
    "y": datasets.Value("float64"),
    "w": datasets.Value("float64"),
    "h": datasets.Value("float64"),
}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ClarityLocalization(evaluate.Metric):
    """Wang et al. 2017 / CLARiTy localization accuracy; a thin wrapper of `LocalizationEvaluator`."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "heatmaps": datasets.List(datasets.List(datasets.List(datasets.Value("float32")))),
                    "boxes": datasets.List(_BOX),
                    "original_size": datasets.List(datasets.Value("int64")),
                    "image_id": datasets.Value("string"),
                    "box_split": datasets.Value("string"),
                }
            ),
            reference_urls=["https://arxiv.org/abs/2512.16700", "https://arxiv.org/abs/1705.02315"],
        )

    def _compute(
        self,
        heatmaps,
        boxes,
        original_size,
        image_id,
        box_split,
        threshold=0.5,
        split=None,
        tune_grid=None,
        per_class=False,
        tune_split="tune",
        eval_split="eval",
        class_names=NIH_PATHOLOGIES,
        boxed_classes=NIH_BOXED_PATHOLOGIES,
        iou_thresholds=IOU_THRESHOLDS,
        iobb_thresholds=IOBB_THRESHOLDS,
        fp_iou=0.1,
        fp_mode="present",
        min_area=1,
    ):
        evaluator = LocalizationEvaluator(
            class_names=class_names,
            boxed_classes=boxed_classes,
            iou_thresholds=iou_thresholds,
            iobb_thresholds=iobb_thresholds,
            fp_iou=fp_iou,
            fp_mode=fp_mode,
            min_area=min_area,
        )
        evaluator.add_batch(heatmaps, boxes, original_size, image_id, box_split)
        if tune_grid is not None:
            grid = DEFAULT_THRESHOLD_GRID if tune_grid == "default" else tune_grid
            return dict(evaluator.tune_and_evaluate(grid, per_class, tune_split, eval_split))
        return dict(evaluator.compute(threshold, split=split))
