# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Markdown + JSON evaluation report: several models (CLARiTy, baselines, ablations) as rows, side by side with the
paper's published rows.

A report is a plain, JSON-serialisable dict (NaN is written as `null`):

```
{
  "title": str, "clarity_hf_version": str, "metadata": {...},
  "models": {
    name: {
      "classification": AurocResult | None,            # clarity_hf.evaluation.classification
      "localization": LocalizationResult | None,       # the reported (eval-split) result
      "tuning": {"objective", "per_class", "grid", "tune_split", "eval_split", "thresholds",
                 "objective_values", "tune"} | None,   # present when a TuningResult was given
      "notes": str,
      "map": {"grid": "h x w", "stage": ...} | None,  # the heatmaps' grid and, for a teacher, the chosen stage
    }
  },
  "overview": str,                                      # a Markdown summary shown first ("" for none)
  "published": PUBLISHED_RESULTS,                       # or None
}
```

`metadata["evaluation"]` (`evaluation_metadata`) says what was measured on: data set, split, number of images, label
set, map grid. The paper's published rows are NIH ChestX-ray14 official-test figures over its 14 labels: they are put
beside an evaluation only when it is one of those (`is_nih_official_test`); anything else would compare apples with
oranges.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from .. import __version__
from ..configuration_clarity import NIH_PATHOLOGIES
from .classification import AurocResult
from .localization import LocalizationResult, TuningResult
from .tables import markdown_table

__all__ = [
    "NIH_DATASET_NAME",
    "PUBLISHED_RESULTS",
    "describe_evaluation",
    "evaluation_metadata",
    "is_nih_official_test",
    "ModelEntry",
    "build_report",
    "format_number",
    "format_published",
    "map_text",
    "render_markdown",
    "write_report",
    "load_report",
    "jsonable",
]

# The paper's published rows, encoded once: second-hand figures quoting the tables of arXiv 2512.16700 (CLARiTy),
# rounded; treat them as targets. Localization
# accuracy is macro over the 8 boxed classes, per ground-truth box, on half of the 880 boxed images after tuning the
# heatmap-to-box step on the other half.
PUBLISHED_RESULTS: dict[str, Any] = {
    "source": (
        "arXiv 2512.16700 (Statheros, Wang, Klein 2025), tables as quoted second-hand and rounded; not re-measured"
    ),
    "iou_thresholds": [0.1, 0.2, 0.3, 0.4, 0.5],
    "rows": [
        {"model": "CLARiTy-S-16-512", "mean_auroc": 0.818, "iou_macro": [0.81, 0.69, 0.59, 0.47, 0.32]},
        {"model": "ConvNeXtV2-B, 512 (the likely teacher)", "mean_auroc": 0.825, "iou_macro": None},
        {
            "model": "Li et al. 2022 (CNN-ViT hybrid)",
            "mean_auroc": None,
            "iou_macro": [0.64, 0.53, 0.40, 0.31, 0.24],
        },
        {"model": "PCAN (Zhu et al. 2022)", "mean_auroc": None, "iou_macro": [0.78, 0.57, 0.36, 0.21, 0.10]},
        {
            "model": "Wang et al. 2017 (ResNet-50)",
            "mean_auroc": 0.745,
            "iou_macro": [0.568, 0.373, 0.221, 0.116, 0.062],
        },
    ],
}


class ModelEntry(TypedDict, total=False):
    """What a caller gives per model; every key is optional."""

    classification: AurocResult
    localization: LocalizationResult | TuningResult
    notes: str
    map: dict[str, Any]


