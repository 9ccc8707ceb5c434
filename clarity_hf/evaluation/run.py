# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Run any model (CLARiTy, the ConvNeXtV2 teacher with Grad-CAM / CAM, the plain-ViT attention baseline) over a
dataset split, and evaluate the logits and low-resolution heatmaps with the project's metrics: `compute_auroc` on
every image of the split, `LocalizationEvaluator` on the boxed images (threshold tuned on `box_split == "tune"`,
reported on `"eval"`).

    model, processor, kind = load_model_for_evaluation("runs/student/best_model")
    predictions = predict_split(heatmap_methods(model, kind), dataset["test"], processor)
    entries = {name: evaluate_predictions(p) for name, p in predictions.items()}
    write_evaluation("report/", entries, dataset["test"], predictions)

Images go through a `ClarityImageProcessor` (the model folder's own, or one built from the training recipe's size,
mean and std), so evaluation sees what inference sees.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from datasets import Image as ImageFeature
from transformers import AutoConfig, AutoModelForImageClassification
from transformers.utils import ModelOutput

from ..baselines import (
    PLAIN_VIT_ARCHITECTURE,
    PlainViTForMultiLabelClassification,
    teacher_cam,
    teacher_gradcam,
    teacher_gradcam_stages,
)
from ..configuration_clarity import NIH_BOXED_PATHOLOGIES
from ..data.transforms import build_processor
from ..hub.loading import load_model_strictly
from ..image_processing_clarity import ClarityImageProcessor
from ..modeling_clarity import ClarityForMultiLabelLocalization
from .classification import compute_auroc
from .figures import save_overlay_grid, save_prediction_figure
from .localization import LocalizationEvaluator
from .report import ModelEntry, jsonable, write_report

logger = logging.getLogger(__name__)

__all__ = [
    "HeatmapMethod",
    "LogitsMethod",
    "SplitPredictions",
    "build_processor",
    "evaluate_predictions",
    "heatmap_methods",
    "load_model_for_evaluation",
    "localization_evaluator",
    "map_grid",
    "model_kind",
    "stage_method_name",
    "predict_split",
    "logits_methods",
    "reported_thresholds",
    "figure_rows",
    "save_claims_figure",
    "save_figure",
    "write_evaluation",
]

# A heatmap method: pixel_values (B, 3, H, W) -> an output with `logits` (B, C) and `heatmaps` (B, C, h, w), or a
# mapping method name -> such an output when one pass yields several methods (Grad-CAM on every teacher stage).
HeatmapMethod = Callable[[torch.Tensor], Any]
# A logits-only method: pixel_values (B, 3, H, W) -> logits (B, C), for the rows whose heatmaps nobody reads.
LogitsMethod = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class SplitPredictions:
    """One method's outputs over one split, aligned with the split's rows."""

    logits: np.ndarray  # (N, C) float32
    heatmaps: np.ndarray  # (N, C, h, w) float32 in [0, 1], the model's resolution
    labels: np.ndarray  # (N, C) float32
    image_ids: list[str]
    boxes: list[list[dict]]
    box_frames: list[tuple[int, int]]  # (height, width) of each row's box frame
    box_splits: list[str]
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def model_kind(config) -> str:
    """ "clarity", "plain_vit" or "convnextv2" from a model config."""
    if PLAIN_VIT_ARCHITECTURE in (getattr(config, "architectures", None) or []):
        return "plain_vit"
    if config.model_type == "clarity":
        return "clarity"
    if config.model_type in ("convnextv2", "convnext"):
        return "convnextv2"
    raise ValueError(
        f"cannot evaluate a model of type {config.model_type!r} (clarity, plain ViT or ConvNeXt(V2))"
    )


