# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Publishing CLARiTy on the Hugging Face Hub: the repo folder, the model and dataset cards, the upload, and the
safetensors-only loader used by the CLI, the Space and the pipeline.

- [`save_for_hub`] writes everything a model repo needs: `config.json` (every `auto_map` entry and the
  `chest-xray-localization` custom pipeline), `model.safetensors`, the Hub code files, `preprocessor_config.json`,
  `README.md` rendered from the evaluation report, `eval_results.json`, and example images.
- [`push_to_hub`] creates the repo and uploads the folder with `huggingface_hub.HfApi`.
- [`check_safetensors_only`] / [`load_for_inference`]: only safetensors is ever read; a folder holding a pickle
  checkpoint (`pytorch_model.bin`, ...) and no safetensors is refused.
- [`render_model_card`] / [`render_dataset_card`]: cards from measured results (no number typed by hand).

Evaluation JSON: the report of `clarity_hf.evaluation.report` (`write_report` / `build_report`; schema in that
module). The card reads one model entry (`model_name`, default: the first), the report's `published` rows (the
paper's, `PUBLISHED_RESULTS`) and two optional `metadata` entries describing the runs:

    {
      "title", "clarity_hf_version",
      "metadata": {
        "training": {"synthetic_only": bool, "dataset_name": str, "dataset_id": str | null,
                     "base_model": str | null, "description": str, "recipe": {name: value}},
        "evaluation": {"dataset_name": str, "dataset_id": str | null, "split": str, "synthetic": bool},
        ...
      },
      "models": {name: {"classification": AurocResult | null, "localization": LocalizationResult | null,
                        "tuning": {...} | null, "notes": str}},
      "published": PUBLISHED_RESULTS | null
    }
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from huggingface_hub import DatasetCard, DatasetCardData, EvalResult, HfApi, ModelCard, ModelCardData

from .configuration_clarity import NIH_PATHOLOGIES, ClarityConfig
from .evaluation.report import PUBLISHED_RESULTS, format_number, format_published
from .pipeline_clarity import CUSTOM_PIPELINES, ClarityLocalizationPipeline
from .visualization import decode_for_display

logger = logging.getLogger(__name__)

__all__ = [
    "HUB_CODE_FILES",
    "PICKLE_SUFFIXES",
    "UnsafeCheckpointError",
    "check_safetensors_only",
    "describe_folder",
    "load_for_inference",
    "load_results",
    "push_to_hub",
    "render_dataset_card",
    "render_model_card",
    "resolve_model_folder",
    "save_for_hub",
    "select_model",
]

PACKAGE_DIR = Path(__file__).resolve().parent
# The card templates: `clarity_hf/model_cards/` in an installed package (pyproject maps the checkout's top-level
# `model_cards/` folder to the `clarity_hf.model_cards` package), `model_cards/` next to the package in a checkout.
TEMPLATE_DIR = next(
    (d for d in (PACKAGE_DIR / "model_cards", PACKAGE_DIR.parent / "model_cards") if d.is_dir()),
    PACKAGE_DIR / "model_cards",
)
MODEL_CARD_TEMPLATE = TEMPLATE_DIR / "model_card_template.md"
DATASET_CARD_TEMPLATE = TEMPLATE_DIR / "dataset_card_template.md"

# The files a Hub repo needs to run with trust_remote_code (each imports only torch/transformers/numpy/PIL and its
# siblings, relatively).
HUB_CODE_FILES = (
    "configuration_clarity.py",
    "modeling_clarity.py",
    "image_processing_clarity.py",
    "pipeline_clarity.py",
    "xray_io.py",
    "heatmaps.py",
)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
DEFAULT_REPO_ID = "org/clarity-s-16-512"
DEFAULT_BASE_MODEL = "facebook/dino-vits16"
NIH_DATASET_NAME = "NIH ChestX-ray14"

# Config fields whose values the paper's abstract does not state (spec: *reconstructed*), with what they mean.
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


# The first lines of a script run in a fresh process to prove that a saved folder works on its own, as for a Hub user
# without clarity_hf, also where clarity_hf is installed (CI): importing clarity_hf or any submodule then fails.
WITHOUT_CLARITY_HF = (
    'import sys\nsys.modules["clarity_hf"] = None  # everything must come from the model folder\n'
)


class UnsafeCheckpointError(ValueError):
    """A model folder holds pickle weights and no safetensors: clarity_hf never loads it."""


