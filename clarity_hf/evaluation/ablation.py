# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Ablation tables that can be read: every variant (the full model and one per switched-off component) is trained
from several seeds, and a difference is flagged only when it exceeds both the seed-to-seed spread and the bootstrap
confidence interval of the reference.

    runs = {"full CLARiTy": [entry_seed0, entry_seed1], "w/o SegmentCAM": [entry_seed0, entry_seed1]}
    table = aggregate_ablation({v: [entry_metrics(e) for e in entries] for v, entries in runs.items()}, "full CLARiTy")
    ablation_markdown(table)

Per variant and metric: the mean, the sample standard deviation and the [min, max] over seeds. A variant's delta
(variant mean - reference mean) is flagged when

- **beyond the seed spread**: the variant's and the reference's [min, max] ranges over seeds do not overlap, and
- **beyond the bootstrap CI**: the variant's mean lies outside the reference's 95% bootstrap interval (the mean of
  the reference seeds' interval bounds).

A metric without an interval (or a variant with a single seed) is never flagged: the table says "n/a".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .tables import code_span, markdown_table

__all__ = ["ABLATION_METRICS", "aggregate_ablation", "ablation_markdown", "entry_metrics"]

# metric key -> column title
ABLATION_METRICS: dict[str, str] = {
    "mean_auroc": "mean AUROC",
    "iou_0.3": "T(IoU)=0.3",
    "iou_0.5": "T(IoU)=0.5",
    "mean_iou_accuracy": "mean acc. T(IoU) 0.1-0.7",
}

# One measurement: (value, ci_low, ci_high); the bounds may be None.
Measurement = tuple[float, "float | None", "float | None"]


def _number(value: Any) -> float:
    return float(value) if value is not None and np.isfinite(value) else float("nan")


def entry_metrics(entry: Mapping[str, Any]) -> dict[str, Measurement]:
    """An evaluation entry (`evaluate_predictions`) -> the ablation metrics with their bootstrap intervals where the
    entry has them (AUROC: the classification bootstrap; localization: `macro_ci` of the reported result)."""
    classification = entry.get("classification") or {}
    metrics: dict[str, Measurement] = {
        "mean_auroc": (
            _number(classification.get("mean_auroc")),
            classification.get("mean_ci_low"),
            classification.get("mean_ci_high"),
        )
    }
    localization = entry.get("localization") or {}
    result = localization.get("eval") if "eval" in localization else localization
    table = (result or {}).get("iou") or {}
    intervals = table.get("macro_ci") or [None] * len(table.get("thresholds", []))
    for t, value, interval in zip(table.get("thresholds", []), table.get("macro", []), intervals):
        for key in ("iou_0.3", "iou_0.5"):
            if math.isclose(t, float(key[4:])):
                low, high = interval if interval else (None, None)
                metrics[key] = (_number(value), low, high)
    values = [v for v in table.get("macro", []) if v is not None and np.isfinite(v)]
    metrics["mean_iou_accuracy"] = (float(np.mean(values)) if values else float("nan"), None, None)
    for key in ABLATION_METRICS:
        metrics.setdefault(key, (float("nan"), None, None))
    return metrics


def _spread(values: Sequence[float]) -> dict[str, Any]:
    array = np.asarray([v for v in values if np.isfinite(v)], dtype=np.float64)
    if not len(array):
        return {"n": 0, "mean": float("nan"), "std": float("nan"), "min": float("nan"), "max": float("nan")}
    return {
        "n": int(len(array)),
        "mean": float(array.mean()),
        "std": float(array.std(ddof=1)) if len(array) > 1 else float("nan"),
        "min": float(array.min()),
        "max": float(array.max()),
        "values": [float(v) for v in values],
    }


def _interval(runs: Sequence[Mapping[str, Measurement]], key: str) -> tuple[float, float] | None:
    bounds = [run[key][1:] for run in runs if run[key][1] is not None and run[key][2] is not None]
    if not bounds:
        return None
    return float(np.mean([b[0] for b in bounds])), float(np.mean([b[1] for b in bounds]))


def aggregate_ablation(
    runs: Mapping[str, Sequence[Mapping[str, Measurement]]],
    reference: str,
    switches: Mapping[str, str] | None = None,
    metrics: Sequence[str] = tuple(ABLATION_METRICS),
) -> list[dict[str, Any]]:
    """Variant -> its per-seed measurements (`entry_metrics`) -> one row per variant (the reference first):
    {"variant", "switch", "seeds", "metrics": {key: {"n", "mean", "std", "min", "max", "values", "ci",
    "delta", "beyond_seed_spread", "beyond_ci", "flagged"}}} (see the module docstring for the criteria)."""
    if reference not in runs:
        raise ValueError(f"the reference {reference!r} is not among the variants {list(runs)}")
    order = [reference] + [v for v in runs if v != reference]
    base = {key: _spread([run[key][0] for run in runs[reference]]) for key in metrics}
    base_ci = {key: _interval(runs[reference], key) for key in metrics}
    rows = []
    for variant in order:
        row_metrics = {}
        for key in metrics:
            stats = _spread([run[key][0] for run in runs[variant]])
            stats["ci"] = _interval(runs[variant], key)
            if variant != reference:
                ref = base[key]
                stats["delta"] = stats["mean"] - ref["mean"]
                enough = stats["n"] > 1 and ref["n"] > 1
                beyond_spread = enough and (stats["min"] > ref["max"] or stats["max"] < ref["min"])
                interval = base_ci[key]
                beyond_ci = (
                    None
                    if interval is None or not np.isfinite(stats["mean"])
                    else bool(stats["mean"] < interval[0] or stats["mean"] > interval[1])
                )
                stats.update(
                    beyond_seed_spread=bool(beyond_spread) if enough else None,
                    beyond_ci=beyond_ci,
                    flagged=bool(beyond_spread and beyond_ci),
                )
            row_metrics[key] = stats
        rows.append(
            {
                "variant": variant,
                "switch": (switches or {}).get(variant, "-"),
                "seeds": len(runs[variant]),
                "metrics": row_metrics,
            }
        )
    return rows


def _cell(stats: Mapping[str, Any]) -> str:
    if not stats["n"]:
        return "n/a"
    text = f"{stats['mean']:.3f}"
    if stats["n"] > 1:
        text += f" ± {stats['std']:.3f} [{stats['min']:.3f}, {stats['max']:.3f}]"
    return text


def _delta_cell(stats: Mapping[str, Any]) -> str:
    if "delta" not in stats or not np.isfinite(stats["delta"]):
        return "n/a"
    text = f"{stats['delta']:+.3f}"
    if stats["flagged"]:
        return f"**{text}** ✓"
    if stats["beyond_seed_spread"] is None:
        return text + " (one seed)"
    if stats["beyond_ci"] is None:
        return text + " (no interval)"
    return text


def _chance_of_disjoint_ranges(num_seeds: int) -> str:
    """What the seed-spread criterion is worth: with n seeds per variant and no real difference (exchangeable
    results), the two [min, max] ranges are disjoint with probability 2 / C(2n, n)."""
    if num_seeds < 2:
        return "With one seed per variant nothing is flagged."
    chance = 2 / math.comb(2 * num_seeds, num_seeds)
    return (
        f"With {num_seeds} seeds per variant, two ranges are disjoint by chance alone with probability "
        f"{chance:.2g} when nothing changes (2 / C({2 * num_seeds}, {num_seeds})); the bootstrap criterion guards "
        "against that, and more seeds (`--ablation-seeds`) make the spread test itself stronger."
    )


def ablation_markdown(rows: Sequence[Mapping[str, Any]], steps: int, seeds: Sequence[int]) -> str:
    """The ablation section of the report from [`aggregate_ablation`] rows."""
    metrics = list(rows[0]["metrics"])
    header = ["variant", "switch", "seeds"] + [ABLATION_METRICS.get(k, k) for k in metrics]
    header += [f"delta {ABLATION_METRICS.get(k, k)}" for k in metrics]
    table = []
    for row in rows:
        cells = [row["variant"], code_span(row["switch"]) if row["switch"] != "-" else "-", str(row["seeds"])]
        cells += [_cell(row["metrics"][k]) for k in metrics]
        cells += ["-" if row is rows[0] else _delta_cell(row["metrics"][k]) for k in metrics]
        table.append(cells)
    flagged = [
        f"{row['variant']} ({ABLATION_METRICS.get(k, k)})"
        for row in rows[1:]
        for k in metrics
        if row["metrics"][k].get("flagged")
    ]
    return "\n".join(
        [
            "## Ablation (one CLARiTy component switched off per row)",
            "",
            f"Every row is a student trained on the full student schedule ({steps} optimizer steps) from each of the "
            f"seeds {', '.join(str(s) for s in seeds)}, with the same data; localization on the eval half after "
            "tuning on the tune half. Cells: mean ± standard deviation [min, max] over the seeds. Delta = variant "
            "mean - full-model mean; **bold ✓** marks a delta beyond both the seed spread (the two [min, max] ranges "
            "do not overlap) and the reference's 95% bootstrap interval. An unmarked delta is not a finding. "
            + _chance_of_disjoint_ranges(len(seeds)),
            "",
            markdown_table(header, table),
            "",
            "Deltas beyond both the seed spread and the bootstrap interval: "
            + ("; ".join(flagged) if flagged else "none")
            + ".",
        ]
    )
