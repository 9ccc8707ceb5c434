# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Per-class and mean AUROC of the validation pass.

Uses `clarity_hf.evaluation.classification` when it provides `compute_auroc`; this scikit-learn fallback returns
the same structure. A class whose validation labels are all 0 or all 1 has no AUROC (NaN) and is left out of the
mean.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score


def multilabel_auroc(labels: np.ndarray, scores: np.ndarray, label_names: list[str]) -> dict:
    """`{"per_class": {name: auroc}, "mean_auroc": float, "num_defined": int}` for (N, C) labels and scores."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    per_class = {}
    for index, name in enumerate(label_names):
        column = labels[:, index]
        if column.min() == column.max():
            per_class[name] = float("nan")
        else:
            per_class[name] = float(roc_auc_score(column, scores[:, index]))
    defined = [value for value in per_class.values() if not np.isnan(value)]
    return {
        "per_class": per_class,
        "mean_auroc": float(np.mean(defined)) if defined else float("nan"),
        "num_defined": len(defined),
    }
