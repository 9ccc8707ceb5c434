# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""The demo job (`clarity-demo`, `python -m clarity_hf demo`), in named steps:

1. [`step_data`]: the data set;
2. [`step_train`]: the ConvNeXtV2 teacher, the distilled CLARiTy student, the plain-ViT baseline and, with
   `--ablations`, the full student and one student per ablation switch from each of `--ablation-seeds`, on the
   full student schedule;
3. [`step_evaluate`]: every model and baseline on the same test split with the same code (the teacher's Grad-CAM
   stage chosen on the `tune` half with the threshold), and the figures;
4. [`step_export`]: the Hub-ready model folder of the student, reloaded in a fresh process without clarity_hf;
5. [`step_verdict`]: the verdict, the ablation table and the report.

With no arguments everything runs offline on this CPU: the synthetic chest X-ray benchmark
(`clarity_hf.data.synthetic.build_synthetic_cxr`), a tiny ConvNeXtV2 teacher, a tiny CLARiTy student (distilled),
a plain-ViT baseline of the same size (and, with `--ablations all`, the ablation students), all trained by the
project's one training loop (`clarity_hf.training.train`) and evaluated by `clarity_hf.evaluation` on the `test`
split (AUROC on every image; localization threshold tuned on the `tune` half of the boxed images, reported on the
`eval` half).

`--data-dir` points the same job at a real NIH ChestX-ray14 download (`clarity_hf.data.chestxray14`);
`--preset clarity-s-16-512` switches to the shipped paper configurations (`clarity_s16_512.yaml` with the
`teacher_512.yaml` ConvNeXtV2-B teacher), to run under `accelerate launch` on GPUs.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForImageClassification, HfArgumentParser

from ..baselines import PlainViTForMultiLabelClassification, plain_vit_config
from ..checks import check_positive_integers
from ..configuration_clarity import ClarityConfig
from ..data.chestxray14 import build_chestxray14
from ..data.features import get_label_names, get_metadata
from ..data.synthetic import build_synthetic_cxr
from ..evaluation.ablation import ablation_markdown, aggregate_ablation, entry_metrics
from ..evaluation.models import evaluate_models
from ..evaluation.report import (
    STUDENT_NAME,
    build_report,
    evaluation_metadata,
    format_number,
    overview_markdown,
    verdict,
    verdict_markdown,
)
from ..evaluation.run import reported_thresholds, write_evaluation
from ..hub import save_for_hub
from ..hub.reload_check import check_reload, save_reference
from ..training import ClarityTrainingConfig, train
from ..training.models import build_model
from ..training.teacher_cache import add_teacher_logits
from .arguments import parse_into_dataclass

__all__ = [
    "ABLATIONS",
    "main",
    "DemoConfig",
    "DemoResult",
    "build_demo_parser",
    "parse_ablations",
    "parse_demo_args",
    "run_demo",
]

logger = logging.getLogger(__name__)

# One switch per CLARiTy component: name -> (row label, ClarityConfig overrides).
ABLATIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "segment_cam": ("w/o SegmentCAM", {"use_segment_cam": False}),
    "anatomical_prior": ("w/o anatomical prior", {"use_anatomical_prior": False}),
    "orthogonal_loss": ("w/o orthogonal loss", {"orthogonal_loss_weight": 0.0}),
    "attention_pooling": ("w/o attention pooling", {"use_attention_pooling": False}),
    "distillation": ("w/o distillation", {"distillation_loss_weight": 0.0}),
}
# The weight of the distillation loss of every distilled student: the paper configuration's (ClarityConfig's
# default); the ablation "w/o distillation" sets it to 0.
DISTILLATION_WEIGHT = ClarityConfig().distillation_loss_weight
# student preset -> (student config, teacher config) shipped with clarity_hf.training: the one source of every
# training hyperparameter; the demo only sets the output folders, the data, the seed and (optionally) the steps.
PRESET_CONFIGS = {
    "clarity-tiny": ("tiny_cpu.yaml", "tiny_teacher_cpu.yaml"),
    "clarity-s-16-224": ("clarity_s16_224.yaml", "teacher_512.yaml"),
    "clarity-s-16-512": ("clarity_s16_512.yaml", "teacher_512.yaml"),
}
PAPER_PRESETS = ("clarity-s-16-224", "clarity-s-16-512")


