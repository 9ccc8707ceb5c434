# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Saved models evaluated on one split, the sequence `clarity evaluate` and the demo share: load each model folder,
its heatmap methods, [`predict_split`] (the teacher's Grad-CAM only where the protocol reads it), the teacher's
stage chosen on the `tune` half ([`select_stages`]), [`evaluate_predictions`] for every method, and the figures.

    result = evaluate_models([("student", "runs/student/best_model"), (None, "runs/teacher/best_model")], test)
    result.entries["student"]["localization"]["eval"]

Under several processes (`state`, see `clarity_hf.distributed`) every process runs its share of the predictions
and the stage choice; only the main process evaluates and draws (the others return no entries)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset

from ..baselines import teacher_stages
from ..image_processing_clarity import ClarityImageProcessor
from .classification import sigmoid, youden_thresholds
from .report import ModelEntry
from .run import (
    SplitPredictions,
    TeacherGradCAM,
    evaluate_predictions,
    heatmap_methods,
    load_model_for_evaluation,
    logits_methods,
    predict_split,
    reported_thresholds,
    save_claims_figure,
    save_figure,
)
from .selection import select_stages

__all__ = ["EvaluationResult", "LabelMismatchError", "evaluate_models"]


class LabelMismatchError(ValueError):
    """A model predicts other labels than the split has."""


@dataclass
class EvaluationResult:
    """What [`evaluate_models`] computed."""

    entries: dict[str, ModelEntry]  # method -> report entry (none on a process other than the main one)
    predictions: dict[str, SplitPredictions]  # method -> predictions on the split (one per teacher family)
    map_info: dict[str, dict[str, Any]]  # method -> its entry's map information (the chosen stage)
    models: dict[str, torch.nn.Module]  # the name of each model (its folder when unnamed) -> the model
    processor: ClarityImageProcessor  # the first model's
    label_names: list[str]
    reference_grid: tuple[int, int] | None  # the first CLARiTy model's map grid (h, w), if any
    # the stems of `figure_stems`: method -> class -> probability at the Youden point of `operating_split`
    operating_thresholds: dict[str, dict[str, float]] = field(default_factory=dict)
    figures: list[tuple[str, Path]] = field(default_factory=list)  # (method, path) of every figure drawn


def evaluate_models(
    models: Sequence[tuple[str | None, str | Path]],
    split: Dataset,
    label_names: Sequence[str] | None = None,
    *,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    per_class_thresholds: bool = False,
    n_bootstrap: int = 1000,
    notes: Callable[[Mapping[str, dict[str, Any]]], Mapping[str, str]] | None = None,
    figures_dir: str | Path | None = None,
    figure_stems: Mapping[str, str] | None = None,
    figure_images: int = 6,
    operating_split: Dataset | None = None,
    state=None,
) -> EvaluationResult:
    """Evaluate the `(name, folder)` models on `split` (see the module docstring).

    Each folder gives its [`heatmap_methods`] (`name` prefixes them): a CLARiTy model one, a ConvNeXt(V2) teacher
    Grad-CAM on every stage (the stage that localises best on the `tune` half is kept; ties: the grid closest to the
    first CLARiTy model's) and CAM (its last stage), a plain ViT its CLS attention. `label_names`: the split's
    (default: the first model's); a model naming other labels raises [`LabelMismatchError`]. `notes(map_info)`: a
    note per method for its entry. With `figures_dir`, the overlay grid `overlays_<stem>.png` of each method of
    `figure_stems` (default: every method, numbered 00, 01, ...); with `operating_split` too, first the prediction
    figure `predictions_<stem>.png` at the operating thresholds chosen on that split (the Youden point of each
    class; a teacher's Grad-CAM shares its CAM's logits)."""
    methods, logits_only, stage_info, loaded = {}, {}, {}, {}
    processor, clarity_names = None, []
    for name, folder in models:
        model, model_processor, kind = load_model_for_evaluation(folder)
        model.to(device)
        names = [model.config.id2label[i] for i in range(model.config.num_labels)]
        if label_names is not None and names != list(label_names):
            raise LabelMismatchError(f"{folder} predicts {names}, the data has labels {list(label_names)}")
        label_names = names
        processor = processor or model_processor
        loaded[name or str(folder)] = model
        model_methods = heatmap_methods(model, kind, name, gradcam_stages=kind == "convnextv2")
        if kind == "clarity":
            clarity_names.extend(model_methods)
        for method in model_methods.values():
            if isinstance(method, TeacherGradCAM) and method.cam_name:  # CAM exists on the last stage only
                stage_info[method.cam_name] = {"stage": len(teacher_stages(model)) - 1}
        methods.update(model_methods)
        logits_only.update(logits_methods(model, kind, name))
    # Grad-CAM's backward passes run on the boxed rows only (the rows localization reads).
    predictions = predict_split(
        methods, split, processor, batch_size=batch_size, device=device, logits_only=logits_only, state=state
    )
    reference_grid = tuple(predictions[clarity_names[0]].heatmaps.shape[-2:]) if clarity_names else None
    # With several processes, every one chooses the stage (from the same tune half) and computes its share of it.
    predictions, map_info = select_stages(
        predictions, label_names, reference_grid=reference_grid, per_class=per_class_thresholds
    )
    map_info.update(stage_info)
    result = EvaluationResult({}, predictions, map_info, loaded, processor, list(label_names), reference_grid)
    if state is not None and not state.is_main_process:
        return result
    notes_of = notes(map_info) if notes is not None else {}
    result.entries = {
        name: evaluate_predictions(
            pred,
            label_names,
            per_class_thresholds=per_class_thresholds,
            n_bootstrap=n_bootstrap,
            notes=notes_of.get(name, ""),
            map_info=map_info.get(name),
        )
        for name, pred in predictions.items()
    }
    if figures_dir is None:
        return result
    stems = figure_stems or {name: f"{index:02d}" for index, name in enumerate(predictions)}
    if operating_split is not None:
        result.operating_thresholds = _operating_thresholds(
            methods, list(stems), operating_split, processor, label_names, batch_size, device
        )
    for name, stem in stems.items():
        threshold = reported_thresholds(result.entries[name])
        drawn = []
        if operating_split is not None:
            drawn.append(
                save_claims_figure(
                    Path(figures_dir) / f"predictions_{stem}.png",
                    split,
                    predictions[name],
                    label_names,
                    result.operating_thresholds[name],
                    threshold=threshold,
                    max_images=figure_images,
                    method=name,
                )
            )
        drawn.append(
            save_figure(
                Path(figures_dir) / f"overlays_{stem}.png",
                split,
                predictions[name],
                label_names,
                threshold=threshold,
                max_images=figure_images,
            )
        )
        result.figures += [(name, path) for path in drawn if path is not None]
    return result


def _operating_thresholds(
    methods: Mapping[str, Any],
    names: Sequence[str],
    split: Dataset,
    processor: ClarityImageProcessor,
    label_names: Sequence[str],
    batch_size: int,
    device: str | torch.device,
) -> dict[str, dict[str, float]]:
    """Per method of `names`, each class's probability threshold at the Youden point on `split`. Only logits are
    needed: a teacher's Grad-CAM takes its CAM's (the same teacher's logits, one forward pass, no backward)."""
    source = {
        name: methods[name].cam_name
        if isinstance(methods[name], TeacherGradCAM) and methods[name].cam_name in methods
        else name
        for name in names
    }
    wanted = set(source.values())
    predictions = predict_split(
        {name: method for name, method in methods.items() if name in wanted},
        split,
        processor,
        batch_size=batch_size,
        device=device,
    )
    return {
        name: youden_thresholds(
            sigmoid(predictions[source[name]].logits), predictions[source[name]].labels, label_names
        )
        for name in names
    }
