# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Multi-label per-class and mean AUROC with bootstrap intervals, as an `evaluate` metric that works offline.

A thin wrapper of `clarity_hf.evaluation.classification.compute_auroc` (scikit-learn's `roc_auc_score`); it imports
the `clarity_hf` package because `evaluate.load(<folder>)` copies only this file into its module cache.
"""

import datasets
import evaluate
import numpy as np

try:
    from clarity_hf.evaluation.classification import compute_auroc
except ImportError as err:  # pragma: no cover - exercised only without clarity_hf
    raise ImportError(
        "the clarity_auroc metric calls the clarity_hf package: `pip install clarity_hf` (or run from a checkout "
        "whose root is on sys.path)"
    ) from err

_DESCRIPTION = """\
Per-class AUROC (scikit-learn) for multi-label scores, the mean over the classes with both label values, and
percentile bootstrap 95% intervals that resample images (seeded).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: (N, C) scores (logits or probabilities).
    references: (N, C) binary labels.
    class_names: optional list of C names (default: the 14 NIH pathologies when C == 14).
    n_bootstrap: bootstrap replicates (default 1000; 0 disables the intervals).
    seed: replicate seed (default 0).
    confidence: interval coverage (default 0.95).
Returns:
    the `AurocResult` dict of `clarity_hf.evaluation.compute_auroc`: `mean_auroc`, `mean_ci_low`, `mean_ci_high`,
    `per_class` {name: {auroc, ci_low, ci_high, n_positive, n_negative}}, `excluded_classes`, ...
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ClarityAuroc(evaluate.Metric):
    """Per-class and mean AUROC with bootstrap intervals; a thin wrapper of `compute_auroc`."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.List(datasets.Value("float64")),
                    "references": datasets.List(datasets.Value("int64")),
                }
            ),
        )

    def _compute(self, predictions, references, class_names=None, n_bootstrap=1000, seed=0, confidence=0.95):
        return dict(
            compute_auroc(
                np.asarray(predictions, dtype=np.float64),
                np.asarray(references, dtype=np.float64),
                class_names=class_names,
                n_bootstrap=n_bootstrap,
                seed=seed,
                confidence=confidence,
            )
        )