# The `--quick` schedule (tests): 64 px, a few hundred images, a few steps per model. On the command line these are
# the defaults that `--quick` sets, so an option given explicitly still wins.
QUICK_VALUES: dict[str, Any] = dict(
    image_size=64,
    num_train=96,
    num_validation=32,
    num_test=96,
    batch_size=16,
    teacher_steps=4,
    student_steps=4,
    baseline_steps=4,
    ablation_steps=4,
    n_bootstrap=20,
    ablations=[],
    figure_images=3,
    quick=True,
)
_POSITIVE_INTS = (
    "image_size",
    "num_train",
    "num_validation",
    "num_test",
    "batch_size",
    "teacher_steps",
    "student_steps",
    "baseline_steps",
    "ablation_steps",
    "n_bootstrap",
    "figure_images",
)


def _option(name: str) -> str:
    """The command-line spelling of a `DemoConfig` field, for error messages."""
    return "--" + name.replace("_", "-")


@dataclass
class DemoConfig:
    """Options of the demo: the command line of `clarity demo` (`HfArgumentParser`; `--output-dir` and
    `--output_dir` both work). Impossible values are refused on construction, naming the option."""

    output_dir: str = field(
        default="./clarity-demo-output", metadata={"help": "where everything is written (%(default)s)"}
    )
    data_dir: str | None = field(
        default=None, metadata={"help": "a NIH ChestX-ray14 download (default: synthetic data)"}
    )
    preset: str = field(
        default="clarity-tiny",
        metadata={
            "help": "student preset: clarity-tiny (CPU demo, default), clarity-s-16-224 or clarity-s-16-512 (the "
            "paper's shipped training configs, GPUs)"
        },
    )
    # `None` takes the value of the preset's shipped training configs (`PRESET_CONFIGS`); see `resolved()`.
    image_size: int | None = field(
        default=None,
        metadata={
            "help": "input side (default: the preset's training config, 96 for clarity-tiny; 64 with --quick)"
        },
    )
    num_train: int | None = field(
        default=None, metadata={"help": "synthetic training images (default: the preset's)"}
    )
    num_validation: int | None = field(
        default=None, metadata={"help": "synthetic validation images (default: the preset's)"}
    )
    num_test: int = field(default=512, metadata={"help": "synthetic test images (%(default)s)"})
    batch_size: int | None = field(
        default=None, metadata={"help": "student batch size (default: the preset's)"}
    )
    teacher_steps: int | None = field(
        default=None, metadata={"help": "teacher optimizer steps (default: the preset's schedule)"}
    )
    student_steps: int | None = field(
        default=None, metadata={"help": "student optimizer steps (default: the preset's schedule)"}
    )
    baseline_steps: int | None = field(
        default=None, metadata={"help": "plain-ViT optimizer steps (default: the student's)"}
    )
    # `None`: the full student schedule, so that an ablation row is a student trained like the reported one.
    ablation_steps: int | None = field(
        default=None, metadata={"help": "optimizer steps of each ablation student (default: the student's)"}
    )
    learning_rate: float | None = field(
        default=None, metadata={"help": "student learning rate (default: the preset's)"}
    )
    # Ablations leave the default run (they are 2 x (1 + switches) students): `--ablations all` adds them.
    ablations: list[str] = field(
        default_factory=list,
        metadata={
            "help": f"'none' (default), 'all' or a comma-separated list of {', '.join(ABLATIONS)}: each switch "
            "and the full model are trained on the full student schedule from every seed of --ablation-seeds "
            "(long: 2 x (1 + switches) students by default)"
        },
    )
    ablation_seeds: list[int] = field(
        default_factory=lambda: [0, 1],
        metadata={"help": "training seeds of every ablation variant (default: 0 1)"},
    )
    n_bootstrap: int = field(
        default=200, metadata={"help": "bootstrap resamples of the AUROC intervals (%(default)s)"}
    )
    # One heatmap threshold for all classes, or one per class: the same freedom for CLARiTy and every baseline.
    per_class_thresholds: bool = field(
        default=False,
        metadata={
            "help": "tune one heatmap threshold per class instead of one for all (for CLARiTy and every "
            "baseline alike)"
        },
    )
    seed: int = field(default=0, metadata={"help": "seed of the data and of every model (%(default)s)"})
    quick: bool = field(
        default=False,
        metadata={"help": "a tiny schedule for tests (< 2 minutes); options given explicitly still win"},
    )
    reload_check: bool = field(
        default=True,
        metadata={
            "help": "reload the exported folder in a fresh process without clarity_hf (--no-reload-check: skip)"
        },
    )
    figure_images: int = field(default=6, metadata={"help": "images per figure (%(default)s)"})

    def __post_init__(self) -> None:
        self.ablations = parse_ablations(self.ablations)
        self.ablation_seeds = list(dict.fromkeys(self.ablation_seeds))
        if self.preset not in PRESET_CONFIGS:
            raise ValueError(f"--preset must be one of {', '.join(PRESET_CONFIGS)}, got {self.preset!r}")
        check_positive_integers({name: getattr(self, name) for name in _POSITIVE_INTS}, _option)
        for name, values in (("seed", [self.seed]), ("ablation_seeds", self.ablation_seeds)):
            if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in values):
                raise ValueError(f"{_option(name)} must be 0 or more, got {getattr(self, name)!r}")
        if self.learning_rate is not None and not (
            math.isfinite(self.learning_rate) and self.learning_rate > 0
        ):
            raise ValueError(f"--learning-rate must be a finite number above 0, got {self.learning_rate!r}")

    @classmethod
    def quick_config(cls, **overrides: Any) -> DemoConfig:
        """The `--quick` schedule (`QUICK_VALUES`) with `overrides`."""
        return cls(**{**QUICK_VALUES, **overrides})

    def training_configs(self):
        """The (student, teacher) `ClarityTrainingConfig`s shipped for this preset."""

        if self.preset not in PRESET_CONFIGS:
            raise ValueError(f"unknown preset {self.preset!r}; choose from {sorted(PRESET_CONFIGS)}")
        return tuple(ClarityTrainingConfig.from_file(name) for name in PRESET_CONFIGS[self.preset])

    def resolved(self) -> DemoConfig:
        """A copy with every `None` filled from the shipped training configs: image size, data sizes, student
        batch size and learning rate, and each model's number of optimizer steps (`max_steps`, else epochs x
        batches per epoch)."""
        student, teacher = self.training_configs()
        values = {
            "image_size": self.image_size or student.image_size,
            "num_train": self.num_train or student.synthetic_num_train,
            "num_validation": self.num_validation or student.synthetic_num_validation,
            "batch_size": self.batch_size or student.per_device_train_batch_size,
            "learning_rate": self.learning_rate or student.learning_rate,
        }

        def steps(base, batch_size: int) -> int:
            if base.max_steps and base.max_steps > 0:
                return base.max_steps
            return base.num_train_epochs * math.ceil(values["num_train"] / batch_size)

        values["teacher_steps"] = self.teacher_steps or steps(teacher, teacher.per_device_train_batch_size)
        values["student_steps"] = self.student_steps or steps(student, values["batch_size"])
        values["baseline_steps"] = self.baseline_steps or values["student_steps"]
        values["ablation_steps"] = self.ablation_steps or values["student_steps"]
        return replace(self, **values)


