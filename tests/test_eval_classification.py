# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""AUROC: equals scikit-learn, undefined classes are NaN and excluded, bootstrap intervals bracket and reproduce."""

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from clarity_hf.configuration_clarity import NIH_PATHOLOGIES
from clarity_hf.evaluation import metric_path
from clarity_hf.evaluation.classification import _RankedClass, auroc_per_class, bootstrap_auroc, compute_auroc


def synthetic(num_images=300, num_classes=4, seed=0):
    rng = np.random.default_rng(seed)
    labels = (rng.random((num_images, num_classes)) < 0.3).astype(np.float64)
    scores = np.round(rng.normal(size=labels.shape) + labels * np.arange(1, num_classes + 1), 1)  # with ties
    return scores, labels


def test_auroc_by_hand_and_against_sklearn():
    # Positives score 0.8 and 0.4, negatives 0.5 and 0.1: of the 4 (pos, neg) pairs, 3 are ordered -> 0.75.
    scores = np.array([[0.8], [0.4], [0.5], [0.1]])
    labels = np.array([[1], [1], [0], [0]])
    assert auroc_per_class(scores, labels)[0] == pytest.approx(0.75)
    # A tie between a positive and a negative counts one half: pairs (0.5+, 0.5-) = .5, (0.5+, 0.1-) = 1 -> 0.75.
    assert auroc_per_class([[0.5], [0.5], [0.1]], [[1], [0], [0]])[0] == pytest.approx(0.75)
    scores, labels = synthetic()
    result = compute_auroc(scores, labels, class_names=list("abcd"), n_bootstrap=0)
    expected = [roc_auc_score(labels[:, c], scores[:, c]) for c in range(4)]
    assert [result["per_class"][name]["auroc"] for name in "abcd"] == pytest.approx(expected, abs=1e-12)
    assert result["mean_auroc"] == pytest.approx(np.mean(expected), abs=1e-12)
    assert result["n_classes_in_mean"] == 4 and result["excluded_classes"] == []
    assert result["per_class"]["a"]["n_positive"] == int(labels[:, 0].sum())
    assert math.isnan(result["mean_ci_low"])  # no replicates, no interval


def test_single_valued_class_is_nan_and_excluded_from_the_mean():
    scores, labels = synthetic(num_classes=3)
    labels[:, 1] = 0.0  # no positive
    result = compute_auroc(scores, labels, class_names=["x", "y", "z"], n_bootstrap=50)
    assert math.isnan(result["per_class"]["y"]["auroc"])
    assert math.isnan(result["per_class"]["y"]["ci_low"])
    assert result["excluded_classes"] == ["y"] and result["n_classes_in_mean"] == 2
    x, z = (roc_auc_score(labels[:, c], scores[:, c]) for c in (0, 2))
    assert result["mean_auroc"] == pytest.approx((x + z) / 2, abs=1e-12)


def test_default_class_names_are_nih_for_14_classes():
    scores, labels = synthetic(num_classes=14)
    result = compute_auroc(scores, labels, n_bootstrap=0)
    assert result["class_names"] == list(NIH_PATHOLOGIES)


def test_weighted_rank_auroc_equals_sklearn_on_a_resample():
    # The bootstrap's O(N) AUROC with multiplicities equals roc_auc_score on the explicitly resampled rows.
    scores, labels = synthetic(num_images=500, num_classes=1, seed=3)
    rng = np.random.default_rng(7)
    rows = rng.integers(0, 500, 500)
    weights = np.bincount(rows, minlength=500).astype(np.float64)
    fast = _RankedClass(scores[:, 0], labels[:, 0]).auroc(weights)
    assert fast == pytest.approx(roc_auc_score(labels[rows, 0], scores[rows, 0]), abs=1e-12)


def test_bootstrap_brackets_point_estimate_and_is_reproducible():
    scores, labels = synthetic(num_images=400)
    first = compute_auroc(scores, labels, n_bootstrap=300, seed=11)
    again = compute_auroc(scores, labels, n_bootstrap=300, seed=11)
    other = compute_auroc(scores, labels, n_bootstrap=300, seed=12)
    assert first == again
    assert first["mean_ci_low"] != other["mean_ci_low"]
    assert first["mean_ci_low"] < first["mean_auroc"] < first["mean_ci_high"]
    for stats in first["per_class"].values():
        assert stats["ci_low"] < stats["auroc"] < stats["ci_high"]
        assert stats["ci_high"] - stats["ci_low"] < 0.2  # 400 images: a few points wide, not degenerate
    per_class, means = bootstrap_auroc(scores, labels, n_bootstrap=300, seed=11)
    assert per_class.shape == (300, 4) and means.shape == (300,)
    assert np.quantile(means, 0.025) == pytest.approx(first["mean_ci_low"])
    # a 50% interval is inside the 95% one
    narrow = compute_auroc(scores, labels, n_bootstrap=300, seed=11, confidence=0.5)
    assert first["mean_ci_low"] < narrow["mean_ci_low"] < narrow["mean_ci_high"] < first["mean_ci_high"]


def test_inputs_are_checked():
    with pytest.raises(ValueError):
        compute_auroc(np.zeros((4, 2)), np.zeros((4, 3)))
    with pytest.raises(ValueError):
        compute_auroc(np.zeros((4, 2)), np.full((4, 2), 0.5))


def test_evaluate_auroc_module_matches_python_api(monkeypatch):
    import evaluate

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    scores, labels = synthetic()
    metric = evaluate.load(metric_path("clarity_auroc"))
    via_module = metric.compute(
        predictions=scores.tolist(), references=labels.astype(int).tolist(), n_bootstrap=100, seed=5
    )
    assert via_module == compute_auroc(scores, labels, n_bootstrap=100, seed=5)
