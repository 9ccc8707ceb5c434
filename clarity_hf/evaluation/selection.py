# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Choose the layer a baseline's maps are read from, on the `tune` half only, together with the heatmap threshold.

A Grad-CAM baseline held to the coarsest stage of a ConvNeXt teacher (3 x 3 at 96 px) loses to a 12 x 12 student on
the grid alone. [`select_stage`] gives it its best footing: every candidate stage's maps are tuned on the `tune` half
of the boxed images exactly as CLARiTy's are (same threshold grid, same objective, the same global or per-class
freedom), the stage with the best tuned objective wins (ties: the grid closest to the reference, e.g. the student's
patch grid), and only that stage is then reported on the `eval` half. The `eval` half is never looked at to choose;
when `predict_split` left it open (the teacher's Grad-CAM computed on the `tune` half only), the chosen stage is then
computed there, and only that one.

    predictions = predict_split(heatmap_methods(teacher, "convnextv2", gradcam_stages=True), test, processor)
    predictions, choice = select_stage(predictions, "teacher Grad-CAM", label_names, reference_grid=(12, 12))
    choice["stage"], choice["grid"]  # e.g. 1, "12 x 12"
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..configuration_clarity import NIH_BOXED_PATHOLOGIES
from .localization import DEFAULT_THRESHOLD_GRID, TUNING_OBJECTIVE
from .run import STAGE_METHOD, SplitPredictions, localization_evaluator, map_grid, stage_method_name

__all__ = ["select_stage", "select_stages", "tuned_objective"]


def tuned_objective(
    predictions: SplitPredictions,
    class_names: Sequence[str],
    boxed_classes: Sequence[str] = NIH_BOXED_PATHOLOGIES,
    per_class: bool = False,
    grid: Sequence[float] = DEFAULT_THRESHOLD_GRID,
    split: str = "tune",
) -> tuple[float, dict[str, float]]:
    """The localization objective (mean accuracy over T(IoU) 0.1 ... 0.7, macro over the boxed classes) of
    `predictions` on `split` after tuning the threshold there; returns (objective, chosen thresholds)."""
    evaluator = localization_evaluator(predictions, class_names, boxed_classes)
    if not any(s == split for s in predictions.box_splits):
        raise ValueError(f"no boxed image with box_split == {split!r} to select on")
    result = evaluator.tune(grid=grid, per_class=per_class, split=split)
    values = [v for v in result["tune"]["iou"]["macro"] if np.isfinite(v)]
    return (float(np.mean(values)) if values else float("nan")), dict(result["thresholds"])


def select_stage(
    predictions: Mapping[str, SplitPredictions],
    name: str,
    class_names: Sequence[str],
    reference_grid: tuple[int, int] | None = None,
    boxed_classes: Sequence[str] = NIH_BOXED_PATHOLOGIES,
    per_class: bool = False,
    grid: Sequence[float] = DEFAULT_THRESHOLD_GRID,
) -> tuple[dict[str, SplitPredictions], dict[str, Any]]:
    """Replace the per-stage methods `stage_method_name(name, s)` of `predictions` by one method `name`: the stage
    with the best tuned objective on the `tune` half.

    Returns the new predictions (same order, the chosen stage in place of the first candidate) and the choice:
    {"stage", "grid", "objective", "per_class", "candidates": {stage: {"grid", "tune_objective", "thresholds"}}}.
    """
    stages = _stages_of(predictions, name)
    if not stages:
        raise ValueError(
            f"no per-stage predictions of {name!r} (expected names like {stage_method_name(name, 0)!r})"
        )
    candidates: dict[int, dict[str, Any]] = {}
    for stage in sorted(stages):
        pred = predictions[stages[stage]]
        objective, thresholds = tuned_objective(pred, class_names, boxed_classes, per_class, grid)
        h, w = pred.heatmaps.shape[-2:]
        distance = abs(h - reference_grid[0]) + abs(w - reference_grid[1]) if reference_grid else 0
        candidates[stage] = {
            "grid": map_grid(pred.heatmaps),
            "tune_objective": objective,
            "thresholds": thresholds,
            "grid_distance": distance,
        }

    def key(stage: int) -> tuple[float, int, int]:
        objective = candidates[stage]["tune_objective"]
        return (
            -round(objective, 12) if np.isfinite(objective) else np.inf,
            candidates[stage]["grid_distance"],
            stage,
        )

    chosen = min(candidates, key=key)
    _complete(predictions[stages[chosen]], chosen)
    choice = {
        "stage": chosen,
        "grid": candidates[chosen]["grid"],
        "objective": TUNING_OBJECTIVE,
        "per_class": bool(per_class),
        "selected_on": "tune",
        "candidates": candidates,
    }
    return _keep_stage(predictions, name, stages, chosen), choice


def _complete(predictions: SplitPredictions, stage: int) -> None:
    """Compute what waited for the stage choice (`predict_split` leaves the teacher's Grad-CAM, and the CAM of its
    forward pass, open on the rows outside the `tune` half): the chosen stage only."""
    pending = predictions.extra.get("pending")
    if pending is not None:
        pending(stage)


def _stages_of(predictions: Mapping[str, SplitPredictions], name: str) -> dict[int, str]:
    return {
        int(m["stage"]): key for key in predictions if (m := STAGE_METHOD.match(key)) and m["name"] == name
    }


def _keep_stage(
    predictions: Mapping[str, SplitPredictions], name: str, stages: Mapping[int, str], chosen: int
) -> dict[str, SplitPredictions]:
    """`predictions` with the per-stage methods of `name` replaced by stage `chosen`, named `name`, in the place of
    the first stage."""
    first = stages[min(stages)]
    selected: dict[str, SplitPredictions] = {}
    for key_name, pred in predictions.items():
        if key_name == first:
            selected[name] = predictions[stages[chosen]]
        elif key_name not in stages.values():
            selected[key_name] = pred
    return selected


def select_stages(
    predictions: Mapping[str, SplitPredictions],
    class_names: Sequence[str],
    reference_grid: tuple[int, int] | None = None,
    boxed_classes: Sequence[str] = NIH_BOXED_PATHOLOGIES,
    per_class: bool = False,
    grid: Sequence[float] = DEFAULT_THRESHOLD_GRID,
) -> tuple[dict[str, SplitPredictions], dict[str, dict[str, Any]]]:
    """[`select_stage`] for every per-stage family in `predictions` (e.g. the Grad-CAM of several teachers). A split
    without a `tune` half localises nothing, so there the last stage is kept and said to be unselected.

    Returns the predictions with one method per family and, per family name, the `map_info` of its report entry:
    {"stage": s, "stage_selection": choice}."""
    families = list(dict.fromkeys(m["name"] for key in predictions if (m := STAGE_METHOD.match(key))))
    info: dict[str, dict[str, Any]] = {}
    selected = dict(predictions)
    for name in families:
        stages = _stages_of(selected, name)
        if any(s == "tune" for s in selected[stages[min(stages)]].box_splits):
            selected, choice = select_stage(
                selected, name, class_names, reference_grid, boxed_classes, per_class, grid
            )
        else:
            last = max(stages)
            _complete(selected[stages[last]], last)
            choice = {"stage": last, "grid": map_grid(selected[stages[last]].heatmaps), "selected_on": None}
            selected = _keep_stage(selected, name, stages, last)
        info[name] = {"stage": choice["stage"], "stage_selection": choice}
    return selected, info
