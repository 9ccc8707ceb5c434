# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Weakly-supervised localization protocol of Wang et al. 2017, as extended by CLARiTy.

For each image and each boxed class, the class heatmap (kept at its low, patch resolution until needed) is
upsampled bilinearly to the image's original size (the frame of the ground-truth boxes, 1024 x 1024 for NIH),
min-max normalised to [0, 1], thresholded (`>= threshold`) and split into 8-connected components, one box per
component. These steps are `upsample_heatmaps` and `heatmap_to_boxes` of `clarity_hf.heatmaps`, the
same code the Hub image processor runs, so evaluation and inference extract boxes identically.

Definitions (boxes are xyxy in continuous pixel coordinates, x1 and y1 exclusive, so a ground-truth box (x, y, w, h)
is (x, y, x + w, y + h) and a box's area is (x1 - x0) * (y1 - y0)):

- IoU(pred, gt) = |pred ∩ gt| / |pred ∪ gt|.
- IoBB(pred, gt) = |pred ∩ gt| / |pred| (intersection over the *predicted* box's area).
- A ground-truth box is *found* at T(IoU) = t if ANY predicted box of its class on its image has IoU > t (strictly);
  likewise for IoBB. Accuracy = found ground-truth boxes / ground-truth boxes, per class; the macro value is the
  mean over the classes that have at least one ground-truth box in the evaluated set (a class without any is NaN
  and left out of the macro mean).
- A predicted box is a *false positive* if its IoU with every ground-truth box of its class on its image is
  <= `fp_iou` (default 0.1). With `fp_mode="present"` (default) only the heatmaps of classes that have a ground-truth
  box on the image are turned into boxes (Wang et al.'s setting: a class absent from the image is never
  thresholded); the per-class figure divides by the images carrying that class, the overall figure (`per_image`)
  divides all false-positive boxes by all evaluated images. With `fp_mode="all"` every boxed class's heatmap is
  thresholded on every image, and both figures divide by all evaluated images.

Thresholds: a single value, a per-class mapping, or several *levels* per class whose boxes are pooled. Wang et al.
2017's fixed two-level mode (`threshold="wang2017"`) is *reconstructed* from their description: the normalised
heatmap is read on a 0-255 scale, boxes are taken at both 60 and 180 and the two sets are pooled.
`LocalizationEvaluator.tune` picks the threshold (global or per class) on the `tune` half of the boxed images by
maximising the mean accuracy over T(IoU) = 0.1 ... 0.7, and `tune_and_evaluate` reports the chosen thresholds on the
`eval` half.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict, Union

import numpy as np
import torch

from ..configuration_clarity import NIH_BOXED_PATHOLOGIES, NIH_LABEL_ALIASES, NIH_PATHOLOGIES
from ..heatmaps import heatmap_to_boxes, upsampled_normalized_heatmap

__all__ = [
    "IOU_THRESHOLDS",
    "IOBB_THRESHOLDS",
    "DEFAULT_THRESHOLD_GRID",
    "WANG2017_THRESHOLDS",
    "LABEL_ALIASES",
    "ThresholdSpec",
    "AccuracyTable",
    "FalsePositiveStats",
    "LocalizationResult",
    "TuningResult",
    "xywh_to_xyxy",
    "box_iou",
    "box_iobb",
    "heatmap_boxes_in_frame",
    "threshold_levels",
    "LocalizationEvaluator",
]

IOU_THRESHOLDS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
IOBB_THRESHOLDS: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9)
DEFAULT_THRESHOLD_GRID: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05 ... 0.95
# Reconstructed: Wang et al. 2017 threshold the [0, 255]-scaled normalised heatmap at 60 and 180, pooling the boxes.
WANG2017_THRESHOLDS: tuple[float, ...] = (60 / 255, 180 / 255)
# NIH's BBox_List_2017.csv spells Infiltration "Infiltrate".
LABEL_ALIASES: dict[str, str] = NIH_LABEL_ALIASES
TUNING_OBJECTIVE = (
    "mean accuracy over T(IoU) in IOU_THRESHOLDS (0.1 ... 0.7); ties -> fewer FP/image, then lower"
)

# float: one level for every class; sequence of floats: levels pooled, for every class; mapping: per class (a
# float or a sequence of levels); "wang2017": WANG2017_THRESHOLDS for every class.
ThresholdSpec = Union[float, Sequence[float], Mapping[str, Union[float, Sequence[float]]], str]


class AccuracyTable(TypedDict, total=False):
    """Localization accuracy at each overlap threshold: lists aligned with `thresholds`; `macro_ci` (only when
    bootstrapped) holds the 95% percentile interval [low, high] of the macro value at each threshold."""

    thresholds: list[float]
    per_class: dict[str, list[float]]
    macro: list[float]
    macro_ci: list[list[float]]


class FalsePositiveStats(TypedDict):
    """False-positive predicted boxes (see the module docstring for the criterion)."""

    criterion: str
    per_image: float
    per_class: dict[str, float]
    total: int


class LocalizationResult(TypedDict):
    """Result of [`LocalizationEvaluator.compute`]."""

    split: str | None
    classes: list[str]
    heatmap_thresholds: dict[str, list[float]]
    n_images: int
    n_gt_boxes: dict[str, int]
    n_predicted_boxes: int
    iou: AccuracyTable
    iobb: AccuracyTable
    false_positives: FalsePositiveStats


class TuningResult(TypedDict):
    """Result of [`LocalizationEvaluator.tune_and_evaluate`] (`eval` is None when only tuning)."""

    objective: str
    per_class: bool
    grid: list[float]
    tune_split: str | None
    eval_split: str | None
    thresholds: dict[str, float]
    objective_values: dict[str, list[float]]
    tune: LocalizationResult
    eval: LocalizationResult | None


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """(K, 4) x, y, w, h -> (K, 4) x0, y0, x1, y1 (x1 = x + w, exclusive)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)


def _intersection_and_areas(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64).reshape(-1, 4)
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
    width = np.minimum(pred[:, None, 2], gt[None, :, 2]) - np.maximum(pred[:, None, 0], gt[None, :, 0])
    height = np.minimum(pred[:, None, 3], gt[None, :, 3]) - np.maximum(pred[:, None, 1], gt[None, :, 1])
    inter = np.clip(width, 0, None) * np.clip(height, 0, None)
    pred_area = (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1])
    gt_area = (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])
    return inter, pred_area, gt_area


def box_iou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(N, 4) and (M, 4) xyxy boxes -> (N, M) intersection over union (0 where the union is empty)."""
    inter, pred_area, gt_area = _intersection_and_areas(pred, gt)
    union = pred_area[:, None] + gt_area[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def box_iobb(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(N, 4) predicted and (M, 4) ground-truth xyxy boxes -> (N, M) intersection over the predicted box's area."""
    inter, pred_area, _ = _intersection_and_areas(pred, gt)
    area = np.broadcast_to(pred_area[:, None], inter.shape)
    return np.divide(inter, area, out=np.zeros_like(inter), where=area > 0)


def _boxes_at_levels(normalized: np.ndarray, levels: Sequence[float], min_area: int) -> np.ndarray:
    """Boxes of a min-max normalised heatmap (`upsampled_normalized_heatmap`) at each level, pooled: (K, 4) float64
    xyxy. The map is not normalised again per level: a flat (all-zero) map gives no box, as `heatmap_to_boxes` does."""
    if not normalized.max() > 0:
        return np.zeros((0, 4))
    pooled = [
        heatmap_to_boxes(normalized, float(level), normalize=False, min_area=min_area)[0] for level in levels
    ]
    return np.concatenate(pooled, axis=0).astype(np.float64) if pooled else np.zeros((0, 4))


def heatmap_boxes_in_frame(
    heatmap: np.ndarray | torch.Tensor,
    original_size: Sequence[int],
    threshold: float | Sequence[float],
    min_area: int = 1,
) -> np.ndarray:
    """One class heatmap at any resolution -> predicted boxes in the ground-truth frame.

    The heatmap is upsampled to `original_size` = (height, width), normalised to [0, 1], thresholded at each level
    of `threshold` and split into connected components; returns the pooled (K, 4) xyxy boxes (x1, y1 exclusive).
    """
    if isinstance(heatmap, torch.Tensor):
        heatmap = heatmap.detach().float().cpu().numpy()
    levels = (float(threshold),) if np.isscalar(threshold) else tuple(float(t) for t in threshold)
    return _boxes_at_levels(
        upsampled_normalized_heatmap(np.asarray(heatmap), tuple(original_size)), levels, min_area
    )


def threshold_levels(threshold: ThresholdSpec, classes: Sequence[str]) -> list[tuple[float, ...]]:
    """A threshold spec (float, sequence of levels, mapping class -> float or levels, or "wang2017") -> one tuple
    of levels per class of `classes`, in that order."""

    def as_levels(value: float | Sequence[float] | str) -> tuple[float, ...]:
        if isinstance(value, str):
            if value.lower() != "wang2017":
                raise ValueError(f"unknown threshold mode {value!r} (use a number, a mapping or 'wang2017')")
            return WANG2017_THRESHOLDS
        if np.isscalar(value):
            return (float(value),)
        levels = tuple(float(v) for v in value)
        if not levels:
            raise ValueError("a threshold needs at least one level")
        return levels

    if isinstance(threshold, Mapping):
        unknown, missing = set(threshold) - set(classes), set(classes) - set(threshold)
        if unknown or missing:
            raise ValueError(f"per-class thresholds: unknown {sorted(unknown)}, missing {sorted(missing)}")
        return [as_levels(threshold[name]) for name in classes]
    return [as_levels(threshold)] * len(classes)


@dataclass
class _Image:
    image_id: str
    heatmaps: np.ndarray  # (num boxed classes, h, w) float32, low resolution
    gt_boxes: dict[int, np.ndarray]  # boxed-class index -> (M, 4) xyxy
    original_size: tuple[int, int]
    split: str


@dataclass
class _Stats:
    """Per ground-truth box best overlaps and per (image, class) false positives, for one threshold setting."""

    gt_class: np.ndarray  # (G,) boxed-class index of each ground-truth box
    gt_max_iou: np.ndarray  # (G,) best IoU over the predicted boxes of its class on its image (0 if none)
    gt_max_iobb: np.ndarray  # (G,)
    fp_per_class: np.ndarray  # (C,) false-positive boxes
    predicted_per_class: np.ndarray  # (C,) predicted boxes
    images_per_class: np.ndarray  # (C,) images whose class heatmap was thresholded
    n_images: int


class LocalizationEvaluator:
    r"""
    Accumulates heatmaps and ground-truth boxes image by image and computes the localization protocol.

    Heatmaps are stored at the resolution they are given (the model's patch grid) and only for the boxed classes;
    each one is upsampled to its image's original size lazily, once per (image, class) and call, and released.

    Args:
        class_names: the order of the heatmaps' channel axis (default: the 14 NIH pathologies, the model order).
        boxed_classes: the classes that are evaluated (default: the 8 NIH boxed pathologies).
        iou_thresholds / iobb_thresholds: the overlap thresholds at which accuracy is reported.
        fp_iou: a predicted box whose IoU with every ground-truth box of its class is <= `fp_iou` is a false positive.
        fp_mode: "present" thresholds only the classes with a ground-truth box on the image; "all" every boxed class.
        min_area: smallest connected component, in pixels of the ground-truth frame, that makes a box.

    Example:

    ```python
    >>> evaluator = LocalizationEvaluator()
    >>> for example, heatmaps in zip(dataset, model_heatmaps):  # heatmaps: (14, h, w) in [0, 1]
    ...     evaluator.add(example["image_id"], heatmaps, example["boxes"], example["original_size"], example["box_split"])
    >>> result = evaluator.tune_and_evaluate(per_class=False)  # tuned on "tune", reported on "eval"
    >>> result["eval"]["iou"]["macro"]  # accuracy at T(IoU) = 0.1 ... 0.7
    ```
    """

    def __init__(
        self,
        class_names: Sequence[str] = NIH_PATHOLOGIES,
        boxed_classes: Sequence[str] = NIH_BOXED_PATHOLOGIES,
        iou_thresholds: Sequence[float] = IOU_THRESHOLDS,
        iobb_thresholds: Sequence[float] = IOBB_THRESHOLDS,
        fp_iou: float = 0.1,
        fp_mode: Literal["present", "all"] = "present",
        min_area: int = 1,
    ):
        self.class_names = list(class_names)
        self.boxed_classes = list(boxed_classes)
        missing = [name for name in self.boxed_classes if name not in self.class_names]
        if missing:
            raise ValueError(f"boxed classes {missing} are not in class_names")
        if fp_mode not in ("present", "all"):
            raise ValueError(f"fp_mode must be 'present' or 'all', got {fp_mode!r}")
        self._channels = [self.class_names.index(name) for name in self.boxed_classes]
        self.iou_thresholds = [float(t) for t in iou_thresholds]
        self.iobb_thresholds = [float(t) for t in iobb_thresholds]
        self.fp_iou = float(fp_iou)
        self.fp_mode = fp_mode
        self.min_area = int(min_area)
        self._images: list[_Image] = []

    def __len__(self) -> int:
        return len(self._images)

    def reset(self) -> None:
        """Forget every accumulated image."""
        self._images = []

    # ------------------------------------------------------------------ accumulation
    def _class_index(self, label: str) -> int:
        label = LABEL_ALIASES.get(label, label)
        if label not in self.boxed_classes:
            raise ValueError(f"box label {label!r} is not one of the boxed classes {self.boxed_classes}")
        return self.boxed_classes.index(label)

    def add(
        self,
        image_id: str,
        heatmaps: np.ndarray | torch.Tensor,
        boxes: Iterable[Mapping[str, Any]],
        original_size: Sequence[int],
        split: str | None = "",
    ) -> None:
        """Add one image.

        Args:
            image_id: identifier, kept for reference.
            heatmaps: (len(class_names), h, w) heatmaps in channel order `class_names`, any resolution.
            boxes: ground-truth boxes, dicts with `label`, `x`, `y`, `w`, `h` in the original pixel frame.
            original_size: (height, width) of the original image, the frame of `boxes`.
            split: the image's `box_split` ("tune", "eval" or "").
        """
        if isinstance(heatmaps, torch.Tensor):
            heatmaps = heatmaps.detach().float().cpu().numpy()
        heatmaps = np.asarray(heatmaps, dtype=np.float32)
        if heatmaps.ndim != 3 or heatmaps.shape[0] != len(self.class_names):
            raise ValueError(
                f"heatmaps must be ({len(self.class_names)}, h, w) in class_names order, got {heatmaps.shape}"
            )
        if len(original_size) != 2:
            raise ValueError(f"original_size must be (height, width), got {original_size}")
        grouped: dict[int, list[list[float]]] = {}
        for box in boxes:
            grouped.setdefault(self._class_index(str(box["label"])), []).append(
                [float(box["x"]), float(box["y"]), float(box["w"]), float(box["h"])]
            )
        self._images.append(
            _Image(
                image_id=str(image_id),
                heatmaps=np.ascontiguousarray(heatmaps[self._channels]),
                gt_boxes={c: xywh_to_xyxy(np.asarray(b)) for c, b in grouped.items()},
                original_size=(int(original_size[0]), int(original_size[1])),
                split=split or "",
            )
        )

    def add_batch(
        self,
        heatmaps: np.ndarray | torch.Tensor | Sequence[np.ndarray],
        boxes: Sequence[Iterable[Mapping[str, Any]]],
        original_size: Sequence[Sequence[int]],
        image_id: Sequence[str],
        box_split: Sequence[str] | None = None,
    ) -> None:
        """Add a batch; argument names follow the dataset columns (`boxes`, `original_size`, `image_id`,
        `box_split`) and the model output (`heatmaps`, (B, C, h, w))."""
        splits = box_split if box_split is not None else [""] * len(image_id)
        for i in range(len(image_id)):
            self.add(image_id[i], heatmaps[i], boxes[i], original_size[i], splits[i])

    def _levels(self, threshold: ThresholdSpec) -> list[tuple[float, ...]]:
        return threshold_levels(threshold, self.boxed_classes)

    # ------------------------------------------------------------------ core
    def _selected(self, split: str | None) -> list[_Image]:
        return [image for image in self._images if split is None or image.split == split]

    def _stats(self, images: list[_Image], settings: list[list[tuple[float, ...]]]) -> list[_Stats]:
        """Best overlaps and false positives for several threshold settings in one pass over the images (each
        (image, class) heatmap is upsampled once and thresholded at every setting)."""
        num_classes = len(self.boxed_classes)
        gt_class: list[int] = []
        best = [{"iou": [], "iobb": []} for _ in settings]
        fp = np.zeros((len(settings), num_classes), dtype=np.int64)
        predicted = np.zeros((len(settings), num_classes), dtype=np.int64)
        images_per_class = np.zeros(num_classes, dtype=np.int64)
        for image in images:
            classes = sorted(image.gt_boxes) if self.fp_mode == "present" else range(num_classes)
            for c in classes:
                images_per_class[c] += 1
                gt = image.gt_boxes.get(c, np.zeros((0, 4)))
                gt_class.extend([c] * len(gt))
                normalized = upsampled_normalized_heatmap(image.heatmaps[c], image.original_size)
                for s, setting in enumerate(settings):
                    pred = _boxes_at_levels(normalized, setting[c], self.min_area)
                    iou, iobb = box_iou(pred, gt), box_iobb(pred, gt)
                    best[s]["iou"].extend(iou.max(0) if len(pred) else np.zeros(len(gt)))
                    best[s]["iobb"].extend(iobb.max(0) if len(pred) else np.zeros(len(gt)))
                    predicted[s, c] += len(pred)
                    fp[s, c] += int((iou.max(1) <= self.fp_iou).sum()) if len(gt) else len(pred)
        return [
            _Stats(
                gt_class=np.asarray(gt_class, dtype=np.int64),
                gt_max_iou=np.asarray(best[s]["iou"], dtype=np.float64),
                gt_max_iobb=np.asarray(best[s]["iobb"], dtype=np.float64),
                fp_per_class=fp[s],
                predicted_per_class=predicted[s],
                images_per_class=images_per_class,
                n_images=len(images),
            )
            for s in range(len(settings))
        ]

    def _accuracy(
        self,
        stats: _Stats,
        overlaps: np.ndarray,
        thresholds: list[float],
        n_bootstrap: int = 0,
        seed: int = 0,
    ) -> AccuracyTable:
        per_class: dict[str, list[float]] = {}
        for c, name in enumerate(self.boxed_classes):
            mask = stats.gt_class == c
            per_class[name] = [
                float((overlaps[mask] > t).mean()) if mask.any() else float("nan") for t in thresholds
            ]
        table = np.asarray([per_class[name] for name in self.boxed_classes]).reshape(-1, len(thresholds))
        defined = np.isfinite(table).all(axis=1)
        macro = table[defined].mean(0) if defined.any() else np.full(len(thresholds), np.nan)
        result = AccuracyTable(
            thresholds=list(thresholds), per_class=per_class, macro=[float(v) for v in macro]
        )
        if n_bootstrap > 0 and defined.any():
            result["macro_ci"] = self._bootstrap_macro(stats, overlaps, thresholds, n_bootstrap, seed)
        return result

    def _bootstrap_macro(
        self, stats: _Stats, overlaps: np.ndarray, thresholds: list[float], n_bootstrap: int, seed: int
    ) -> list[list[float]]:
        """95% percentile interval of the macro accuracy at each threshold, resampling the ground-truth boxes with
        replacement within each class (so every class keeps its number of boxes and the macro mean its classes)."""
        rng = np.random.default_rng(seed)
        replicates = []
        for c in range(len(self.boxed_classes)):
            found = overlaps[stats.gt_class == c][:, None] > np.asarray(thresholds)[None]  # (n_c, T)
            if len(found):
                draws = rng.integers(0, len(found), size=(n_bootstrap, len(found)))
                replicates.append(found[draws].mean(axis=1))  # (n_bootstrap, T)
        macro = np.mean(replicates, axis=0)
        low, high = np.percentile(macro, [2.5, 97.5], axis=0)
        return [[float(a), float(b)] for a, b in zip(low, high)]

    def _fp_criterion(self) -> str:
        scope = (
            "classes with a ground-truth box on the image"
            if self.fp_mode == "present"
            else "all boxed classes"
        )
        return (
            f"predicted box with IoU <= {self.fp_iou} against every ground-truth box of its class on its image; "
            f"heatmaps thresholded for {scope}"
        )

    def _result(
        self,
        stats: _Stats,
        levels: list[tuple[float, ...]],
        split: str | None,
        n_bootstrap: int = 0,
        seed: int = 0,
    ) -> LocalizationResult:
        per_class_fp: dict[str, float] = {}
        for c, name in enumerate(self.boxed_classes):
            denominator = stats.images_per_class[c] if self.fp_mode == "present" else stats.n_images
            per_class_fp[name] = float(stats.fp_per_class[c] / denominator) if denominator else float("nan")
        total_fp = int(stats.fp_per_class.sum())
        return LocalizationResult(
            split=split,
            classes=list(self.boxed_classes),
            heatmap_thresholds={name: list(levels[c]) for c, name in enumerate(self.boxed_classes)},
            n_images=stats.n_images,
            n_gt_boxes={name: int((stats.gt_class == c).sum()) for c, name in enumerate(self.boxed_classes)},
            n_predicted_boxes=int(stats.predicted_per_class.sum()),
            iou=self._accuracy(stats, stats.gt_max_iou, self.iou_thresholds, n_bootstrap, seed),
            iobb=self._accuracy(stats, stats.gt_max_iobb, self.iobb_thresholds, n_bootstrap, seed),
            false_positives=FalsePositiveStats(
                criterion=self._fp_criterion(),
                per_image=float(total_fp / stats.n_images) if stats.n_images else float("nan"),
                per_class=per_class_fp,
                total=total_fp,
            ),
        )

    # ------------------------------------------------------------------ public
    def compute(
        self,
        threshold: ThresholdSpec = 0.5,
        split: str | None = None,
        n_bootstrap: int = 0,
        seed: int = 0,
    ) -> LocalizationResult:
        """Localization accuracy and false positives at a fixed heatmap threshold.

        Args:
            threshold: a float (every class), a sequence of levels whose boxes are pooled, a mapping class ->
                float or levels, or "wang2017" (the reconstructed fixed two-level mode, 60/255 and 180/255).
            split: evaluate only images whose `box_split` equals this ("tune", "eval"); None for every image.
            n_bootstrap: when > 0, add `macro_ci` (95% interval from resampling the ground-truth boxes within each
                class, `seed` fixed) to the IoU and IoBB tables.
        """
        levels = self._levels(threshold)
        images = self._selected(split)
        return self._result(self._stats(images, [levels])[0], levels, split, n_bootstrap, seed)

    def tune(
        self,
        grid: Sequence[float] = DEFAULT_THRESHOLD_GRID,
        per_class: bool = False,
        split: str | None = "tune",
    ) -> TuningResult:
        """Choose the heatmap threshold on `split` from `grid`, globally or per class.

        The objective is the mean accuracy over `iou_thresholds` (T(IoU) 0.1 ... 0.7): per class when `per_class`,
        else its macro mean over the classes. Ties (to 12 decimals) go to the grid value with fewer false positives
        per image (per class: per image carrying the class), then to the lower value. The grid is sorted.
        """
        grid = sorted({float(t) for t in grid})
        if not grid:
            raise ValueError("the threshold grid is empty")
        images = self._selected(split)
        all_stats = self._stats(images, [[(t,)] * len(self.boxed_classes) for t in grid])
        results = [
            self._result(stats, [(t,)] * len(self.boxed_classes), split) for stats, t in zip(all_stats, grid)
        ]

        def objective(result: LocalizationResult, name: str | None) -> float:
            values = result["iou"]["macro"] if name is None else result["iou"]["per_class"][name]
            return float(np.mean(values))

        def pick(name: str | None) -> tuple[int, list[float]]:
            values = [objective(result, name) for result in results]
            fps = [
                r["false_positives"]["per_image"] if name is None else r["false_positives"]["per_class"][name]
                for r in results
            ]
            keys = [
                (-round(v, 12) if np.isfinite(v) else np.inf, f if np.isfinite(f) else np.inf, i)
                for i, (v, f) in enumerate(zip(values, fps))
            ]
            return min(keys)[2], values

        objective_values: dict[str, list[float]] = {}
        if per_class:
            chosen = {}
            for name in self.boxed_classes:
                index, objective_values[name] = pick(name)
                chosen[name] = grid[index]
        else:
            index, objective_values["global"] = pick(None)
            chosen = {name: grid[index] for name in self.boxed_classes}
        tuned = self.compute(chosen, split=split) if per_class else results[index]
        return TuningResult(
            objective=TUNING_OBJECTIVE,
            per_class=bool(per_class),
            grid=grid,
            tune_split=split,
            eval_split=None,
            thresholds=chosen,
            objective_values=objective_values,
            tune=tuned,
            eval=None,
        )

    def tune_and_evaluate(
        self,
        grid: Sequence[float] = DEFAULT_THRESHOLD_GRID,
        per_class: bool = False,
        tune_split: str | None = "tune",
        eval_split: str | None = "eval",
        n_bootstrap: int = 0,
    ) -> TuningResult:
        """[`~LocalizationEvaluator.tune`] on `tune_split`, then [`~LocalizationEvaluator.compute`] with the chosen
        thresholds on `eval_split` (the protocol's reported numbers are `result["eval"]`, with bootstrap intervals
        of the macro accuracy when `n_bootstrap` > 0)."""
        result = self.tune(grid=grid, per_class=per_class, split=tune_split)
        result["eval_split"] = eval_split
        result["eval"] = self.compute(result["thresholds"], split=eval_split, n_bootstrap=n_bootstrap)
        return result