# ---------------------------------------------------------------------------------------------------- safetensors
def _pickle_files(folder: Path) -> list[str]:
    return sorted(
        p.name for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(PICKLE_SUFFIXES)
    )


def check_safetensors_only(folder: str | Path) -> Path:
    """Check that `folder` holds safetensors weights; refuse a folder with only pickle checkpoints.

    Raises `FileNotFoundError` when the folder or `config.json` is missing, and [`UnsafeCheckpointError`] when no
    `*.safetensors` file is present (naming any pickle file found). A pickle file next to safetensors weights is
    ignored (a warning is logged): only the safetensors file is read. Returns the folder as a `Path`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a directory")
    pickles = _pickle_files(folder)
    has_safetensors = any(folder.glob("*.safetensors"))
    if not has_safetensors:
        if pickles:
            raise UnsafeCheckpointError(
                f"{folder}: refusing to load the pickle checkpoint(s) {', '.join(pickles)}: it has no *.safetensors "
                "weights, and clarity_hf only loads safetensors (unpickling a file can execute arbitrary code). "
                "Convert it in a trusted environment (load it there and call `model.save_pretrained(dir)`, which "
                "writes model.safetensors), then load that folder."
            )
        raise FileNotFoundError(f"{folder}: no model.safetensors (no *.safetensors file) in this folder")
    if pickles:
        logger.warning(
            "%s: ignoring pickle file(s) %s; only the safetensors weights are read", folder, pickles
        )
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: no config.json")
    return folder


def resolve_model_folder(
    folder_or_repo: str | Path, revision: str | None = None, token: str | None = None
) -> Path:
    """A local folder as is, or a Hub repo id downloaded with `snapshot_download` restricted to config, code,
    safetensors and card files (pickle files are never downloaded); then [`check_safetensors_only`]."""
    path = Path(folder_or_repo)
    if path.is_dir():
        return check_safetensors_only(path)
    if path.exists() or str(folder_or_repo).startswith((".", "/")):
        raise FileNotFoundError(f"{folder_or_repo}: not a model folder")
    from huggingface_hub import snapshot_download

    local = snapshot_download(
        str(folder_or_repo),
        revision=revision,
        token=token,
        allow_patterns=["*.json", "*.safetensors", "*.py", "*.md"],
    )
    try:
        return check_safetensors_only(local)
    except FileNotFoundError as err:
        raise UnsafeCheckpointError(
            f"Hub repo {folder_or_repo}: no *.safetensors weights ({err}); clarity_hf never downloads or loads "
            "pickle checkpoints such as pytorch_model.bin"
        ) from err


def _load_image_processor(folder: Path):
    """The folder's image processor, with clarity_hf's own class when it is the ClarityImageProcessor (no code
    from the folder is executed)."""
    from transformers import AutoImageProcessor

    config = json.loads((folder / "preprocessor_config.json").read_text())
    if config.get("image_processor_type") == "ClarityImageProcessor":
        from . import image_processing_clarity

        processor_class = getattr(image_processing_clarity, "ClarityImageProcessor", None)
        if processor_class is not None:
            return processor_class.from_pretrained(folder)
    return AutoImageProcessor.from_pretrained(folder)


def load_for_inference(
    folder_or_repo: str | Path,
    revision: str | None = None,
    token: str | None = None,
    device: str | int | None = None,
) -> ClarityLocalizationPipeline:
    """A ready [`ClarityLocalizationPipeline`] from a model folder or Hub repo id, safetensors only, with clarity_hf's
    own classes (no code from the folder is executed)."""
    from .modeling_clarity import ClarityForMultiLabelLocalization

    folder = resolve_model_folder(folder_or_repo, revision=revision, token=token)
    model = ClarityForMultiLabelLocalization.from_pretrained(folder, use_safetensors=True)
    model.eval()
    processor = _load_image_processor(folder)
    return ClarityLocalizationPipeline(model=model, image_processor=processor, device=device)


# ---------------------------------------------------------------------------------------------------- results
def load_results(results: str | Path | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Read and check an evaluation report (a path to the JSON written by
    `clarity_hf.evaluation.report.write_report`, or the dict of `build_report`); None stays None.

    Raises `ValueError` naming the file and the problem when it is not such a report or a model entry lacks the keys
    the card reads.
    """
    if results is None:
        return None
    source = "results"
    if isinstance(results, (str, Path)):
        source = str(results)
        try:
            results = json.loads(Path(results).read_text())
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


def _finite(value: Any) -> bool:
    return value is not None and math.isfinite(float(value))


