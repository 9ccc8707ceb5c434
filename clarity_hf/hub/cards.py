# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Model and dataset cards, rendered from measured results and the package's templates (`hub/templates/*.md`).

Every string that comes from the user (labels, model and data set names, notes, recipe entries, published rows) is
written through [`escape_markdown`] / [`code_span`], so that it renders as plain text: it cannot add a heading, a
table column, an HTML element or a YAML front-matter fence. The templates are rendered by huggingface_hub's
`ModelCard.from_template` / `DatasetCard.from_template` (jinja2), which writes the metadata block from the card
data as YAML. No figure is typed by hand: the model card reads the evaluation report of
`clarity_hf.evaluation.report` (schema in [`load_results`]).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
from huggingface_hub import DatasetCard, DatasetCardData, EvalResult, ModelCard, ModelCardData
from huggingface_hub.utils import validate_repo_id

from ..configuration_clarity import NIH_PATHOLOGIES, ClarityConfig
from ..data.features import get_metadata, label_matrix
from ..evaluation.report import (
    NIH_DATASET_NAME,
    PUBLISHED_RESULTS,
    describe_evaluation,
    format_number,
    format_published,
    is_nih_official_test,
)
from ..evaluation.tables import code_span, escape_markdown, markdown_table

__all__ = [
    "DATASET_CARD_TEMPLATE",
    "MODEL_CARD_TEMPLATE",
    "load_results",
    "make_dataset_card",
    "render_dataset_card",
    "render_model_card",
    "select_model",
]

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
MODEL_CARD_TEMPLATE = TEMPLATE_DIR / "model_card.md"
DATASET_CARD_TEMPLATE = TEMPLATE_DIR / "dataset_card.md"
NIH_SOURCE_TEMPLATE = TEMPLATE_DIR / "nih_chestxray14.md"
DEFAULT_REPO_ID = "org/clarity-s-16-512"

# Config fields whose values the paper's abstract does not state (reconstructed choices), with what they mean.
RECONSTRUCTED_FIELDS: dict[str, str] = {
    "num_attention_map_layers": "class maps = class-to-patch attention averaged over the last K blocks",
    "attention_map_head_fusion": "fusion of the attention heads in the class maps",
    "use_patch_affinity_refinement": "MCTformer patch-affinity refinement of the class maps",
    "segment_cam_kernel_size": "SegmentCAM: conv class head S on the patch grid",
    "foreground_hidden_size": "SegmentCAM: width of the foreground head G",
    "anatomical_prior_size": "SegmentCAM: side of the shipped population thorax atlas",
    "heatmap_source": "heatmap H = normalise(sqrt(A * relu(S))) * G",
    "pooling_temperature": "attention pooling: softmax temperature over S",
    "logit_combination": "inference logits from class tokens and attention pooling",
    "orthogonal_loss_weight": "orthogonal class-token loss: mean squared off-diagonal cosine similarity",
    "distillation_loss_weight": "multi-label distillation from the ConvNeXtV2 teacher",
    "distillation_temperature": "distillation temperature",
    "distillation_type": "soft (teacher sigmoid) or hard (thresholded) distillation targets",
    "foreground_loss_weight": "BCE + Dice of G against the anatomical prior",
    "class_token_init": "class-token initialisation from DINO's CLS token",
    "class_token_init_std": "noise / trunc-normal std of that initialisation",
}


def render_card(card_class, card_data, template_path: str | Path, **fields: str):
    """`card_class.from_template` (huggingface_hub's jinja2 rendering) of the template at `template_path`: the YAML
    front matter from `card_data` and every `{{ name }}` from `fields`, already escaped Markdown (autoescape is off,
    and a value is inserted as text, never read as a template). A placeholder with no value is an error, where
    jinja2 would silently render it empty."""
    template = Path(template_path).read_text(encoding="utf-8")
    known = {"card_data", *card_data.to_dict(), *fields}
    missing = jinja2.meta.find_undeclared_variables(jinja2.Environment().parse(template)) - known
    if missing:
        raise KeyError(f"{template_path}: no value for the placeholder(s) {sorted(missing)}")
    card = card_class.from_template(card_data, template_str=template, **fields)
    if template.endswith("\n") and not card.text.endswith("\n"):
        card.text += "\n"  # jinja2 drops a template's final newline
    return card


