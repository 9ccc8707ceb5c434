# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Multi-label classification metrics: per-class and mean AUROC with bootstrap confidence intervals.

Point estimates come from scikit-learn's `roc_auc_score`. A class whose labels take a single value in the evaluated
set has no AUROC: it is reported as NaN and left out of the mean (the result lists it in `excluded_classes`).

Bootstrap intervals resample *images* (rows) with replacement, `n_bootstrap` times, from a seeded
`numpy.random.default_rng(seed)`, and report the percentile interval. Each replicate's AUROC is computed with the
Mann-Whitney rank statistic (ties count one half), which equals `roc_auc_score` exactly and runs in linear time once
the scores are sorted; a class with a single label value in a replicate is skipped for that replicate, and the mean
of a replicate is the mean over the classes defined in it among those included in the point-estimate mean.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TypedDict

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from ..configuration_clarity import NIH_PATHOLOGIES

__all__ = [
    "ClassAuroc",
    "AurocResult",
    "auroc_per_class",
    "bootstrap_auroc",
    "compute_auroc",
    "sigmoid",
    "youden_thresholds",
]


class ClassAuroc(TypedDict):
    """AUROC of one class: point estimate, bootstrap interval and label counts (NaN where undefined)."""

    auroc: float
    ci_low: float
    ci_high: float
    n_positive: int
    n_negative: int


class AurocResult(TypedDict):
    """Result of [`compute_auroc`]."""

    class_names: list[str]
    per_class: dict[str, ClassAuroc]
    mean_auroc: float
    mean_ci_low: float
    mean_ci_high: float
    n_classes_in_mean: int
    excluded_classes: list[str]
    n_images: int
    n_bootstrap: int
    seed: int
    confidence: float