def _classification_table(classification: Mapping[str, Any]) -> str:
    names = classification.get("class_names") or list(classification["per_class"])
    rows = [
        "| Pathology | AUROC | 95% CI | positives | negatives |",
        "|---|---|---|---|---|",
    ]
    for name in names:
        entry = classification["per_class"][name]
        ci = (
            f"{format_number(entry.get('ci_low'))} to {format_number(entry.get('ci_high'))}"
            if "ci_low" in entry
            else ""
        )
        rows.append(
            f"| {name} | {format_number(entry['auroc'])} | {ci} | {entry.get('n_positive', '')} | {entry.get('n_negative', '')} |"
        )
    ci = ""
    if "mean_ci_low" in classification:
        ci = f"{format_number(classification['mean_ci_low'])} to {format_number(classification['mean_ci_high'])}"
    rows.append(f"| **Mean** | **{format_number(classification['mean_auroc'])}** | {ci} | | |")
    return "\n".join(rows)


def _classification_summary(
    classification: Mapping[str, Any], model_name: str, published: Mapping[str, Any]
) -> str:
    rows = ["| Model | Mean AUROC (14 classes) |", "|---|---|"]
    rows.append(f"| **{model_name} (this checkpoint)** | **{format_number(classification['mean_auroc'])}** |")
    for row in published["rows"]:
        if row["mean_auroc"] is not None:
            rows.append(f"| {row['model']} (published) | {format_published(row['mean_auroc'])} |")
    excluded = classification.get("excluded_classes") or []
    note = (
        f"\n\nLeft out of the mean (a single label value in the test set): {', '.join(excluded)}."
        if excluded
        else ""
    )
    return "\n".join(rows) + note


def _accuracy_table(
    table: Mapping[str, Any], classes: Sequence[str], kind: str, published: Mapping[str, Any] | None
) -> str:
    thresholds = [float(t) for t in table["thresholds"]]
    header = "| Pathology | " + " | ".join(f"T({kind})={t:g}" for t in thresholds) + " |"
    rows = [header, "|---|" + "---|" * len(thresholds)]
    for name in classes:
        values = table["per_class"][name]
        rows.append(f"| {name} | " + " | ".join(format_number(v, 3) for v in values) + " |")
    rows.append(
        "| **Macro (this checkpoint)** | "
        + " | ".join(f"**{format_number(v)}**" for v in table["macro"])
        + " |"
    )
    if published is not None:
        published_thresholds = [round(float(t), 3) for t in published["iou_thresholds"]]
        for row in published["rows"]:
            accuracy = dict(zip(published_thresholds, row["iou_macro"] or []))
            if accuracy:
                cells = [
                    format_published(accuracy[round(t, 3)]) if round(t, 3) in accuracy else ""
                    for t in thresholds
                ]
                rows.append(f"| {row['model']} (published) | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _localization_section(
    localization: Mapping[str, Any] | None, tuning: Mapping[str, Any] | None, published: Mapping[str, Any]
) -> str:
    if localization is None:
        return "### Localization\n\nLocalization was not evaluated for this checkpoint."
    classes = list(localization["classes"])
    parts = ["### Localization (macro over the boxed classes, per ground-truth box)"]
    split = localization.get("split")
    described = f"{localization.get('n_images', '')} boxed images" + (f" (`{split}` half)" if split else "")
    thresholds = localization.get("heatmap_thresholds") or {}
    levels = sorted({tuple(v) if isinstance(v, (list, tuple)) else (v,) for v in thresholds.values()})
    level_text = "; ".join(", ".join(format_number(x, 2) for x in level) for level in levels)
    if tuning:
        level_text += (
            f" (tuned on the `{tuning.get('tune_split')}` half, objective: {tuning.get('objective')})"
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
            f"({false_positives.get('criterion', '')})."
        )
    return "\n\n".join(parts)


def _eval_results(entry: Mapping[str, Any], evaluation: Mapping[str, Any]) -> list[EvalResult]:
    dataset_name = evaluation.get("dataset_name", NIH_DATASET_NAME)
    dataset_type = evaluation.get("dataset_id") or (
        "synthetic" if evaluation.get("synthetic") else "nih-chestxray14"
    )
    split = evaluation.get("split", "test")
    common = {"dataset_type": dataset_type, "dataset_name": dataset_name, "dataset_split": split}
    classification_task = {
        "task_type": "image-classification",
        "task_name": "Multi-label classification",
        "metric_type": "roc_auc",
    }
    measured = []  # (task fields, metric name, value)
    classification = entry.get("classification")
    if classification is not None:
        measured.append((classification_task, "Mean AUROC (14 classes)", classification["mean_auroc"]))
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
    eval_results = [
        EvalResult(**task, metric_name=name, metric_value=round(float(value), 4), **common)
        for task, name, value in measured
        if _finite(value)
    ]
    return eval_results