def jsonable(value: Any) -> Any:
    """Deep copy with tuples as lists, numpy scalars as Python numbers and NaN / inf as None."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


NIH_DATASET_NAME = "NIH ChestX-ray14"
NIH_OFFICIAL_SPLIT = "official lists"  # `split_source` of `build_chestxray14` with the official test list


def evaluation_metadata(
    dataset_name: str,
    split: str,
    num_images: int,
    label_names: list[str],
    map_grid: str | None = None,
    dataset_id: str | None = None,
    synthetic: bool = False,
    split_source: str | None = None,
) -> dict[str, Any]:
    """What an evaluation measured on, as the report and the model card state it (`metadata["evaluation"]`).

    `split_source` is the data builder's (`"official lists"` for NIH ChestX-ray14 read with its official split);
    `map_grid` the heatmaps' grid ("h x w")."""
    return {
        "dataset_name": str(dataset_name),
        "dataset_id": dataset_id,
        "split": str(split),
        "num_images": int(num_images),
        "label_names": [str(name) for name in label_names],
        "map_grid": map_grid,
        "synthetic": bool(synthetic),
        "split_source": split_source,
    }


def is_nih_official_test(metadata: Mapping[str, Any] | None) -> bool:
    """True when a report's `metadata["evaluation"]` is NIH ChestX-ray14's official test split with its 14 labels,
    the only evaluation the paper's and peers' published figures can stand beside."""
    evaluation = (metadata or {}).get("evaluation") or {}
    return (
        evaluation.get("dataset_name") == NIH_DATASET_NAME
        and evaluation.get("split") == "test"
        and evaluation.get("split_source") == NIH_OFFICIAL_SPLIT
        and list(evaluation.get("label_names") or []) == list(NIH_PATHOLOGIES)
        and not evaluation.get("synthetic")
    )


def describe_evaluation(
    evaluation: Mapping[str, Any],
    text: Callable[[Any], str] = str,
    code: Callable[[Any], str] = lambda value: f"`{value}`",
) -> str:
    """One line: "<data set>, split `s`, N images, K labels (a, b, c), map grid h x w". `text` and `code` render
    the values (the model card passes its Markdown escaping)."""
    labels = [text(name) for name in evaluation.get("label_names") or []]
    parts = [
        text(evaluation.get("dataset_name", "unknown data set")),
        f"split {code(evaluation.get('split', '?'))}",
        f"{text(evaluation.get('num_images', '?'))} images",
        f"{len(labels)} labels ({', '.join(labels)})",
    ]
    if evaluation.get("map_grid"):
        parts.append(f"map grid {text(evaluation['map_grid'])}")
    return ", ".join(parts)


def _split_localization(localization: Mapping | None) -> tuple[Mapping | None, dict | None]:
    """A LocalizationResult or a TuningResult -> (reported result, tuning summary or None)."""
    if localization is None or "iou" in localization:
        return localization, None
    tuning = {key: localization[key] for key in localization if key != "eval"}
    return localization["eval"], tuning


def build_report(
    models: Mapping[str, ModelEntry],
    title: str = "CLARiTy evaluation",
    include_published: bool = True,
    metadata: Mapping[str, Any] | None = None,
    overview: str = "",
) -> dict[str, Any]:
    """Collect the results of several models into one JSON-serialisable report dict (schema in the module doc).

    Args:
        models: model name -> {"classification": AurocResult, "localization": LocalizationResult or TuningResult,
            "notes": str}; the order is kept as the row order.
        title: the report's title.
        include_published: add the paper's published rows (`PUBLISHED_RESULTS`) when `metadata["evaluation"]` is
            an NIH ChestX-ray14 official-test evaluation with its 14 labels (`is_nih_official_test`).
        metadata: facts about the run, shown at the top; `evaluation` from [`evaluation_metadata`].
        overview: a Markdown summary of the run, rendered first, under the title.
    """
    entries = {}
    for name, entry in models.items():
        localization, tuning = _split_localization(entry.get("localization"))
        entries[name] = {
            "classification": entry.get("classification"),
            "localization": localization,
            "tuning": tuning,
            "notes": entry.get("notes", ""),
            "map": entry.get("map"),
        }
    return jsonable(
        {
            "title": title,
            "clarity_hf_version": __version__,
            "metadata": dict(metadata or {}),
            "models": entries,
            "published": PUBLISHED_RESULTS if include_published and is_nih_official_test(metadata) else None,
            "overview": overview,
        }
    )