def load_model_for_evaluation(folder: str | Path) -> tuple[torch.nn.Module, ClarityImageProcessor, str]:
    """A saved model folder -> (model in eval mode, its image processor, kind)."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: not a model folder (no config.json)")
    config = AutoConfig.from_pretrained(folder)
    kind = model_kind(config)
    # Strict: missing, unexpected or non-finite weights are an error, never a randomly initialised model scored.
    model_class = {
        "plain_vit": PlainViTForMultiLabelClassification,
        "clarity": ClarityForMultiLabelLocalization,
    }.get(kind, AutoModelForImageClassification)
    model = load_model_strictly(folder, model_class, config=config)
    if (folder / "preprocessor_config.json").is_file():
        processor = ClarityImageProcessor.from_pretrained(folder)
    else:  # the recipe every model of this package is trained with, at the config's size
        processor = build_processor(config)
        logger.warning(
            "%s has no preprocessor_config.json: using the default recipe (%d px, bilinear, ImageNet mean / std)",
            folder,
            processor.size["height"],
        )
    return model.eval(), processor, kind


def stage_method_name(name: str, stage: int) -> str:
    """The method name of `name` computed on encoder stage `stage` (0-based); `STAGE_METHOD` reads it back."""
    return f"{name} [stage {stage}]"


STAGE_METHOD = re.compile(r"^(?P<name>.*) \[stage (?P<stage>\d+)\]$")


def map_grid(heatmaps: np.ndarray | torch.Tensor) -> str:
    """The map grid of (..., h, w) heatmaps as "h x w"."""
    h, w = tuple(heatmaps.shape[-2:])
    return f"{h} x {w}"


def heatmap_methods(
    model: torch.nn.Module, kind: str, name: str | None = None, gradcam_stages: bool = False
) -> dict[str, HeatmapMethod]:
    """The heatmap methods of a model: CLARiTy -> its heatmaps; plain ViT -> CLS attention; ConvNeXt(V2) teacher ->
    Grad-CAM and CAM. Keys are method names (`name` prefixes them). With `gradcam_stages`, the teacher's Grad-CAM
    method yields one method per encoder stage, named by [`stage_method_name`] (one shared pass), for
    `clarity_hf.evaluation.selection.select_stage` to choose from."""
    if kind == "clarity":
        return {(name or "CLARiTy"): lambda x: _no_grad(model, x)}
    if kind == "plain_vit":
        return {(name or "plain ViT (CLS attention)"): lambda x: _no_grad(model, x)}
    if kind == "convnextv2":
        prefix = name or "teacher"
        gradcam_name = f"{prefix} Grad-CAM"

        def every_stage(x: torch.Tensor) -> dict[str, Any]:
            outputs = teacher_gradcam_stages(model, x)
            return {stage_method_name(gradcam_name, s): out for s, out in outputs.items()}

        return {
            gradcam_name: every_stage if gradcam_stages else (lambda x: teacher_gradcam(model, x)),
            f"{prefix} CAM": lambda x: teacher_cam(model, x),
        }
    raise ValueError(f"unknown model kind {kind!r}")


def logits_methods(model: torch.nn.Module, kind: str, name: str | None = None) -> dict[str, LogitsMethod]:
    """Logits-only stand-ins for the heatmap methods of [`heatmap_methods`] whose maps cost more than a forward pass
    (the teacher's Grad-CAM: one backward pass per class): [`predict_split`] runs them on the rows without boxes,
    whose maps no metric or figure reads. Keys are the heatmap methods' names."""
    if kind == "convnextv2":
        return {f"{name or 'teacher'} Grad-CAM": lambda x: _no_grad(model, x).logits}
    return {}


@torch.no_grad()
def _no_grad(model: torch.nn.Module, pixel_values: torch.Tensor):
    return model(pixel_values=pixel_values)


def _box_frame(dataset: Dataset, example: Mapping[str, Any]) -> tuple[int, int]:
    """(height, width) of the frame of the example's boxes."""
    from ..data.features import get_box_frame

    return get_box_frame(dataset, example)


def predict_split(
    methods: Mapping[str, HeatmapMethod],
    dataset: Dataset,
    processor: ClarityImageProcessor,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    logits_only: Mapping[str, LogitsMethod] | None = None,
) -> dict[str, SplitPredictions]:
    """Run every method over every row of `dataset` (one decode and preprocessing per batch, shared by the
    methods). Returns method name -> predictions.

    A method named in `logits_only` ([`logits_methods`]) gets its heatmaps only where they are read: on the rows
    with ground-truth boxes (localization and figures read nothing else); the other rows get their logits from the
    logits-only stand-in and NaN heatmaps. On NIH ChestX-ray14 that is 880 of 25,596 test images. A split without
    any boxed row is run whole."""
    import time

    if len(dataset) == 0:
        raise ValueError("the split to evaluate is empty")
    for column in ("image", "labels"):
        if column not in dataset.column_names:
            raise ValueError(f"the split has no {column!r} column (columns: {dataset.column_names})")
    meta_columns = [
        c for c in ("image_id", "boxes", "original_size", "box_split") if c in dataset.column_names
    ]
    images = dataset.select_columns(["image"])
    if isinstance(images.features["image"], ImageFeature) and not images.features["image"].decode:
        images = images.cast_column("image", ImageFeature(decode=True))
    meta = dataset.select_columns(["labels", *meta_columns])
    rows = meta[:]
    n = len(dataset)
    boxed = np.asarray([bool(b) for b in rows.get("boxes", [None] * n)], dtype=bool)
    restricted = set(logits_only or {}) & set(methods) if boxed.any() else set()
    # Keyed by output name (a method that returns a mapping yields several outputs, timed together): row -> array.
    logits: dict[str, dict[int, np.ndarray]] = {}
    heatmaps: dict[str, dict[int, np.ndarray]] = {}
    seconds: dict[str, float] = {}
    method_of: dict[str, str] = {}  # output name -> the method that produced it
    stand_in: dict[str, dict[int, np.ndarray]] = {name: {} for name in restricted}  # method -> row -> logits
    stand_in_seconds: dict[str, float] = dict.fromkeys(restricted, 0.0)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        batch_images = images[start:stop]["image"]
        pixel_values = processor(images=batch_images, return_tensors="pt")["pixel_values"].to(device)
        batch_rows = np.arange(start, stop)
        for name, method in methods.items():
            mapped = batch_rows if name not in restricted else batch_rows[boxed[start:stop]]
            if name in restricted and len(mapped) < len(batch_rows):
                others = batch_rows[~boxed[start:stop]]
                began = time.perf_counter()
                values = logits_only[name](pixel_values[torch.as_tensor(others - start)])
                stand_in_seconds[name] += time.perf_counter() - began
                for row, value in zip(others, values.detach().float().cpu().numpy()):
                    stand_in[name][int(row)] = value
            if not len(mapped):
                continue
            inputs = (
                pixel_values
                if len(mapped) == len(batch_rows)
                else pixel_values[torch.as_tensor(mapped - start)]
            )
            began = time.perf_counter()
            output = method(inputs)
            elapsed = time.perf_counter() - began
            # ModelOutputs are Mappings too: only a plain dict names several methods.
            outputs = (
                output if isinstance(output, dict) and not isinstance(output, ModelOutput) else {name: output}
            )
            for key, value in outputs.items():
                method_of[key] = name
                seconds[key] = seconds.get(key, 0.0) + elapsed
                key_logits, key_maps = logits.setdefault(key, {}), heatmaps.setdefault(key, {})
                for row, row_logits, row_maps in zip(
                    mapped,
                    value.logits.detach().float().cpu().numpy(),
                    value.heatmaps.detach().float().cpu().numpy(),
                ):
                    key_logits[int(row)], key_maps[int(row)] = row_logits, row_maps
    for key, name in method_of.items():
        if name in restricted:  # the rows without boxes: stand-in logits, no maps
            logits[key].update(stand_in[name])
            blank = np.full_like(next(iter(heatmaps[key].values())), np.nan)
            heatmaps[key].update({row: blank for row in stand_in[name]})
            seconds[key] += stand_in_seconds[name]
    labels = np.asarray(rows["labels"], dtype=np.float32)
    image_ids = rows.get("image_id", [str(i) for i in range(n)])
    boxes = rows.get("boxes", [[] for _ in range(n)])
    splits = [s or "" for s in rows.get("box_split", [""] * n)]
    frames = [
        _box_frame(dataset, {"original_size": size}) for size in rows.get("original_size", [(0, 0)] * n)
    ]
    return {
        name: SplitPredictions(
            logits=np.stack([logits[name][row] for row in range(n)]),
            heatmaps=np.stack([heatmaps[name][row] for row in range(n)]),
            labels=labels,
            image_ids=list(image_ids),
            boxes=[list(b or []) for b in boxes],
            box_frames=frames,
            box_splits=splits,
            seconds=seconds[name],
        )
        for name in logits
    }


def localization_evaluator(
    predictions: SplitPredictions,
    class_names: Sequence[str],
    boxed_classes: Sequence[str] = NIH_BOXED_PATHOLOGIES,
) -> LocalizationEvaluator:
    """A `LocalizationEvaluator` holding every boxed row of `predictions` (with its `box_split`)."""
    boxed = [name for name in boxed_classes if name in class_names]
    evaluator = LocalizationEvaluator(class_names=list(class_names), boxed_classes=boxed)
    for i, boxes in enumerate(predictions.boxes):
        if boxes:
            evaluator.add(
                predictions.image_ids[i],
                predictions.heatmaps[i],
                boxes,
                predictions.box_frames[i],
                predictions.box_splits[i],
            )
    return evaluator


def evaluate_predictions(
    predictions: SplitPredictions,
    class_names: Sequence[str],
    boxed_classes: Sequence[str] = NIH_BOXED_PATHOLOGIES,
    per_class_thresholds: bool = False,
    n_bootstrap: int = 200,
    notes: str = "",
    map_info: Mapping[str, Any] | None = None,
) -> ModelEntry:
    """AUROC over every row, localization over the boxed rows (tuned on `tune`, reported on `eval`; when the split
    has no tune / eval halves, every boxed row is evaluated at the default threshold 0.5). The entry's `map` holds
    the heatmaps' grid ("h x w") and `map_info` (e.g. the chosen teacher stage)."""
    entry: ModelEntry = {
        "classification": compute_auroc(
            predictions.logits, predictions.labels, class_names=list(class_names), n_bootstrap=n_bootstrap
        ),
        "map": {"grid": map_grid(predictions.heatmaps), **dict(map_info or {})},
    }
    evaluator = localization_evaluator(predictions, class_names, boxed_classes)
    if len(evaluator):
        splits = set(predictions.box_splits)
        if {"tune", "eval"} <= splits:
            entry["localization"] = evaluator.tune_and_evaluate(
                per_class=per_class_thresholds, n_bootstrap=n_bootstrap
            )
        else:
            logger.warning(
                "no tune / eval halves in the split: localization at threshold 0.5 on every boxed image"
            )
            entry["localization"] = evaluator.compute(0.5, split=None)
    if notes:
        entry["notes"] = notes
    return entry


def reported_thresholds(entry: Mapping[str, Any]) -> dict[str, float] | float:
    """The heatmap threshold(s) an entry's localization used (tuned ones when tuned), for figures."""
    localization = entry.get("localization") or {}
    if "thresholds" in localization:
        return dict(localization["thresholds"])
    levels = localization.get("heatmap_thresholds") or {}
    return {name: float(v[0]) for name, v in levels.items()} if levels else 0.5


def figure_rows(predictions: SplitPredictions, max_images: int = 6, split: str = "eval") -> list[int]:
    """Rows for an overlay figure: boxed images of `split`, covering as many boxed classes as possible."""
    candidates = [
        i for i, b in enumerate(predictions.boxes) if b and predictions.box_splits[i] in (split, "")
    ]
    chosen, seen = [], set()
    for i in candidates:
        labels = {b["label"] for b in predictions.boxes[i]}
        if labels - seen:
            chosen.append(i)
            seen |= labels
        if len(chosen) == max_images:
            break
    for i in candidates:
        if len(chosen) >= max_images:
            break
        if i not in chosen:
            chosen.append(i)
    return chosen


def save_figure(
    path: str | Path,
    dataset: Dataset,
    predictions: SplitPredictions,
    class_names: Sequence[str],
    threshold: Any = 0.5,
    max_images: int = 6,
    tile_size: int = 160,
) -> Path | None:
    """The overlay grid (one row per boxed class, one column per image) of one method's heatmaps."""
    rows = figure_rows(predictions, max_images)
    if not rows:
        return None
    images = [dataset[int(i)]["image"] for i in rows]
    boxed = [name for name in NIH_BOXED_PATHOLOGIES if name in class_names]
    return save_overlay_grid(
        path,
        images,
        [predictions.heatmaps[i] for i in rows],
        boxes=[predictions.boxes[i] for i in rows],
        class_names=list(class_names),
        classes=boxed,
        threshold=threshold,
        tile_size=tile_size,
        image_ids=[predictions.image_ids[i] for i in rows],
    )


def save_claims_figure(
    path: str | Path,
    dataset: Dataset,
    predictions: SplitPredictions,
    class_names: Sequence[str],
    operating_thresholds: Mapping[str, float],
    threshold: Any = 0.5,
    max_images: int = 6,
    tile_size: int = 192,
    method: str = "model",
) -> Path | None:
    """What the model says on the figure's images (the rows of [`figure_rows`]): the boxed classes whose probability
    reaches their operating threshold, with boxes and probabilities, beside the ground truth."""
    rows = figure_rows(predictions, max_images)
    if not rows:
        return None
    boxed = [name for name in NIH_BOXED_PATHOLOGIES if name in class_names]
    probabilities = 1.0 / (1.0 + np.exp(-predictions.logits.astype(np.float64)))
    return save_prediction_figure(
        path,
        [dataset[int(i)]["image"] for i in rows],
        [probabilities[i] for i in rows],
        [predictions.heatmaps[i] for i in rows],
        [predictions.boxes[i] for i in rows],
        {name: operating_thresholds[name] for name in boxed},
        class_names=list(class_names),
        classes=boxed,
        threshold=threshold,
        tile_size=tile_size,
        image_ids=[predictions.image_ids[i] for i in rows],
        method=method,
    )


def write_evaluation(
    output_dir: str | Path,
    entries: Mapping[str, ModelEntry],
    metadata: Mapping[str, Any] | None = None,
    title: str = "CLARiTy evaluation",
    extra_markdown: str = "",
    extra_json: Mapping[str, Any] | None = None,
    overview: str = "",
) -> dict[str, Path]:
    """`report.json` + `report.md` (the evaluation package's report, `overview` first) with optional extra
    sections appended."""
    paths = write_report(output_dir, entries, title=title, metadata=metadata, overview=overview)
    if extra_json:
        report = json.loads(paths["json"].read_text(encoding="utf-8"))
        report.update(jsonable(extra_json))
        paths["json"].write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    if extra_markdown:
        with open(paths["markdown"], "a", encoding="utf-8") as handle:
            handle.write("\n" + extra_markdown.rstrip() + "\n")
    return paths