def _reconstructed_table(config: ClarityConfig) -> str:
    rows = ["| config field | value in this checkpoint | what it controls |", "|---|---|---|"]
    for field, meaning in RECONSTRUCTED_FIELDS.items():
        rows.append(f"| `{field}` | `{getattr(config, field, None)!r}` | {meaning} |")
    rows.append(
        "| training recipe | see above | AdamW, cosine schedule, warm-up, drop-path, CXR-safe augmentation "
        "(MCTformer / DeiT defaults) |"
    )
    return "\n".join(rows)


def _training_section(training: Mapping[str, Any], evaluated: bool) -> str:
    lines = []
    if training.get("synthetic_only"):
        lines.append(
            "**Trained only on synthetic images** generated by clarity_hf's synthetic chest X-ray generator; it has "
            "never seen a real radiograph, and its outputs on real images are meaningless."
        )
    if training.get("description"):
        lines.append(str(training["description"]))
    if training.get("dataset_name"):
        dataset = training["dataset_name"] + (
            f" (`{training['dataset_id']}`)" if training.get("dataset_id") else ""
        )
        lines.append(f"Training data: {dataset}.")
    recipe = training.get("recipe") or {}
    if recipe:
        lines.append("| hyper-parameter | value |\n|---|---|")
        lines[-1] += "\n" + "\n".join(f"| {key} | `{value}` |" for key, value in recipe.items())
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
                "example_title": example["title"],
                "output": {
                    "data": [{"label": label, "score": round(float(score), 4)} for label, score in top]
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
    """The model card (a `huggingface_hub.ModelCard`) rendered from `model_cards/model_card_template.md`.

    Every measured number comes from `results`, the evaluation report of `clarity_hf.evaluation.report` (its
    `models[model_name]` entry, default: the first model; its `metadata["training"]` / `metadata["evaluation"]`
    describe the runs); the paper's figures from the report's `published` rows (else
    `clarity_hf.evaluation.report.PUBLISHED_RESULTS`); widget outputs from `example_outputs`
    ({"path", "title", "scores"}, the model's predictions at export time). Without results, `model_name` (default:
    the repo's name) only names the card.
    """
    results = load_results(results)
    entry: dict[str, Any] = {}
    metadata: Mapping[str, Any] = {}
    published: Mapping[str, Any] = PUBLISHED_RESULTS
    if results is not None:
        model_name, entry = select_model(results, model_name)
        metadata = results.get("metadata") or {}
        published = results.get("published") or PUBLISHED_RESULTS
    model_name = model_name or (repo_id or DEFAULT_REPO_ID).split("/")[-1]
    training = metadata.get("training") or {}
    evaluation = metadata.get("evaluation") or {}
    synthetic = bool(training.get("synthetic_only"))
    datasets = [d for d in (training.get("dataset_id"), evaluation.get("dataset_id")) if d]
    base_model = training.get("base_model", DEFAULT_BASE_MODEL)
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
        base_model=base_model,
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
            evaluation.get("dataset_name", NIH_DATASET_NAME) + f", split `{evaluation.get('split', 'test')}`"
        )
        status_line = f"Measured results below are on {where}" + (
            " (synthetic test images: they say nothing about real chest X-rays)."
            if evaluation.get("synthetic")
            else "."
        )
        results_intro = (
            f"All figures of this checkpoint are read from its evaluation report (`eval_results.json`, model "
            f"`{model_name}`): {where}."
        )
        if entry.get("notes"):
            results_intro += f" Notes: {entry['notes']}"
    classification = entry.get("classification")
    if classification is not None:
        n_images = classification.get("n_images", "")
        classification_summary = _classification_summary(classification, model_name, published)
        classification_table = (
            f"### Classification: per-class AUROC on {n_images} images\n\n"
            + _classification_table(classification)
        )
    else:
        classification_summary = ""
        classification_table = "### Classification\n\nClassification was not evaluated for this checkpoint."
    card = ModelCard.from_template(
        card_data,
        template_path=str(template_path or MODEL_CARD_TEMPLATE),
        first_line=first_line,
        model_name=model_name,
        repo_id=repo_id or DEFAULT_REPO_ID,
        patch_size=config.patch_size,
        image_size=config.image_size,
        num_labels=config.num_labels,
        status_line=status_line,
        results_intro=results_intro,
        classification_summary=classification_summary,
        classification_table=classification_table,
        localization_section=_localization_section(entry.get("localization"), entry.get("tuning"), published),
        published_source=published["source"],
        training_section=_training_section(training, evaluated=results is not None),
        reconstructed_table=_reconstructed_table(config),
    )
    return card