def format_number(value: Any, digits: int = 3) -> str:
    """A measured number at `digits` decimals; None, NaN and inf (undefined) as "n/a"."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _fmt_ci(stats: Mapping | None, key: str = "auroc", low: str = "ci_low", high: str = "ci_high") -> str:
    if not stats or stats.get(key) is None:
        return "n/a"
    if stats.get(low) is None:
        return format_number(stats[key])
    return f"{format_number(stats[key])} [{format_number(stats[low])}, {format_number(stats[high])}]"


def _threshold_text(model: Mapping) -> str:
    localization = model.get("localization")
    if not localization:
        return "n/a"
    levels = {tuple(v) for v in localization["heatmap_thresholds"].values()}
    text = (
        ", ".join("/".join(format_number(v, 2) for v in level) for level in sorted(levels))
        if len(levels) == 1
        else "per class"
    )
    return text + (" (tuned)" if model.get("tuning") else "")


def _summary_section(report: Mapping) -> list[str]:
    models = report["models"]
    thresholds: list[float] = []
    for model in models.values():
        for t in (model.get("localization") or {}).get("iou", {}).get("thresholds", []):
            if t not in thresholds:
                thresholds.append(t)
    published = report.get("published")
    for t in (published or {}).get("iou_thresholds", []):
        if t not in thresholds:
            thresholds.append(t)
    thresholds.sort()
    header = ["model", "mean AUROC [95% CI]"] + [f"T(IoU)={t:g}" for t in thresholds]
    header += ["FP/image", "heatmap threshold", "map grid"]
    rows = []
    for name, model in models.items():
        classification = model.get("classification")
        auroc = (
            _fmt_ci(classification, "mean_auroc", "mean_ci_low", "mean_ci_high") if classification else "n/a"
        )
        localization = model.get("localization") or {}
        by_t = dict(
            zip(
                localization.get("iou", {}).get("thresholds", []),
                localization.get("iou", {}).get("macro", []),
            )
        )
        fp = localization.get("false_positives", {}).get("per_image")
        rows.append(
            [name, auroc]
            + [format_number(by_t.get(t)) for t in thresholds]
            + [format_number(fp, 2), _threshold_text(model), map_text(model.get("map"))]
        )
    if published:
        for row in published["rows"]:
            by_t = dict(zip(published["iou_thresholds"], row["iou_macro"] or []))
            cells = [format_published(by_t.get(t)) for t in thresholds]
            rows.append(
                [f"{row['model']} (published)", format_published(row["mean_auroc"])]
                + cells
                + ["n/a", "n/a", "n/a"]
            )
    lines = ["## Summary", ""]
    lines.append(markdown_table(header, rows))
    lines += [
        "",
        "Localization: accuracy per ground-truth box, macro over the boxed classes that have boxes in the evaluated "
        "split (eval half when tuned). Mean AUROC over the classes with both label values.",
    ]
    if published:
        lines += ["", f"Published rows: {published['source']}. Numbers shown as given."]
    else:
        lines += [
            "",
            "No published row is shown: the paper's and peers' figures are NIH ChestX-ray14 official-test results "
            "over its 14 labels, and this evaluation is not one.",
        ]
    return lines


def map_text(info: Mapping | None) -> str:
    """A model's map grid as the report writes it: "12 x 12", with the layer it was read from when one was chosen
    ("12 x 12, stage 1")."""
    if not info or not info.get("grid"):
        return "n/a"
    return info["grid"] + (f", stage {info['stage']}" if info.get("stage") is not None else "")


def format_published(value: Any) -> str:
    """A published number with the precision it was given at (two or three decimals)."""
    if value is None:
        return "n/a"
    return f"{value:.2f}" if round(value, 2) == value else f"{value:.3f}"


def _auroc_section(report: Mapping) -> list[str]:
    models = {n: m["classification"] for n, m in report["models"].items() if m.get("classification")}
    if not models:
        return []
    classes: list[str] = []
    for result in models.values():
        classes += [c for c in result["class_names"] if c not in classes]
    rows = [[c] + [_fmt_ci(result["per_class"].get(c)) for result in models.values()] for c in classes]
    rows.append(
        ["**mean**"]
        + [_fmt_ci(result, "mean_auroc", "mean_ci_low", "mean_ci_high") for result in models.values()]
    )
    lines = ["## Per-class AUROC [95% bootstrap CI]", ""]
    lines.append(markdown_table(["class"] + list(models), rows))
    notes = []
    for name, result in models.items():
        excluded = result.get("excluded_classes") or []
        notes.append(
            f"- {name}: {result['n_images']} images, {result['n_bootstrap']} bootstrap replicates (seed "
            f"{result['seed']}, {result['confidence']:.0%} percentile interval)"
            + (f"; excluded from the mean (one label value): {', '.join(excluded)}" if excluded else "")
        )
    return lines + [""] + notes


def _localization_section(name: str, model: Mapping) -> list[str]:
    result = model.get("localization")
    if not result:
        return []
    lines = [f"## Localization: {name}", ""]
    split = result.get("split")
    lines.append(
        f"Split: {split if split is not None else 'all'}; images: {result['n_images']}, "
        f"ground-truth boxes: {sum(result['n_gt_boxes'].values())}, predicted boxes: {result['n_predicted_boxes']}; "
        f"heatmap threshold: {_threshold_text(model)}; map grid: {map_text(model.get('map'))}."
    )
    tuning = model.get("tuning")
    if tuning:
        chosen = ", ".join(f"{c} {format_number(t, 2)}" for c, t in tuning["thresholds"].items())
        lines.append(
            f"Tuned on split `{tuning['tune_split']}` ({'per class' if tuning['per_class'] else 'global'}, "
            f"objective: {tuning['objective']}): {chosen}."
        )
    fp = result["false_positives"]
    for key, title in (("iou", "T(IoU)"), ("iobb", "T(IoBB)")):
        table = result[key]
        header = ["class", "GT boxes"] + [f"{title}={t:g}" for t in table["thresholds"]]
        if key == "iou":
            header.append("FP/image")
        rows = []
        for c in result["classes"]:
            row = [c, str(result["n_gt_boxes"][c])] + [format_number(v) for v in table["per_class"][c]]
            rows.append(row + ([format_number(fp["per_class"][c], 2)] if key == "iou" else []))
        macro = ["**macro**", str(sum(result["n_gt_boxes"].values()))] + [
            format_number(v) for v in table["macro"]
        ]
        rows.append(macro + ([format_number(fp["per_image"], 2)] if key == "iou" else []))
        lines += ["", markdown_table(header, rows)]
    lines += ["", f"False positives: {fp['criterion']}; {fp['total']} in total."]
    if model.get("notes"):
        lines += ["", f"Notes: {model['notes']}"]
    return lines


def render_markdown(report: Mapping[str, Any]) -> str:
    """The report dict -> a Markdown document (summary with published rows, per-class AUROC, per-model
    localization tables at every T(IoU) and T(IoBB))."""
    lines = [f"# {report['title']}", ""]
    if report.get("overview"):
        lines += [report["overview"].rstrip(), ""]
    metadata = report.get("metadata") or {}
    for key, value in metadata.items():
        if key == "evaluation" and isinstance(value, Mapping):
            lines.append(f"- evaluated on: {describe_evaluation(value)}")
        else:
            lines.append(f"- {key}: {value}")
    lines.append(f"- clarity_hf version: {report.get('clarity_hf_version', 'unknown')}")
    lines += ["", *_summary_section(report)]
    auroc = _auroc_section(report)
    if auroc:
        lines += ["", *auroc]
    for name, model in report["models"].items():
        section = _localization_section(name, model)
        if section:
            lines += ["", *section]
    return "\n".join(lines) + "\n"


def write_report(
    output_dir: str | Path,
    models: Mapping[str, ModelEntry],
    title: str = "CLARiTy evaluation",
    include_published: bool = True,
    metadata: Mapping[str, Any] | None = None,
    basename: str = "report",
    overview: str = "",
) -> dict[str, Path]:
    """Build the report and write `<basename>.json` and `<basename>.md` into `output_dir`; returns their paths."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    report = build_report(
        models, title=title, include_published=include_published, metadata=metadata, overview=overview
    )
    json_path, md_path = output_dir / f"{basename}.json", output_dir / f"{basename}.md"
    json_path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    md_path.write_text(render_markdown(report), encoding="utf-8")
    return {"json": json_path, "markdown": md_path}