# ---------------------------------------------------------------------------------------------------- results
def load_results(results: str | Path | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Read and check an evaluation report (a path to the JSON written by
    `clarity_hf.evaluation.report.write_report`, or the dict of `build_report`); None stays None.

    The card reads one model entry (`model_name`, default: the first), the report's `published` rows and two
    optional `metadata` entries describing the runs:

        "metadata": {
          "training": {"synthetic_only": bool, "dataset_name": str, "dataset_id": str | null,
                       "base_model": str | null, "description": str, "recipe": {name: value}},
          "evaluation": clarity_hf.evaluation.report.evaluation_metadata(...): {"dataset_name", "dataset_id",
                        "split", "num_images", "label_names", "map_grid", "synthetic", "split_source"},
        }

    Raises `ValueError` naming the file and the problem when it is not such a report or a model entry lacks the keys
    the card reads.
    """
    if results is None:
        return None
    source = "results"
    if isinstance(results, (str, Path)):
        source = str(results)
        try:
            results = json.loads(Path(results).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{source}: not a readable evaluation JSON ({err})") from err
    results = dict(results)
    models = results.get("models")
    if not isinstance(models, Mapping) or not models:
        raise ValueError(
            f"{source}: not a clarity_hf evaluation report (no non-empty 'models'); write it with "
            "clarity_hf.evaluation.report.write_report or build_report"
        )
    for name, entry in models.items():
        classification = entry.get("classification")
        if classification is not None:
            for key in ("per_class", "mean_auroc"):
                if key not in classification:
                    raise ValueError(f"{source}: model {name!r}: classification lacks '{key}'")
        localization = entry.get("localization")
        if localization is not None:
            for key in ("classes", "iou"):
                if key not in localization:
                    raise ValueError(f"{source}: model {name!r}: localization lacks '{key}'")
    return results


def select_model(results: Mapping[str, Any], model_name: str | None = None) -> tuple[str, dict[str, Any]]:
    """The (name, entry) of `model_name` in a report's `models`, or of its first model when `model_name` is None."""
    models = results["models"]
    if model_name is None:
        model_name = next(iter(models))
    if model_name not in models:
        raise ValueError(f"model {model_name!r} is not in the evaluation report; it holds {list(models)}")
    return model_name, models[model_name]


# ---------------------------------------------------------------------------------------------------- model card
def _finite(value: Any) -> bool:
    return value is not None and math.isfinite(float(value))


def _classification_table(classification: Mapping[str, Any]) -> str:
    names = classification.get("class_names") or list(classification["per_class"])
    rows = []
    for name in names:
        entry = classification["per_class"][name]
        ci = (
            f"{format_number(entry.get('ci_low'))} to {format_number(entry.get('ci_high'))}"
            if "ci_low" in entry
            else ""
        )
        rows.append(
            [
                escape_markdown(name),
                format_number(entry["auroc"]),
                ci,
                escape_markdown(entry.get("n_positive", "")),
                escape_markdown(entry.get("n_negative", "")),
            ]
        )
    ci = ""
    if "mean_ci_low" in classification:
        ci = f"{format_number(classification['mean_ci_low'])} to {format_number(classification['mean_ci_high'])}"
    rows.append(["**Mean**", f"**{format_number(classification['mean_auroc'])}**", ci, "", ""])
    return markdown_table(["Pathology", "AUROC", "95% CI", "positives", "negatives"], rows)


def _classification_summary(
    classification: Mapping[str, Any], model_name: str, published: Mapping[str, Any] | None
) -> str:
    rows = [
        [
            f"**{escape_markdown(model_name)} (this checkpoint)**",
            f"**{format_number(classification['mean_auroc'])}**",
        ]
    ]
    for row in (published or {}).get("rows", []):
        if row["mean_auroc"] is not None:
            rows.append([f"{escape_markdown(row['model'])} (published)", format_published(row["mean_auroc"])])
    excluded = classification.get("excluded_classes") or []
    note = (
        "\n\nLeft out of the mean (a single label value in the test set): "
        + ", ".join(escape_markdown(name) for name in excluded)
        + "."
        if excluded
        else ""
    )
    num_classes = len(classification.get("class_names") or classification["per_class"])
    return markdown_table(["Model", f"Mean AUROC ({num_classes} classes)"], rows) + note


def _accuracy_table(
    table: Mapping[str, Any], classes: Sequence[str], kind: str, published: Mapping[str, Any] | None
) -> str:
    thresholds = [float(t) for t in table["thresholds"]]
    header = ["Pathology"] + [f"T({kind})={t:g}" for t in thresholds]
    rows = [
        [escape_markdown(name)] + [format_number(v, 3) for v in table["per_class"][name]] for name in classes
    ]
    rows.append(["**Macro (this checkpoint)**"] + [f"**{format_number(v)}**" for v in table["macro"]])
    if published is not None:
        published_thresholds = [round(float(t), 3) for t in published["iou_thresholds"]]
        for row in published["rows"]:
            accuracy = dict(zip(published_thresholds, row["iou_macro"] or []))
            if accuracy:
                cells = [
                    format_published(accuracy[round(t, 3)]) if round(t, 3) in accuracy else ""
                    for t in thresholds
                ]
                rows.append([f"{escape_markdown(row['model'])} (published)"] + cells)
    return markdown_table(header, rows)


def _localization_section(
    localization: Mapping[str, Any] | None,
    tuning: Mapping[str, Any] | None,
    published: Mapping[str, Any] | None,
) -> str:
    if localization is None:
        return "### Localization\n\nLocalization was not evaluated for this checkpoint."
    classes = list(localization["classes"])
    parts = ["### Localization (macro over the boxed classes, per ground-truth box)"]
    split = localization.get("split")
    described = f"{escape_markdown(localization.get('n_images', ''))} boxed images" + (
        f" ({code_span(split)} half)" if split else ""
    )
    thresholds = localization.get("heatmap_thresholds") or {}
    levels = sorted({tuple(v) if isinstance(v, (list, tuple)) else (v,) for v in thresholds.values()})
    level_text = "; ".join(", ".join(format_number(x, 2) for x in level) for level in levels)
    if tuning:
        level_text += (
            f" (tuned on the {code_span(tuning.get('tune_split'))} half, objective: "
            f"{escape_markdown(tuning.get('objective'))})"
        )
    parts.append(
        f"Evaluated on {described}; heatmap threshold(s): {level_text}. A ground-truth box is found when a predicted "
        "box overlaps it by more than T. Accuracy at T(IoU):"
    )
    parts.append(_accuracy_table(localization["iou"], classes, "IoU", published))
    if localization.get("iobb"):
        parts.append("Accuracy at T(IoBB) (intersection over the predicted box):")
        parts.append(_accuracy_table(localization["iobb"], classes, "IoBB", None))
    false_positives = localization.get("false_positives")
    if false_positives:
        parts.append(
            f"False-positive boxes per image: **{format_number(false_positives['per_image'])}** "
            f"({escape_markdown(false_positives.get('criterion', ''))})."
        )
    return "\n\n".join(parts)


def _eval_results(entry: Mapping[str, Any], evaluation: Mapping[str, Any]) -> list[EvalResult]:
    # These strings go into the YAML metadata only (written by huggingface_hub's YAML dump), not into the Markdown.
    dataset_name = str(evaluation.get("dataset_name", "unknown data set"))
    dataset_type = str(
        evaluation.get("dataset_id")
        or ("synthetic" if evaluation.get("synthetic") else None)
        or (
            "nih-chestxray14"
            if dataset_name == NIH_DATASET_NAME
            else re.sub(r"[^a-z0-9]+", "-", dataset_name.lower())
        )
    )
    split = str(evaluation.get("split", "unknown"))
    common = {"dataset_type": dataset_type, "dataset_name": dataset_name, "dataset_split": split}
    classification_task = {
        "task_type": "image-classification",
        "task_name": "Multi-label classification",
        "metric_type": "roc_auc",
    }
    measured = []  # (task fields, metric name, value)
    classification = entry.get("classification")
    if classification is not None:
        num_classes = len(classification.get("class_names") or classification["per_class"])
        measured.append(
            (classification_task, f"Mean AUROC ({num_classes} classes)", classification["mean_auroc"])
        )
        for name, class_entry in classification["per_class"].items():
            measured.append((classification_task, f"AUROC {name}", class_entry["auroc"]))
    localization = entry.get("localization")
    if localization is not None:
        localization_task = {
            "task_type": "object-detection",
            "task_name": "Weakly-supervised localization",
            "metric_type": "accuracy",
        }
        for threshold, value in zip(localization["iou"]["thresholds"], localization["iou"]["macro"]):
            name = f"Localization accuracy T(IoU)={float(threshold):g} (macro)"
            measured.append((localization_task, name, value))
    return [
        EvalResult(**task, metric_name=name, metric_value=round(float(value), 4), **common)
        for task, name, value in measured
        if _finite(value)
    ]


def _architecture(config: ClarityConfig) -> str:
    """The backbone's size from the config: "ViT-S/16" for the known widths, else its width, depth and heads."""
    names = {(192, 12, 3): "ViT-Ti", (384, 12, 6): "ViT-S", (768, 12, 12): "ViT-B"}
    shape = (int(config.hidden_size), int(config.num_hidden_layers), int(config.num_attention_heads))
    name = names.get(shape)
    if name:
        return f"{name}/{int(config.patch_size)}"
    return f"ViT ({shape[0]} wide, {shape[1]} layers, {shape[2]} heads, patch {int(config.patch_size)})"


def _reconstructed_table(config: ClarityConfig) -> str:
    rows = [
        [code_span(field), code_span(repr(getattr(config, field, None))), meaning]
        for field, meaning in RECONSTRUCTED_FIELDS.items()
    ]
    rows.append(
        [
            "training recipe",
            "see above",
            "AdamW, cosine schedule, warm-up, drop-path, CXR-safe augmentation (MCTformer / DeiT defaults)",
        ]
    )
    return markdown_table(["config field", "value in this checkpoint", "what it controls"], rows)


def _training_section(training: Mapping[str, Any], evaluated: bool) -> str:
    lines = []
    if training.get("synthetic_only"):
        lines.append(
            "**Trained only on synthetic images** generated by clarity_hf's synthetic chest X-ray generator; it has "
            "never seen a real radiograph, and its outputs on real images are meaningless."
        )
    if training.get("description"):
        lines.append(escape_markdown(training["description"]))
    if training.get("dataset_name"):
        dataset = escape_markdown(training["dataset_name"]) + (
            f" ({code_span(training['dataset_id'])})" if training.get("dataset_id") else ""
        )
        lines.append(f"Training data: {dataset}.")
    recipe = training.get("recipe") or {}
    if recipe:
        lines.append(
            markdown_table(
                ["hyper-parameter", "value"], [[escape_markdown(k), code_span(v)] for k, v in recipe.items()]
            )
        )
    if not lines:
        lines.append(
            "The evaluation report given to the export did not describe the training run (its "
            "`metadata.training`)."
            if evaluated
            else "No evaluation report was given to the export, so the training run is not described."
        )
    return "\n\n".join(lines)


def _widget(example_outputs: Sequence[Mapping[str, Any]], repo_id: str | None) -> list[dict[str, Any]]:
    widget = []
    for example in example_outputs:
        src = example["path"]
        if repo_id:
            src = f"https://huggingface.co/{repo_id}/resolve/main/{example['path']}"
        top = sorted(example["scores"].items(), key=lambda item: -item[1])[:5]
        widget.append(
            {
                "src": src,
                "example_title": str(example["title"]),
                "output": {
                    "data": [{"label": str(label), "score": round(float(score), 4)} for label, score in top]
                },
            }
        )
    return widget


def render_model_card(
    config: ClarityConfig,
    results: str | Path | Mapping[str, Any] | None = None,
    repo_id: str | None = None,
    model_name: str | None = None,
    example_outputs: Sequence[Mapping[str, Any]] = (),
    template_path: str | Path | None = None,
) -> ModelCard:
    """The model card (a `huggingface_hub.ModelCard`) rendered from `templates/model_card.md`.

    Every measured number comes from `results`, the evaluation report (see [`load_results`]; its
    `models[model_name]` entry, default: the first model); the paper's figures from the report's `published` rows
    (else `clarity_hf.evaluation.report.PUBLISHED_RESULTS`); widget outputs from `example_outputs`
    ({"path", "title", "scores"}, the model's predictions at export time). Without results, `model_name` (default:
    the repo's name) only names the card. `repo_id` must be a valid Hub repo id (it is written into code samples).
    """
    if repo_id is not None:
        validate_repo_id(repo_id)
    results = load_results(results)
    entry: dict[str, Any] = {}
    metadata: Mapping[str, Any] = {}
    published: Mapping[str, Any] | None = None
    if results is not None:
        model_name, entry = select_model(results, model_name)
        metadata = results.get("metadata") or {}
        # the paper's and peers' rows are NIH official-test figures over 14 labels: only beside such an evaluation
        if is_nih_official_test(metadata):
            published = results.get("published") or PUBLISHED_RESULTS
    model_name = str(model_name or (repo_id or DEFAULT_REPO_ID).split("/")[-1])
    name = escape_markdown(model_name)
    training = metadata.get("training") or {}
    evaluation = metadata.get("evaluation") or {}
    synthetic = bool(training.get("synthetic_only"))
    datasets = [str(d) for d in (training.get("dataset_id"), evaluation.get("dataset_id")) if d]
    # the starting point recorded by the training run or the DINO conversion (`config.base_model_id`), else none
    base_model = training.get("base_model") or getattr(config, "base_model_id", None)
    eval_results = _eval_results(entry, evaluation) if results else None
    tags = [
        "medical-imaging",
        "chest-xray",
        "weakly-supervised-localization",
        "vision-transformer",
        "clarity",
    ]
    if synthetic:
        tags.append("synthetic-data")
    card_data = ModelCardData(
        license="apache-2.0",
        library_name="transformers",
        pipeline_tag="image-classification",
        tags=tags,
        datasets=sorted(set(datasets)) or None,
        metrics=["roc_auc", "accuracy"] if results else None,
        base_model=str(base_model) if base_model else None,
        model_name=model_name,
        eval_results=eval_results or None,
        widget=_widget(example_outputs, repo_id) or None,
    )
    if synthetic:
        first_line = (
            "> **⚠️ This model was trained only on synthetic data: it has never seen a real chest X-ray, its "
            "scores and heatmaps on real images are meaningless, and it exists to test the clarity_hf "
            "software. Research use only; not for clinical use.**"
        )
    else:
        first_line = "> **Research use only. Not for clinical use.**"
    if results is None:
        status_line = "This checkpoint has **not been evaluated**: the card reports no measured results."
        results_intro = "No evaluation JSON was given to the export, so no measured figure is reported."
    else:
        where = (
            describe_evaluation(evaluation, text=escape_markdown, code=code_span)
            if evaluation
            else "a data set the evaluation report does not name"
        )
        status_line = f"Measured results below are on {where}" + (
            " (synthetic test images: they say nothing about real chest X-rays)."
            if evaluation.get("synthetic")
            else "."
        )
        results_intro = (
            f"All figures of this checkpoint are read from its evaluation report (`eval_results.json`, model "
            f"{code_span(model_name)}): {where}."
        )
        if entry.get("notes"):
            results_intro += f" Notes: {escape_markdown(entry['notes'])}"
    classification = entry.get("classification")
    if classification is not None:
        classification_summary = _classification_summary(classification, model_name, published)
        classification_table = (
            f"### Classification: per-class AUROC on {escape_markdown(classification.get('n_images', ''))} images\n\n"
            + _classification_table(classification)
        )
    else:
        classification_summary = ""
        classification_table = "### Classification\n\nClassification was not evaluated for this checkpoint."
    return render_card(
        ModelCard,
        card_data,
        template_path or MODEL_CARD_TEMPLATE,
        first_line=first_line,
        model_name=name,
        repo_id=repo_id or DEFAULT_REPO_ID,
        patch_size=str(int(config.patch_size)),
        image_size=str(int(config.image_size)),
        num_labels=str(int(config.num_labels)),
        status_line=status_line,
        results_intro=results_intro,
        classification_summary=classification_summary,
        classification_table=classification_table,
        localization_section=_localization_section(entry.get("localization"), entry.get("tuning"), published),
        published_note=(
            "Rows marked *(published)* are the paper's figures, not results of this checkpoint (targets): "
            f"{escape_markdown(published['source'])}."
            if published
            else "No published figure is shown: the paper's and peers' figures are NIH ChestX-ray14 official-test "
            "results over its 14 labels, and this evaluation is not one."
        ),
        label_list=", ".join(escape_markdown(config.id2label[i]) for i in range(config.num_labels)),
        architecture=escape_markdown(_architecture(config)),
        training_section=_training_section(training, evaluated=results is not None),
        reconstructed_table=_reconstructed_table(config),
    )


# ---------------------------------------------------------------------------------------------------- dataset card
def _size_category(total: int) -> str:
    for bound, name in (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
    ):
        if total < bound:
            return name
    return "1M<n<10M"


def render_dataset_card(
    dataset=None,
    *,
    split_sizes: Mapping[str, int] | None = None,
    label_counts: Mapping[str, Mapping[str, int]] | None = None,
    features: Mapping[str, str] | None = None,
    label_names: Sequence[str] | None = None,
    pretty_name: str | None = None,
    source: str | None = None,
    license: str | None = None,
    template_path: str | Path = DATASET_CARD_TEMPLATE,
) -> DatasetCard:
    """The dataset card of a clarity_hf `datasets` export (NIH ChestX-ray14, synthetic or a generic CSV/COCO set).

    Pass the built `datasets.DatasetDict` (split sizes, features, the clarity_hf metadata: label names, source, box
    frame; and, when a `labels` column is present, per-split label counts are read from it), or the same facts as
    `split_sizes` {split: rows}, `label_counts` {split: {label: positives}} and `features` {column: description}.
    The NIH source, terms, biases and citation are added when the source is NIH ChestX-ray14.
    """
    metadata: Mapping[str, Any] = {}
    if dataset is not None:
        metadata = get_metadata(dataset)
        split_sizes = {name: split.num_rows for name, split in dataset.items()}
        first = next(iter(dataset.values()))
        features = {name: str(feature) for name, feature in first.features.items()}
        label_names = label_names or metadata.get("label_names")
        if "labels" in first.column_names:
            names = list(label_names or NIH_PATHOLOGIES)
            label_counts = {}
            for name, split in dataset.items():
                counts = label_matrix(split).sum(axis=0)
                label_counts[name] = {label: int(v) for label, v in zip(names, counts)}
    label_names = list(label_names or NIH_PATHOLOGIES)
    source = str(source or metadata.get("source") or NIH_DATASET_NAME)
    is_nih = source == NIH_DATASET_NAME
    pretty_name = str(pretty_name or (NIH_DATASET_NAME if is_nih else "clarity_hf chest X-ray data"))
    split_sizes = dict(split_sizes or {})
    card_data = DatasetCardData(
        pretty_name=pretty_name,
        license=license or "other",
        license_name="nih-clinical-center-chestxray14-terms" if is_nih and not license else None,
        task_categories=["image-classification", "object-detection"],
        tags=["medical-imaging", "chest-xray", "weakly-supervised-localization", "clarity_hf"],
        size_categories=[_size_category(sum(split_sizes.values()))],
        annotations_creators=["machine-generated", "expert-generated"] if is_nih else None,
        source_datasets=["original"],
    )
    split_table = markdown_table(
        ["split", "images"], [[escape_markdown(name), str(rows)] for name, rows in split_sizes.items()]
    )
    feature_table = markdown_table(
        ["column", "feature"],
        [[code_span(name), code_span(feature)] for name, feature in (features or {}).items()],
    )
    if label_counts:
        splits = list(label_counts)
        label_table = markdown_table(
            ["label"] + [escape_markdown(s) for s in splits],
            [
                [escape_markdown(label)] + [str(label_counts[s].get(label, 0)) for s in splits]
                for label in label_names
            ],
        )
    else:
        label_table = "Label counts were not computed for this export."
    frame = metadata.get("box_frame", [1024, 1024] if is_nih else "original_size")
    box_frame = (
        f"a fixed {int(frame[0])}x{int(frame[1])} frame"
        if isinstance(frame, (list, tuple))
        else "the frame given by `original_size` (width, height)"
    )
    if is_nih:
        description = (
            "The NIH ChestX-ray14 data set (Wang et al., CVPR 2017) as a Hugging Face `datasets.DatasetDict`, built "
            "by `clarity_hf.data` from a user's own NIH download: frontal chest radiographs (real patient images "
            "released by the NIH Clinical Center; labels are text-mined and noisy, see *Biases*) with multi-hot "
            "pathology labels, patient metadata, the official patient-level train/test split and, for the "
            "localization benchmark, the NIH bounding boxes."
        )
        split_note = (
            "The official split (`train_val_list.txt` / `test_list.txt`) is by patient; the validation split, when "
            "present, is carved out of `train_val` by patient with a fixed seed."
        )
        source_section = NIH_SOURCE_TEMPLATE.read_text(encoding="utf-8")
    else:
        description = f"Built with clarity_hf from: {escape_markdown(source)}."
        split_note = ""
        source_section = (
            "## Source and terms\n\nUse of the source data is subject to its own terms; cite its authors.\n"
        )
    return render_card(
        DatasetCard,
        card_data,
        template_path,
        pretty_name=escape_markdown(pretty_name),
        description=description,
        split_table=split_table,
        split_note=split_note,
        feature_table=feature_table,
        label_table=label_table,
        num_labels=str(len(label_names)),
        label_names=", ".join(escape_markdown(name) for name in label_names),
        box_frame=box_frame,
        source_section=source_section,
    )


def make_dataset_card(dataset, pretty_name: str | None = None, license: str | None = None) -> str:
    """The dataset card text (YAML front matter and Markdown) of a clarity_hf `DatasetDict`."""
    return str(render_dataset_card(dataset, pretty_name=pretty_name, license=license))