# ---------------------------------------------------------------------------------------------------- dataset card
def render_dataset_card(
    dataset=None,
    *,
    split_sizes: Mapping[str, int] | None = None,
    label_counts: Mapping[str, Mapping[str, int]] | None = None,
    features: Mapping[str, str] | None = None,
    label_names: Sequence[str] = NIH_PATHOLOGIES,
    pretty_name: str = NIH_DATASET_NAME,
    template_path: str | Path = DATASET_CARD_TEMPLATE,
) -> DatasetCard:
    """The dataset card of the ChestX-ray14 `datasets` export, from `model_cards/dataset_card_template.md`.

    Pass the built `datasets.DatasetDict` (split sizes, features and, when a `labels` column is present, per-split
    label counts are read from it), or the same facts as `split_sizes` {split: rows}, `label_counts`
    {split: {label: positives}} and `features` {column: feature description}.
    """
    if dataset is not None:
        split_sizes = {name: split.num_rows for name, split in dataset.items()}
        first = next(iter(dataset.values()))
        features = {name: str(feature) for name, feature in first.features.items()}
        if "labels" in first.column_names:
            label_counts = {}
            for name, split in dataset.items():
                labels = np.asarray(split.with_format("numpy")["labels"], dtype=np.float32).reshape(
                    split.num_rows, -1
                )
                label_counts[name] = {label: int(v) for label, v in zip(label_names, labels.sum(0))}
    split_sizes = dict(split_sizes or {})
    total = sum(split_sizes.values())
    size_category = (
        "n<1K"
        if total < 1_000
        else "1K<n<10K"
        if total < 10_000
        else "10K<n<100K"
        if total < 100_000
        else "100K<n<1M"
    )
    card_data = DatasetCardData(
        pretty_name=pretty_name,
        license="other",
        license_name="nih-clinical-center-chestxray14-terms",
        task_categories=["image-classification", "object-detection"],
        tags=["medical-imaging", "chest-xray", "weakly-supervised-localization"],
        size_categories=[size_category],
        annotations_creators=["machine-generated", "expert-generated"],
        source_datasets=["original"],
    )
    split_table = "\n".join(
        ["| split | images |", "|---|---|"] + [f"| {name} | {rows} |" for name, rows in split_sizes.items()]
    )
    feature_table = "\n".join(
        ["| column | feature |", "|---|---|"]
        + [f"| `{name}` | `{feature}` |" for name, feature in (features or {}).items()]
    )
    if label_counts:
        splits = list(label_counts)
        label_table = "\n".join(
            ["| label | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
            + [
                f"| {label} | " + " | ".join(str(label_counts[s].get(label, 0)) for s in splits) + " |"
                for label in label_names
            ]
        )
    else:
        label_table = "Label counts were not computed for this export."
    return DatasetCard.from_template(
        card_data,
        template_path=str(template_path),
        pretty_name=pretty_name,
        split_table=split_table,
        feature_table=feature_table,
        label_table=label_table,
        num_labels=len(label_names),
    )


# ---------------------------------------------------------------------------------------------------- export
def _write_examples(
    pipe: ClarityLocalizationPipeline, example_images: Iterable[str | Path], folder: Path
) -> list[dict[str, Any]]:
    outputs = []
    examples_dir = folder / "examples"
    for index, source in enumerate(example_images):
        source = Path(source)
        image = decode_for_display(pipe.image_processor, source)
        examples_dir.mkdir(exist_ok=True)
        relative = f"examples/{index:02d}_{source.stem}.png"
        image.save(folder / relative)
        prediction = pipe(str(source), return_heatmaps=False)
        outputs.append({"path": relative, "title": source.stem, "scores": prediction["scores"]})
    return outputs


def save_for_hub(
    model,
    processor,
    save_directory: str | Path,
    results: str | Path | Mapping[str, Any] | None = None,
    example_images: Sequence[str | Path] = (),
    repo_id: str | None = None,
    model_name: str | None = None,
) -> list[Path]:
    """Write a complete Hub model repo into `save_directory` and return the files written.

    Writes `config.json` (every `auto_map` entry plus `custom_pipelines` for `chest-xray-localization`),
    `model.safetensors`, the Hub code files ([`HUB_CODE_FILES`]), `preprocessor_config.json` (with
    `AutoImageProcessor` in its `auto_map` when the processor is the `ClarityImageProcessor`), `README.md` (the model
    card, from `results`: the evaluation report of `clarity_hf.evaluation.report`, reading its `model_name` entry,
    default the first), `eval_results.json` (a copy of the report) and `examples/*.png` with the model's predictions
    on them as the card's widget outputs. Never writes a pickle file; refuses a directory that already holds one.
    """
    folder = Path(save_directory)
    folder.mkdir(parents=True, exist_ok=True)
    stale = _pickle_files(folder)
    if stale:
        raise UnsafeCheckpointError(
            f"{folder}: already holds pickle file(s) {stale}; export into a clean directory"
        )
    results = load_results(results)

    model.config.custom_pipelines = json.loads(json.dumps(CUSTOM_PIPELINES))
    model.save_pretrained(folder)
    if not (folder / "model.safetensors").is_file():
        raise RuntimeError(f"{folder}: save_pretrained did not write model.safetensors")
    for name in HUB_CODE_FILES:
        shutil.copyfile(PACKAGE_DIR / name, folder / name)

    is_clarity_processor = type(processor).__name__ == "ClarityImageProcessor"
    if is_clarity_processor:
        if getattr(processor, "id2label", None) is None:
            processor.id2label = {int(k): v for k, v in model.config.id2label.items()}
        type(processor).register_for_auto_class("AutoImageProcessor")
    processor.save_pretrained(folder)
    if is_clarity_processor:
        path = folder / "preprocessor_config.json"
        processor_config = json.loads(path.read_text())
        auto_map = processor_config.setdefault("auto_map", {})
        auto_map["AutoImageProcessor"] = "image_processing_clarity.ClarityImageProcessor"
        path.write_text(json.dumps(processor_config, indent=2, sort_keys=True) + "\n")
    for (
        name
    ) in HUB_CODE_FILES:  # processor.save_pretrained may copy its file again: keep the package's version
        shutil.copyfile(PACKAGE_DIR / name, folder / name)

    example_outputs = []
    if example_images:
        was_training = model.training
        model.eval()
        pipe = ClarityLocalizationPipeline(model=model, image_processor=processor, device=model.device)
        example_outputs = _write_examples(pipe, example_images, folder)
        model.train(was_training)
    if results is not None:
        (folder / "eval_results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    card = render_model_card(
        model.config, results, repo_id=repo_id, model_name=model_name, example_outputs=example_outputs
    )
    card.save(folder / "README.md")
    return sorted(p for p in folder.rglob("*") if p.is_file())


def describe_folder(folder: str | Path) -> list[tuple[str, int]]:
    """(relative path, size in bytes) of every file that `push_to_hub` would upload, sorted by path."""
    folder = Path(folder)
    return sorted(
        (p.relative_to(folder).as_posix(), p.stat().st_size)
        for p in folder.rglob("*")
        if p.is_file() and ".cache" not in p.relative_to(folder).parts
    )


def push_to_hub(
    folder: str | Path,
    repo_id: str,
    revision: str | None = None,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload CLARiTy model",
    create_pr: bool = False,
    endpoint: str | None = None,
):
    """Create `repo_id` (if needed) and upload `folder` with `huggingface_hub.HfApi`; returns the `CommitInfo`.

    `revision` names the branch to commit to (created from main when it does not exist yet); `create_pr` opens a
    pull request instead of committing directly. `endpoint` defaults to `HF_ENDPOINT` / huggingface.co. A folder
    with a pickle file or without safetensors weights is refused before anything is sent.
    """
    folder = check_safetensors_only(folder)
    pickles = _pickle_files(folder)
    if pickles:
        raise UnsafeCheckpointError(
            f"{folder}: refusing to upload pickle file(s) {pickles}; publish safetensors only"
        )
    api = HfApi(endpoint=endpoint, token=token)
    api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
    if revision is not None and revision != "main" and not create_pr:
        api.create_branch(repo_id=repo_id, branch=revision, repo_type="model", exist_ok=True)
    return api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        repo_type="model",
        revision=revision,
        commit_message=commit_message,
        create_pr=create_pr,
        ignore_patterns=[f"*{suffix}" for suffix in PICKLE_SUFFIXES] + [".cache/*"],
    )