@dataclass
class DemoResult:
    output_dir: Path
    report_json: Path
    report_markdown: Path
    figures: list[Path]
    model_dir: Path
    reload: dict
    timings: dict
    verdict: dict


def parse_ablations(text: str | Sequence[str] | None) -> list[str]:
    """ "none", "all" or a comma-separated list of `ABLATIONS` keys -> the list of keys."""
    if text is None:
        return []
    parts = [text] if isinstance(text, str) else text
    items = [t.strip() for part in parts for t in part.split(",") if t.strip()]
    if items in (["none"], []):
        return []
    if items == ["all"]:
        return list(ABLATIONS)
    unknown = [t for t in items if t not in ABLATIONS]
    if unknown:
        raise ValueError(
            f"--ablations: unknown ablation(s) {unknown}; choose from {list(ABLATIONS)}, 'all' or 'none'"
        )
    return items


# ---------------------------------------------------------------------------------------------------- command line
DEMO_DESCRIPTION = (
    "Train a ConvNeXtV2 teacher and a CLARiTy student, evaluate them against Grad-CAM, CAM and plain-ViT attention "
    "baselines on the same data, write the report, figures and a Hub-ready model folder, and prove the folder "
    "reloads with trust_remote_code in a fresh process. No download: by default the data are the embedded synthetic "
    "chest X-ray benchmark."
)
DEMO_EPILOG = """\
examples:
  clarity-demo                                   # synthetic data, CPU, about 9 minutes on 2 cores
  clarity-demo --quick --output-dir /tmp/demo    # a smoke run (under 2 minutes)
  clarity-demo --ablations all --ablation-seeds 0 1
                                                 # + 11 students, each as long as the default student
                                                 # (about 35 minutes in all on 2 cores)
  clarity-demo --data-dir /data/ChestX-ray14     # the same job on a real NIH ChestX-ray14 download
  accelerate launch -m clarity_hf demo --data-dir /data/ChestX-ray14 --preset clarity-s-16-512
                                                 # the paper's configuration on GPUs (training is distributed by
                                                 # Accelerate; evaluation and export run on the main process)
"""