def load_report(path: str | Path) -> dict[str, Any]:
    """Read a report JSON written by [`write_report`] (NaN values come back as None)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------- verdict and overview
# The demo's comparison: the student against its baselines, evaluated by the same code on the same split.
STUDENT_NAME = "CLARiTy"
BASELINE_NAMES = ("teacher Grad-CAM", "teacher CAM", "plain ViT (CLS attention)")
VERDICT_IOU = (0.3, 0.5)
VERDICT_AUROC = 0.9


def _reported_localization(entry: Mapping) -> Mapping | None:
    localization = entry.get("localization") or {}
    return localization.get("eval") if "eval" in localization else localization


def macro_at(entry: Mapping, threshold: float) -> float:
    """An entry's reported localization accuracy at T(IoU) = `threshold`, macro over the boxed classes (NaN if
    none)."""
    result = _reported_localization(entry)
    if not result:
        return float("nan")
    table = result["iou"]
    for t, value in zip(table["thresholds"], table["macro"]):
        if math.isclose(t, threshold):
            return float(value) if value is not None else float("nan")
    return float("nan")


def mean_localization(entry: Mapping) -> float:
    """An entry's reported localization accuracy, mean over its T(IoU) levels (NaN if none)."""
    values = [
        v
        for v in (_reported_localization(entry) or {}).get("iou", {}).get("macro", [])
        if v is not None and math.isfinite(v)
    ]
    return float(np.mean(values)) if values else float("nan")