def _check_inputs(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    if scores.ndim == 1:
        scores = scores[:, None]
    if labels.ndim == 1:
        labels = labels[:, None]
    if scores.shape != labels.shape or scores.ndim != 2:
        raise ValueError(
            f"scores {scores.shape} and labels {labels.shape} must both be (num_images, num_classes)"
        )
    if not np.isin(labels, (0.0, 1.0)).all():
        raise ValueError("labels must be binary (0 or 1)")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite")
    return scores, labels


def auroc_per_class(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(N, C) scores and binary labels -> (C,) AUROC from `sklearn.metrics.roc_auc_score`; NaN for a class whose
    labels are all 0 or all 1."""
    scores, labels = _check_inputs(scores, labels)
    out = np.full(scores.shape[1], np.nan)
    for c in range(scores.shape[1]):
        if 0 < labels[:, c].sum() < labels.shape[0]:
            out[c] = roc_auc_score(labels[:, c], scores[:, c])
    return out


class _RankedClass:
    """One class's scores sorted once, with tie groups, so that a weighted AUROC costs O(N)."""

    def __init__(self, scores: np.ndarray, labels: np.ndarray):
        order = np.argsort(scores, kind="stable")
        sorted_scores = scores[order]
        new_group = np.empty(len(scores), dtype=bool)
        new_group[:1] = True
        new_group[1:] = sorted_scores[1:] != sorted_scores[:-1]
        self.group = np.empty(len(scores), dtype=np.int64)
        self.group[order] = np.cumsum(new_group) - 1
        self.num_groups = int(new_group.sum())
        self.labels = labels

    def auroc(self, weights: np.ndarray) -> float:
        """AUROC with per-image multiplicities `weights` (a bootstrap replicate); NaN if one label value is absent."""
        pos = np.bincount(self.group, weights * self.labels, minlength=self.num_groups)
        neg = np.bincount(self.group, weights * (1.0 - self.labels), minlength=self.num_groups)
        total_pos, total_neg = pos.sum(), neg.sum()
        if total_pos == 0 or total_neg == 0:
            return float("nan")
        neg_below = np.cumsum(neg) - neg
        return float((pos * (neg_below + 0.5 * neg)).sum() / (total_pos * total_neg))


def bootstrap_auroc(
    scores: np.ndarray, labels: np.ndarray, n_bootstrap: int = 1000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap replicates of the per-class and mean AUROC, resampling images with replacement.

    Returns `per_class` (n_bootstrap, C), NaN where a class has one label value in a replicate, and `mean`
    (n_bootstrap,), the mean over the classes that are defined on the full set and in that replicate.
    """
    scores, labels = _check_inputs(scores, labels)
    num_images, num_classes = scores.shape
    defined = (labels.sum(0) > 0) & (labels.sum(0) < num_images)
    ranked = [_RankedClass(scores[:, c], labels[:, c]) for c in range(num_classes)]
    rng = np.random.default_rng(seed)
    per_class = np.full((n_bootstrap, num_classes), np.nan)
    for b in range(n_bootstrap):
        weights = np.bincount(rng.integers(0, num_images, num_images), minlength=num_images).astype(
            np.float64
        )
        for c in np.flatnonzero(defined):
            per_class[b, c] = ranked[c].auroc(weights)
    with warnings.catch_warnings():  # an all-NaN replicate legitimately gives NaN ("Mean of empty slice")
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(per_class[:, defined], axis=1) if defined.any() else np.full(n_bootstrap, np.nan)
    return per_class, mean


def _percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return float(low), float(high)


def compute_auroc(
    scores: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str] | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> AurocResult:
    """Per-class and mean AUROC with percentile bootstrap intervals.

    Args:
        scores: (N, C) scores (logits or probabilities; AUROC is rank-based, so either gives the same number).
        labels: (N, C) binary labels in the same class order.
        class_names: the C class names; defaults to the 14 NIH pathologies when C == 14, else "class_<i>".
        n_bootstrap: number of bootstrap replicates (0 disables the intervals, which are then NaN).
        seed: seed of the replicate generator; the same seed gives the same intervals.
        confidence: the interval's coverage, 0.95 for a 95% interval.
    """
    scores, labels = _check_inputs(scores, labels)
    num_images, num_classes = scores.shape
    if class_names is None:
        class_names = (
            list(NIH_PATHOLOGIES)
            if num_classes == len(NIH_PATHOLOGIES)
            else [f"class_{i}" for i in range(num_classes)]
        )
    class_names = list(class_names)
    if len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
    point = auroc_per_class(scores, labels)
    defined = np.isfinite(point)
    if n_bootstrap > 0:
        replicates, replicate_means = bootstrap_auroc(scores, labels, n_bootstrap=n_bootstrap, seed=seed)
    else:
        replicates, replicate_means = np.full((0, num_classes), np.nan), np.full(0, np.nan)
    per_class: dict[str, ClassAuroc] = {}
    for c, name in enumerate(class_names):
        low, high = _percentile_interval(replicates[:, c], confidence)
        n_positive = int(labels[:, c].sum())
        per_class[name] = ClassAuroc(
            auroc=float(point[c]),
            ci_low=low,
            ci_high=high,
            n_positive=n_positive,
            n_negative=num_images - n_positive,
        )
    mean_low, mean_high = _percentile_interval(replicate_means, confidence)
    return AurocResult(
        class_names=class_names,
        per_class=per_class,
        mean_auroc=float(point[defined].mean()) if defined.any() else float("nan"),
        mean_ci_low=mean_low,
        mean_ci_high=mean_high,
        n_classes_in_mean=int(defined.sum()),
        excluded_classes=[name for c, name in enumerate(class_names) if not defined[c]],
        n_images=num_images,
        n_bootstrap=int(n_bootstrap),
        seed=int(seed),
        confidence=float(confidence),
    )


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Probabilities of logits, in float64."""
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))


def youden_thresholds(
    probabilities: np.ndarray, labels: np.ndarray, class_names: Sequence[str], default: float = 0.5
) -> dict[str, float]:
    """Per-class operating thresholds on probabilities at the Youden point (max TPR - FPR of scikit-learn's
    `roc_curve`), to be chosen on a held-out split (validation) and applied elsewhere. A class with a single label
    value has no ROC curve and gets `default`."""
    probabilities, labels = _check_inputs(probabilities, labels)
    thresholds: dict[str, float] = {}
    for c, name in enumerate(class_names):
        column = labels[:, c]
        if column.min() == column.max():
            thresholds[name] = float(default)
            continue
        fpr, tpr, cuts = roc_curve(column, probabilities[:, c])
        # roc_curve's first cut is +inf (nothing predicted positive): never the operating point of a usable class.
        best = int(np.argmax((tpr - fpr)[1:])) + 1
        thresholds[name] = float(min(cuts[best], 1.0))
    return thresholds