def build_demo_parser() -> HfArgumentParser:
    """The `clarity demo` parser: one option per `DemoConfig` field."""
    return HfArgumentParser(
        DemoConfig,
        prog="clarity demo",
        description=DEMO_DESCRIPTION,
        epilog=DEMO_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def parse_demo_args(argv: Sequence[str] | None = None) -> DemoConfig:
    """The command line -> `DemoConfig`. `--quick` makes `QUICK_VALUES` the parser's defaults (as `--config` does
    for `clarity train`), so that options given explicitly win; a refused value is a usage error naming the option."""
    parser = build_demo_parser()
    known, _ = parser.parse_known_args(argv)
    if known.quick:
        parser.set_defaults(**QUICK_VALUES)
    return parse_into_dataclass(parser, argv)


# ----------------------------------------------------------------------------------------------------------- data
def build_data(config: DemoConfig):
    """The DatasetDict: the synthetic benchmark, or NIH ChestX-ray14 from `config.data_dir`."""
    if config.data_dir:
        if not Path(config.data_dir).is_dir():
            raise FileNotFoundError(
                f"--data-dir {config.data_dir!r} is not a folder (the NIH ChestX-ray14 download)"
            )
        return build_chestxray14(config.data_dir, seed=config.seed, box_split_seed=config.seed)
    return build_synthetic_cxr(
        config.num_train,
        config.num_validation,
        config.num_test,
        image_size=config.image_size,
        seed=config.seed,
        box_split_seed=config.seed,
    )


# ------------------------------------------------------------------------------------------------------- training
def _training_config(config: DemoConfig, model: str, output_dir: Path, steps: int, **overrides: Any):
    """The shipped training config of `model` for the preset, with the demo's folders, data, seed and schedule."""
    student, teacher = config.training_configs()
    base = teacher if model == "convnextv2" else student
    values: dict[str, Any] = {
        "output_dir": str(output_dir),
        "dataset": config.data_dir or "synthetic",
        "seed": config.seed,
        "max_steps": steps,
        "image_size": config.image_size,
        "checkpointing_steps": 0,
        "save_total_limit": 1,
        "logging_steps": max(1, steps // 4),
        "report_to": ["jsonl"],
        "disable_tqdm": True,
    }
    if model != "convnextv2":
        values["per_device_train_batch_size"] = config.batch_size
        values["learning_rate"] = config.learning_rate
        if overrides.get("teacher_name_or_path"):
            values["teacher_image_size"] = config.image_size
    values.update(overrides)
    if "model_config_overrides" in overrides:
        values["model_config_overrides"] = {
            **(base.model_config_overrides or {}),
            **overrides["model_config_overrides"],
        }
    return replace(base, **values)


def _teacher_description(config: DemoConfig) -> str:
    teacher = config.training_configs()[1]
    overrides = teacher.model_config_overrides or {}
    return f"ConvNeXtV2 ({teacher.model_preset}{', ' + str(overrides) if overrides else ''})"


def _train(training_config, datasets, model=None) -> Path:
    result = train(training_config, model=model, datasets=datasets)
    if result.best_model_dir is None:
        raise RuntimeError(
            f"training in {training_config.output_dir} produced no model (no validation AUROC)"
        )
    return Path(result.best_model_dir)


# ----------------------------------------------------------------------------------------------------------- reload
# The reference outputs come from the model in this process, whose thread count (and so float reduction order) may
# differ from the fresh process's; the rehearsal compares two fresh processes and asks for identical outputs.
RELOAD_TOLERANCE = 1e-4


def reload_in_fresh_process(model_dir: Path, model, pixel_values: torch.Tensor, timeout: float = 300) -> dict:
    """Load `model_dir` with `AutoModel.from_pretrained(..., trust_remote_code=True)` in a new Python process where
    `clarity_hf` cannot be imported, run it on `pixel_values` and compare with `model`'s outputs (within `RELOAD_TOLERANCE`)."""
    reference = save_reference(model, pixel_values, model_dir.parent / "reload_inputs.pt")
    try:
        return check_reload(model_dir, reference, tolerance=RELOAD_TOLERANCE, timeout=timeout)
    finally:
        reference.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------------------- steps
def _log(message: str) -> None:
    logger.info(message)


class _Clock:
    """Seconds per step, logged as each step ends."""

    def __init__(self):
        self.started = self.last = time.perf_counter()
        self.timings: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = round(now - self.last, 1)
        self.last = now
        _log(f"{name}: {self.timings[name]:.1f} s")

    def total(self) -> float:
        self.timings["total"] = round(time.perf_counter() - self.started, 1)
        return self.timings["total"]


@dataclass
class DemoData:
    datasets: Any  # datasets.DatasetDict
    label_names: list[str]
    source: str  # one line describing the data, for the report and the model card


@dataclass
class TrainedModels:
    teacher_dir: Path
    student_dir: Path
    plain_vit_dir: Path
    # "full" (the reference) and one key per switch -> seed -> model folder
    ablation_dirs: dict[str, dict[int, Path]]


@dataclass
class Evaluation:
    entries: dict[str, dict]  # report entry per model / heatmap method
    predictions: dict[str, Any]
    student: Any
    processor: Any
    ablation_entries: dict[str, dict[int, dict]]  # ablation key -> seed -> report entry (not a report row)
    figures: list[Path]
    stage_choice: dict  # the teacher Grad-CAM stage selection (`select_stage`)
    operating_thresholds: dict[str, dict[str, float]]  # method -> class -> probability (Youden, validation)


def step_data(config: DemoConfig) -> DemoData:
    """The data set and its label names."""
    if config.data_dir:
        source = f"NIH ChestX-ray14 at {config.data_dir}"
    else:
        source = (
            f"synthetic CXR benchmark (seed {config.seed}, {config.image_size} px, {config.num_train}/"
            f"{config.num_validation}/{config.num_test} train/validation/test images)"
        )
    _log(f"data: {source}")
    datasets = build_data(config)
    return DemoData(datasets, get_label_names(datasets), source)


def _student_config(config: DemoConfig, output_dir: Path, steps: int, teacher: dict, **overrides: Any):
    """A distilled student's training config (`teacher`: where its distillation targets come from)."""
    weight = overrides.pop("distillation_loss_weight", DISTILLATION_WEIGHT)
    return _training_config(
        config,
        "clarity",
        output_dir,
        steps,
        distillation_loss_weight=weight,
        **(teacher if weight > 0 else {}),
        **overrides,
    )


def step_train(config: DemoConfig, data: DemoData, runs: Path, clock: _Clock) -> TrainedModels:
    """Teacher, distilled student, plain-ViT baseline and ablation students, all by the one training loop. On the
    CPU presets the teacher's logits are computed once into the training split (no augmentation: they are the
    same at every epoch); `data.datasets` then holds them."""
    _log(f"training the ConvNeXtV2 teacher ({config.teacher_steps} steps)")
    teacher_dir = _train(
        _training_config(config, "convnextv2", runs / "teacher", config.teacher_steps), data.datasets
    )
    clock.lap("train teacher")
    teacher: dict[str, Any] = {"teacher_name_or_path": str(teacher_dir)}
    if config.preset not in PAPER_PRESETS:
        cache_config = _training_config(config, "clarity", runs / "cache", 1)
        frozen = AutoModelForImageClassification.from_pretrained(teacher_dir).eval()
        data.datasets = add_teacher_logits(
            frozen, data.datasets, config.image_size, cache_config, ["train"], batch_size=64
        )
        teacher = {"use_cached_teacher_logits": True}
        del frozen
        clock.lap("teacher logits cache")

    _log(f"training the CLARiTy student ({config.student_steps} steps, distilled from the teacher)")
    student_dir = _train(
        _student_config(config, runs / "student", config.student_steps, teacher), data.datasets
    )
    clock.lap("train student")

    _log(
        f"training the plain-ViT baseline ({config.baseline_steps} steps, same backbone size, one CLS token)"
    )
    vit_training = _training_config(
        config, "clarity", runs / "plain_vit", config.baseline_steps, distillation_loss_weight=0.0
    )
    vit = PlainViTForMultiLabelClassification(
        plain_vit_config(build_model(vit_training, data.label_names).config)
    )
    plain_vit_dir = _train(vit_training, data.datasets, model=vit)
    clock.lap("train plain ViT")

    ablation_dirs: dict[str, dict[int, Path]] = {}
    if config.ablations:
        steps = config.ablation_steps
        variants = [("full", "full CLARiTy", {})] + [(key, *ABLATIONS[key]) for key in config.ablations]
        for key, label, overrides in variants:
            ablation_dirs[key] = {}
            for seed in config.ablation_seeds:
                if key == "full" and seed == config.seed and steps == config.student_steps:
                    ablation_dirs[key][seed] = student_dir  # the reported student is this run
                    continue
                _log(f"ablation {label}: {overrides or 'all components'} (seed {seed}, {steps} steps)")
                model_overrides = {k: v for k, v in overrides.items() if k != "distillation_loss_weight"}
                weight = overrides.get("distillation_loss_weight", DISTILLATION_WEIGHT)
                ablation_dirs[key][seed] = _train(
                    _student_config(
                        config,
                        runs / f"ablation_{key}_seed{seed}",
                        steps,
                        teacher,
                        distillation_loss_weight=weight,
                        seed=seed,
                        **({"model_config_overrides": model_overrides} if model_overrides else {}),
                    ),
                    data.datasets,
                )
        clock.lap("train ablations")
    return TrainedModels(teacher_dir, student_dir, plain_vit_dir, ablation_dirs)


NOTES = {
    "teacher CAM": "ConvNeXtV2 teacher, CAM (classifier weights on the last-stage map, before pooling; CAM exists "
    "on the last stage only)",
    "plain ViT (CLS attention)": "plain ViT, same backbone size and patch grid, ONE CLS token, random init (no DINO "
    "weights offline); heatmap = last-layer CLS attention, mean over heads",
}
# (method, figure stem): the prediction figure `predictions_<stem>.png` and the per-class grid `overlays_<stem>.png`.
FIGURES = (
    (STUDENT_NAME, "clarity"),
    ("teacher Grad-CAM", "teacher_gradcam"),
    ("plain ViT (CLS attention)", "plain_vit"),
)


def _ablation_name(key: str, seed: int) -> str:
    return f"ablation {key} (seed {seed})"


def _notes(config: DemoConfig, map_info: dict) -> dict[str, str]:
    """Each report row's note; the teacher's Grad-CAM says which stage was chosen and why."""
    stage_choice = map_info["teacher Grad-CAM"]["stage_selection"]
    stage_text = ", ".join(
        f"stage {s} ({c['grid']}): {format_number(c['tune_objective'])}"
        for s, c in stage_choice["candidates"].items()
    )
    return {
        STUDENT_NAME: f"tiny CLARiTy student ({config.preset}), distilled from the teacher, {config.student_steps} steps",
        "teacher Grad-CAM": f"ConvNeXtV2 teacher, Grad-CAM on stage {stage_choice['stage']} of "
        f"0-{map_info['teacher CAM']['stage']} ({stage_choice['grid']}), chosen with the threshold on the tune half "
        f"by the tuned localization objective ({stage_text}); logits: the teacher's",
        **NOTES,
    }


def step_evaluate(
    config: DemoConfig, data: DemoData, trained: TrainedModels, figures_dir: Path
) -> Evaluation:
    """Every model and heatmap method on the test split with the same code (`evaluate_models`: AUROC on every
    image; localization threshold tuned on the `tune` half of the boxed images, reported on the `eval` half; the
    teacher's Grad-CAM read from the stage that localises best on the `tune` half), the operating thresholds on
    validation, and the figures."""
    test = data.datasets["test"]
    _log(f"evaluating on the test split ({len(test)} images)")
    ablations = {
        _ablation_name(key, seed): folder
        for key, folders in trained.ablation_dirs.items()
        for seed, folder in folders.items()
        if folder != trained.student_dir
    }
    result = evaluate_models(
        [(STUDENT_NAME, trained.student_dir), (None, trained.teacher_dir), (None, trained.plain_vit_dir)]
        + list(ablations.items()),
        test,
        data.label_names,
        batch_size=64,
        per_class_thresholds=config.per_class_thresholds,
        n_bootstrap=config.n_bootstrap,
        notes=partial(_notes, config),
        figures_dir=figures_dir,
        figure_stems=dict(FIGURES),
        figure_images=config.figure_images,
        operating_split=data.datasets["validation"],
    )
    # Ablation students enter the report only through their aggregate over seeds, not as rows of their own.
    ablation_entries = {
        key: {
            seed: result.entries[STUDENT_NAME if folder == trained.student_dir else _ablation_name(key, seed)]
            for seed, folder in folders.items()
        }
        for key, folders in trained.ablation_dirs.items()
    }
    return Evaluation(
        {name: entry for name, entry in result.entries.items() if name not in ablations},
        {name: pred for name, pred in result.predictions.items() if name not in ablations},
        result.models[STUDENT_NAME],
        result.processor,
        ablation_entries,
        [path for _, path in result.figures],
        result.map_info["teacher Grad-CAM"]["stage_selection"],
        result.operating_thresholds,
    )


def _evaluation_metadata(config: DemoConfig, data: DemoData, evaluation: Evaluation) -> dict:
    """What the demo's evaluation measured on (the report's and the card's `metadata["evaluation"]`)."""
    test = data.datasets["test"]
    student_map = evaluation.entries[STUDENT_NAME].get("map") or {}
    return evaluation_metadata(
        get_metadata(test).get("source") or data.source,
        "test",
        len(test),
        data.label_names,
        map_grid=student_map.get("grid"),
        synthetic=not config.data_dir,
        split_source=get_metadata(test).get("split_source"),
    )


def step_export(config: DemoConfig, data: DemoData, evaluation: Evaluation, out: Path) -> Path:
    """The Hub-ready folder of the student (`out/model`), with the tuned heatmap thresholds in its processor and a
    model card read from the student's report entry."""
    test = data.datasets["test"]
    model_dir = out / "model"
    processor = evaluation.processor
    tuned = reported_thresholds(evaluation.entries[STUDENT_NAME])
    if isinstance(tuned, dict):
        processor.heatmap_threshold = [float(tuned.get(name, 0.5)) for name in data.label_names]
    hub_results = build_report(
        {STUDENT_NAME: evaluation.entries[STUDENT_NAME]},
        title=f"clarity-demo-{config.preset}",
        metadata={
            "training": {
                "synthetic_only": not config.data_dir,
                "dataset_name": "NIH ChestX-ray14"
                if config.data_dir
                else "clarity_hf synthetic CXR benchmark",
                "description": f"Trained by `clarity-demo` ({data.source}); {config.student_steps} optimizer steps, "
                f"distilled from a {_teacher_description(config)} teacher.",
                "base_model": None,
                "recipe": {
                    "steps": config.student_steps,
                    "batch_size": config.batch_size,
                    "learning_rate": config.learning_rate,
                    "image_size": config.image_size,
                },
            },
            "evaluation": _evaluation_metadata(config, data, evaluation),
        },
    )
    examples_dir = out / "examples"
    examples_dir.mkdir(exist_ok=True)
    example_paths = []
    for i in range(min(2, len(test))):
        path = examples_dir / test[i]["image_id"]
        test[i]["image"].save(path)
        example_paths.append(path)
    save_for_hub(
        evaluation.student,
        processor,
        model_dir,
        results=hub_results,
        example_images=example_paths,
        model_name=STUDENT_NAME,
    )
    return model_dir


def step_reload(config: DemoConfig, data: DemoData, evaluation: Evaluation, model_dir: Path) -> dict:
    """The exported folder loaded in a fresh process without clarity_hf; {"ok", ...} ({"ok": None} when skipped)."""
    if not config.reload_check:
        return {"ok": None, "skipped": True}
    test = data.datasets["test"]
    images = [test[i]["image"] for i in range(min(2, len(test)))]
    pixel_values = evaluation.processor(images=images, return_tensors="pt")["pixel_values"]
    reload = reload_in_fresh_process(model_dir, evaluation.student, pixel_values)
    _log(f"fresh-process reload: {'OK' if reload.get('ok') else 'FAILED'} {reload}")
    return reload


def _ablation_rows(config: DemoConfig, evaluation: Evaluation) -> list[dict]:
    """The ablation table rows: every variant's metrics aggregated over the seeds (`aggregate_ablation`)."""
    if not evaluation.ablation_entries:
        return []
    labels = {"full": "full CLARiTy", **{key: ABLATIONS[key][0] for key in config.ablations}}
    runs = {
        labels[key]: [entry_metrics(entry) for entry in seeds.values()]
        for key, seeds in evaluation.ablation_entries.items()
    }
    switches = {
        ABLATIONS[key][0]: ", ".join(f"{k}={v}" for k, v in ABLATIONS[key][1].items())
        for key in config.ablations
    }
    return aggregate_ablation(runs, "full CLARiTy", switches=switches)


def step_verdict(
    config: DemoConfig,
    data: DemoData,
    trained: TrainedModels,
    evaluation: Evaluation,
    model_dir: Path,
    reload: dict,
    clock: _Clock,
    out: Path,
) -> DemoResult:
    """The verdict and the ablation table from the numbers, and the report (`report.md`, `report.json`)."""
    check = verdict(evaluation.entries)
    ablation_rows = _ablation_rows(config, evaluation)
    clock.total()
    sections = [verdict_markdown(check, "NIH ChestX-ray14" if config.data_dir else "synthetic data")]
    if ablation_rows:
        sections.append(ablation_markdown(ablation_rows, config.ablation_steps, config.ablation_seeds))
    reload_text = "OK" if reload.get("ok") else ("skipped" if reload.get("skipped") else f"FAILED ({reload})")
    sections.append(
        "## Run\n\n"
        + "\n".join(f"- {k}: {v:.1f} s" for k, v in clock.timings.items())
        + f"\n- fresh-process reload of `{model_dir.name}/` with trust_remote_code (clarity_hf blocked): {reload_text}"
        + "\n- figures: "
        + ", ".join(f"`{p.relative_to(out)}`" for p in evaluation.figures)
        + "\n- heatmap methods' inference time on the test split: "
        + ", ".join(f"{n} {p.seconds:.1f} s" for n, p in evaluation.predictions.items())
        + " (teacher Grad-CAM: every stage in one shared pass)"
    )
    metadata = {
        "evaluation": _evaluation_metadata(config, data, evaluation),
        "data": data.source,
        "split": "test (AUROC: every image; localization: tuned on box_split=tune, reported on box_split=eval)",
        "student": f"{config.preset} ({config.image_size} px), `{PRESET_CONFIGS[config.preset][0]}`",
        "teacher": f"{_teacher_description(config)}, `{PRESET_CONFIGS[config.preset][1]}`",
        "schedule": f"teacher {config.teacher_steps}, student {config.student_steps}, plain ViT "
        f"{config.baseline_steps} optimizer steps, batch {config.batch_size}"
        + (
            f"; ablations {config.ablation_steps} steps x seeds {config.ablation_seeds}"
            if config.ablations
            else "; no ablations"
        ),
        "device": "cpu" if not torch.cuda.is_available() else torch.cuda.get_device_name(0),
    }
    paths = write_evaluation(
        out,
        evaluation.entries,
        metadata=metadata,
        title="clarity-demo: CLARiTy vs baselines on the same data",
        extra_markdown="\n\n".join(sections),
        overview=overview_markdown(
            evaluation.entries,
            check,
            evaluation.stage_choice,
            data_source=data.source,
            image_size=config.image_size,
            schedule={
                "teacher": config.teacher_steps,
                "student": config.student_steps,
                "plain ViT": config.baseline_steps,
            },
            per_class_thresholds=config.per_class_thresholds,
            synthetic=not config.data_dir,
            ablation_rows=ablation_rows,
            ablation_seeds=config.ablation_seeds,
            ablation_steps=config.ablation_steps,
        ),
        extra_json={
            "verdict": check,
            "ablation": ablation_rows,
            "operating_thresholds": evaluation.operating_thresholds,
            "timings": clock.timings,
            "reload": reload,
            "config": asdict(config),
        },
    )
    _log(f"report: {paths['markdown']} and {paths['json']}")
    for p in evaluation.figures:
        _log(f"figure: {p}")
    _log(f"model folder: {model_dir} (AutoModel.from_pretrained(..., trust_remote_code=True))")
    _log(f"verdict: {'met' if check['passed'] else 'NOT met'}; total {clock.timings['total']:.1f} s")
    return DemoResult(
        out, paths["json"], paths["markdown"], evaluation.figures, model_dir, reload, clock.timings, check
    )


def run_demo(config: DemoConfig) -> DemoResult:
    """Run the whole job (see the module docstring); returns where everything is."""
    config = config.resolved()
    clock = _Clock()
    out = Path(config.output_dir)
    for sub in ("runs", "model", "figures"):
        shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)

    data = step_data(config)
    clock.lap("data")
    trained = step_train(config, data, out / "runs", clock)
    evaluation = step_evaluate(config, data, trained, out / "figures")
    clock.lap("evaluate")
    model_dir = step_export(config, data, evaluation, out)
    clock.lap("save model folder")
    reload = step_reload(config, data, evaluation, model_dir)
    if not reload.get("skipped"):
        clock.lap("reload check")
    return step_verdict(config, data, trained, evaluation, model_dir, reload, clock, out)


def main(argv: Sequence[str] | None = None) -> int:
    """`clarity demo` / `clarity-demo`: run the demo and print where its results are (JSON on stdout)."""
    config = parse_demo_args(argv)
    result = run_demo(config)
    print(
        json.dumps(
            {
                "report_markdown": str(result.report_markdown),
                "report_json": str(result.report_json),
                "figures": [str(p) for p in result.figures],
                "model_dir": str(result.model_dir),
                "reload_ok": result.reload.get("ok"),
                "verdict_met": result.verdict["passed"],
                "seconds": result.timings.get("total"),
            },
            indent=2,
        )
    )
    return 0 if (result.reload.get("ok") is not False) else 1