def mean_auroc(entry: Mapping) -> float:
    """An entry's mean AUROC (NaN if none)."""
    value = (entry.get("classification") or {}).get("mean_auroc")
    return float(value) if value is not None else float("nan")


def verdict(
    entries: Mapping[str, Mapping], student: str = STUDENT_NAME, baselines: Sequence[str] = BASELINE_NAMES
) -> dict:
    """The verdict, computed from the numbers: the student's mean AUROC >= 0.9 and better localization than every
    baseline at T(IoU) 0.3 and 0.5."""
    clarity = entries[student]
    auroc = mean_auroc(clarity)
    checks = [
        {
            "check": f"{student} mean AUROC >= {VERDICT_AUROC}",
            "value": auroc,
            "passed": bool(auroc >= VERDICT_AUROC),
        }
    ]
    for name in baselines:
        if name not in entries:
            continue
        for t in VERDICT_IOU:
            ours, theirs = macro_at(clarity, t), macro_at(entries[name], t)
            checks.append(
                {
                    "check": f"{student} > {name} at T(IoU)={t:g}",
                    "value": ours,
                    "baseline": theirs,
                    "passed": bool(ours > theirs),
                }
            )
    return {"passed": all(c["passed"] for c in checks), "checks": checks}


def verdict_markdown(result: Mapping, data: str) -> str:
    """The verdict's section of the report (`data`: what it was measured on)."""
    lines = [
        "## Verdict (computed from the numbers above)",
        "",
        f"The student must reach a mean AUROC of at least {VERDICT_AUROC} and localize better than every baseline "
        f"at T(IoU) = {' and '.join(f'{t:g}' for t in VERDICT_IOU)}.",
        "",
    ]
    if result["passed"]:
        lines.append(f"**Met** on {data}: every check below passes.")
    else:
        failed = [c["check"] for c in result["checks"] if not c["passed"]]
        lines.append(
            f"**NOT met** on {data}: {len(failed)} of {len(result['checks'])} checks fail ({'; '.join(failed)})."
        )
    rows = [
        [
            c["check"],
            format_number(c["value"]),
            format_number(c.get("baseline")),
            "pass" if c["passed"] else "FAIL",
        ]
        for c in result["checks"]
    ]
    return "\n".join(lines + ["", markdown_table(["check", "CLARiTy", "baseline", "result"], rows)])


def overview_markdown(
    entries: Mapping[str, Mapping],
    check: Mapping,
    stage_choice: Mapping,
    *,
    data_source: str,
    image_size: int,
    schedule: Mapping[str, int],
    per_class_thresholds: bool = False,
    synthetic: bool = True,
    ablation_rows: Sequence[Mapping] = (),
    ablation_seeds: Sequence[int] = (),
    ablation_steps: int | None = None,
    student: str = STUDENT_NAME,
    baselines: Sequence[str] = BASELINE_NAMES,
) -> str:
    """The one-page summary at the top of the demo's report: what was compared, on what data and grid, what the
    numbers say and what they do not. `check`: the [`verdict`]; `stage_choice`: the teacher's Grad-CAM stage
    selection; `schedule`: model -> optimizer steps."""
    methods = [f"{name} (map grid {map_text(entry.get('map'))})" for name, entry in entries.items()]
    ours = entries[student]
    best = max(
        (name for name in baselines if name in entries),
        key=lambda name: mean_localization(entries[name]),
        default=None,
    )
    steps = ", ".join(f"{model} {count}" for model, count in schedule.items())
    lines = [
        "## In short",
        "",
        f"**Compared.** {'; '.join(methods)}. Every method is evaluated by the same code on the same test split: "
        "mean AUROC over every test image (95% bootstrap interval), and box localization on the boxed test images "
        f"(heatmap threshold {'per class' if per_class_thresholds else 'one for all classes'} for every "
        "method alike, tuned on the `tune` half and reported on the `eval` half). The teacher's Grad-CAM is read "
        "from the encoder stage that localises best on the `tune` "
        f"half (chosen: stage {stage_choice['stage']}, {stage_choice['grid']}); CAM exists on "
        "the teacher's last stage only. The plain ViT has CLARiTy's backbone and patch grid.",
        "",
        f"**Data.** {data_source}; the models see {image_size} px inputs. Schedule: {steps} optimizer steps.",
        "",
        f"**What the numbers say.** {student}: mean AUROC {format_number(mean_auroc(ours))}, localization accuracy "
        f"at T(IoU) 0.3 / 0.5 of {format_number(macro_at(ours, 0.3))} / {format_number(macro_at(ours, 0.5))} "
        f"(mean over T(IoU) 0.1-0.7: {format_number(mean_localization(ours))}).",
    ]
    if best is not None:
        lines[-1] += (
            f" The best-localising baseline, {best}, reaches {format_number(macro_at(entries[best], 0.3))} / "
            f"{format_number(macro_at(entries[best], 0.5))} (mean {format_number(mean_localization(entries[best]))})."
        )
    lines[-1] += f" Verdict: {'met' if check['passed'] else 'not met'} (checks below)."
    if ablation_rows:
        flagged = [
            f"{row['variant']} ({key})"
            for row in ablation_rows[1:]
            for key, stats in row["metrics"].items()
            if stats.get("flagged")
        ]
        lines += [
            "",
            f"**Ablations** ({len(ablation_rows) - 1} switched-off component(s), seeds "
            f"{', '.join(map(str, ablation_seeds))}, {ablation_steps} steps each): differences beyond both the seed "
            f"spread and the bootstrap interval: {'; '.join(flagged) if flagged else 'none'}.",
        ]
    else:
        lines += [
            "",
            "**Ablations** were not run (`--ablations all` adds them, two seeds per variant by default).",
        ]
    caveat = (
        "the images are synthetic chest X-rays with drawn lesions, small and easy, not NIH ChestX-ray14; "
        if synthetic
        else ""
    )
    lines += [
        "",
        f"**What they do not say.** This is not the paper's setting: {caveat}the models are tiny and trained for "
        f"minutes at {image_size} px (the paper: ViT-S/16 at 512 px, a 32 x 32 patch grid, against a "
        "ConvNeXtV2-B teacher with a 16 x 16 last stage). The numbers show that the pipeline, the metrics and the "
        "comparison work end to end, and how the methods rank on this data; they are not evidence about accuracy "
        "on real radiographs, and intervals reflect the test images only, not training variation (seeds) except "
        "in the ablation table.",
    ]
    return "\n".join(lines)
