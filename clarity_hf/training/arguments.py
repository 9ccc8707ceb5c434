# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""`ClarityTrainingConfig`: every option of a CLARiTy or teacher training run, parsed with `HfArgumentParser`
from the command line, a YAML / JSON file, or both (the file gives defaults, the command line overrides them)."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Union

import yaml
from transformers import HfArgumentParser

from ..checks import check_positive_integers

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
MODEL_TYPES = ("clarity", "convnextv2")
MIXED_PRECISION = ("no", "fp16", "bf16")
BIAS_INITS = ("prior", "none")
RESAMPLE_FILTERS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")


@dataclass
class ClarityTrainingConfig:
    """Options of one training run. A teacher is trained with `model: convnextv2` and no teacher; the CLARiTy
    student with `model: clarity` and, for distillation, `teacher_name_or_path` (or cached teacher logits)."""

    # --- model -------------------------------------------------------------------------------------------------
    model: str = field(
        default="clarity", metadata={"help": "`clarity` (the student) or `convnextv2` (the teacher)."}
    )
    model_preset: str = field(
        default="clarity-tiny",
        metadata={
            "help": "Architecture preset: a ClarityConfig preset (clarity-s-16-224, clarity-s-16-512, clarity-tiny) "
            "or a ConvNeXtV2 preset (convnextv2-base, convnextv2-tiny, convnextv2-test)."
        },
    )
    model_config_overrides: Union[dict, str] | None = field(
        default=None, metadata={"help": "Config fields to override, a dict (YAML) or a JSON string (CLI)."}
    )
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Start from a saved model folder (`from_pretrained`); the head is replaced when the labels differ."
        },
    )
    init_from_dino: str | None = field(
        default=None,
        metadata={"help": "Initialise the CLARiTy backbone from a DINO ViT-S/16 checkpoint file."},
    )
    label_names: list[str] | None = field(
        default=None,
        metadata={"help": "Label names; default: the data set's label names, else the 14 NIH labels."},
    )
    pos_weight: str | None = field(
        default=None,
        metadata={
            "help": "`balanced`: the CLARiTy BCE's per-class pos_weight = negatives / positives of the training "
            "split. An explicit list goes in model_config_overrides: {pos_weight: [...]}."
        },
    )
    classifier_bias_init: str = field(
        default="prior",
        metadata={
            "help": "`prior`: start the classification head's biases at the log-odds of each label's frequency in "
            "the training split (with pos_weight: of the weighted frequency), as RetinaNet's prior initialisation, "
            "so that rare labels (Hernia) are not pushed into a dead zone in the first steps; applied to every new "
            "head (a model given to `train()` counts as new), not to a head loaded from model_name_or_path with the "
            "same number of labels. `none`: keep the model's own initialisation (zeros)."
        },
    )
    image_size: int | None = field(default=None, metadata={"help": "Input side; default: the preset's."})
    drop_path_rate: float | None = field(
        default=None, metadata={"help": "Stochastic depth; default: the preset's."}
    )
    # --- teacher / distillation ---------------------------------------------------------------------------------
    teacher_name_or_path: str | None = field(
        default=None,
        metadata={"help": "A trained teacher folder (ConvNextV2ForImageClassification.save_pretrained)."},
    )
    teacher_image_size: int | None = field(
        default=None, metadata={"help": "Resize the student's augmented view to this side for the teacher."}
    )
    distillation_loss_weight: float | None = field(
        default=None,
        metadata={"help": "Overrides the student's config; 0 disables distillation (no teacher loaded)."},
    )
    use_cached_teacher_logits: bool = field(
        default=False,
        metadata={
            "help": "Read the `teacher_logits` column (`clarity cache-teacher-logits`); needs augment=False."
        },
    )
    # --- data ---------------------------------------------------------------------------------------------------
    dataset: str = field(
        default="synthetic",
        metadata={
            "help": "`synthetic`; a CSV of image paths and labels (0/1 columns or one delimited column, optional "
            "patient and split columns); an image folder (a labels CSV in it, or one sub-folder per class); a "
            "`save_to_disk` / prepared cache folder; or a `datasets` name. The label set is the data's; a split "
            "missing from it is drawn by patient (see `clarity_hf.data.sources`)."
        },
    )
    dataset_image_column: str | None = field(
        default=None, metadata={"help": "CSV column of image paths (default: path, image, Image Index, ...)."}
    )
    dataset_label_column: str | None = field(
        default=None,
        metadata={
            "help": "CSV column of delimited label names (default: `Finding Labels` or `labels` if present)."
        },
    )
    dataset_label_separator: str = field(default="|", metadata={"help": "Separator of dataset_label_column."})
    dataset_patient_column: str | None = field(
        default=None,
        metadata={"help": "CSV patient column (default: patient_id, Patient ID, ... if present)."},
    )
    dataset_split_column: str | None = field(
        default=None,
        metadata={"help": "CSV column of train / validation / test (default: `split` if present)."},
    )
    dataset_boxes_csv: str | None = field(
        default=None, metadata={"help": "CSV of boxes `image,label,x,y,w,h` in the image's pixels."}
    )
    dataset_image_root: str | None = field(
        default=None, metadata={"help": "Folder the CSV's image paths are relative to (default: the CSV's)."}
    )
    validation_fraction: float = field(
        default=0.2,
        metadata={
            "help": "Share of the training images drawn (by patient, seeded) when the data has no validation."
        },
    )
    dataset_skip_missing: bool = field(
        default=False, metadata={"help": "Skip and report missing or unreadable images instead of stopping."}
    )
    train_split: str = "train"
    validation_split: str = "validation"
    synthetic_num_train: int = 512
    synthetic_num_validation: int = 128
    synthetic_image_size: int = 64
    synthetic_seed: int = 0
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    augment: bool = field(
        default=False, metadata={"help": "CXR-safe augmentation (crop, rotation, intensity)."}
    )
    augment_on: str = field(
        default="device",
        metadata={
            "help": "Where augmentation runs: `device` (loader workers only decode to uint8; the training step "
            "warps the whole batch where the model runs) or `cpu` (per sample in the loader workers). Both draw "
            "the same parameters per (seed, epoch, sample).",
            "choices": ["cpu", "device"],
        },
    )
    augment_scale_min: float = 0.75
    augment_rotation_degrees: float = 10.0
    augment_brightness: float = 0.1
    augment_contrast: float = 0.1
    image_mean: list[float] | None = field(
        default=None,
        metadata={
            "help": "Per-channel mean of the grayscale image repeated to 3 channels. Default: the starting folder's "
            "processor (model_name_or_path), else ImageNet's (as DINO)."
        },
    )
    image_std: list[float] | None = field(
        default=None,
        metadata={"help": "Per-channel std. Default: the starting folder's processor, else ImageNet's."},
    )
    resample: str | None = field(
        default=None,
        metadata={
            "help": "Resize filter (bilinear, bicubic, ...). Default: the starting folder's processor, else bilinear."
        },
    )
    dataloader_num_workers: int = 0
    decoded_memory_mb: int = field(
        default=1024,
        metadata={
            "help": "A split that is not augmented is decoded once and its samples kept in memory when they fit in "
            "this many MB (per split; single-process loading, dataloader_num_workers=0): later epochs and "
            "evaluations reuse them. 0: decode every time."
        },
    )
    # --- optimisation -------------------------------------------------------------------------------------------
    output_dir: str | None = field(
        default=None, metadata={"help": "Where checkpoints, logs and the best model go."}
    )
    num_train_epochs: int = 1
    max_steps: int = field(
        default=-1, metadata={"help": "Stop after this many optimizer steps (> 0 overrides epochs)."}
    )
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 16
    gradient_accumulation_steps: int = 1
    learning_rate: float = 5e-4
    scale_lr_with_batch_size: bool = field(
        default=False,
        metadata={"help": "Use learning_rate * global_batch / 512 (the DeiT rule of the recipe)."},
    )
    weight_decay: float = 0.05
    layer_decay: float | None = field(
        default=None, metadata={"help": "Layer-wise lr decay factor (e.g. 0.75)."}
    )
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    warmup_epochs: float = 0.0
    warmup_steps: int = field(
        default=0, metadata={"help": "Warm-up optimizer steps (added to warmup_epochs)."}
    )
    max_grad_norm: float = 1.0
    mixed_precision: str = field(default="no", metadata={"help": "`no`, `fp16` or `bf16`."})
    seed: int = 42
    use_cpu: bool = field(
        default=False, metadata={"help": "Train on CPU even when an accelerator is available."}
    )
    # --- checkpoints, evaluation, logging -----------------------------------------------------------------------
    checkpointing_steps: int = field(
        default=0, metadata={"help": "Save a checkpoint every N optimizer steps (0: epochs only)."}
    )
    save_total_limit: int = field(default=3, metadata={"help": "Keep at most this many checkpoints."})
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={
            "help": "`latest` (the newest complete checkpoint of a run with the same options in output_dir) or a "
            "checkpoint folder."
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Delete the checkpoints, best model and logs of an earlier run in output_dir first."
        },
    )
    eval_every_epoch: bool = True
    save_best_model: bool = True
    logging_steps: int = 10
    report_to: list[str] = field(default_factory=lambda: ["tensorboard", "jsonl"])
    tracker_project_name: str = "clarity_hf"
    disable_tqdm: bool = False

    def __post_init__(self):
        if isinstance(self.model_config_overrides, str):
            try:
                self.model_config_overrides = json.loads(self.model_config_overrides)
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"model_config_overrides is not valid JSON: {self.model_config_overrides!r}"
                ) from err
        if self.model not in MODEL_TYPES:
            raise ValueError(f"model must be one of {MODEL_TYPES}, got {self.model!r}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(
                f"mixed_precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}"
            )
        if self.use_cached_teacher_logits and self.augment:
            raise ValueError(
                "use_cached_teacher_logits=True with augment=True: cached teacher logits were computed on the "
                "un-augmented images, so they do not describe the augmented view the student sees. Either set "
                "augment=False, or drop use_cached_teacher_logits and give teacher_name_or_path (online teacher)."
            )
        if self.use_cached_teacher_logits and self.teacher_name_or_path:
            raise ValueError("give either use_cached_teacher_logits or teacher_name_or_path, not both")
        if self.model == "convnextv2" and (self.teacher_name_or_path or self.use_cached_teacher_logits):
            raise ValueError("the convnextv2 teacher is trained without a teacher: drop teacher_name_or_path")
        if self.augment_on not in ("cpu", "device"):
            raise ValueError(f"augment_on must be `cpu` or `device`, got {self.augment_on!r}")
        if self.pos_weight not in (None, "balanced"):
            raise ValueError(f"pos_weight must be `balanced` or unset, got {self.pos_weight!r}")
        if self.pos_weight and self.model != "clarity":
            raise ValueError(
                "pos_weight is applied by the CLARiTy model's loss; the convnextv2 teacher uses transformers' "
                "own BCE, which has none"
            )
        if self.classifier_bias_init not in BIAS_INITS:
            raise ValueError(
                f"classifier_bias_init must be one of {BIAS_INITS}, got {self.classifier_bias_init!r}"
            )
        self._check_numbers()

    def _check_numbers(self) -> None:
        """Refuse impossible values now, before any data or model is built, naming the option."""
        positive_ints = (
            "per_device_train_batch_size",
            "per_device_eval_batch_size",
            "gradient_accumulation_steps",
            "num_train_epochs",
            "logging_steps",
        )
        check_positive_integers({name: getattr(self, name) for name in positive_ints})
        non_negative = (
            "checkpointing_steps",
            "save_total_limit",
            "warmup_steps",
            "warmup_epochs",
            "weight_decay",
            "max_grad_norm",
            "dataloader_num_workers",
            "decoded_memory_mb",
        )
        for name in non_negative:
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be >= 0, got {value!r}")
        for name in ("max_train_samples", "max_eval_samples", "teacher_image_size", "image_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be an integer >= 1 (or unset), got {value!r}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(
                f"max_steps must be > 0 (or -1: train num_train_epochs epochs), got {self.max_steps}"
            )
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be a finite number > 0, got {self.learning_rate!r}")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        if not self.adam_epsilon > 0:
            raise ValueError(f"adam_epsilon must be > 0, got {self.adam_epsilon!r}")
        if self.layer_decay is not None and not 0 < self.layer_decay <= 1:
            raise ValueError(f"layer_decay must be in (0, 1], got {self.layer_decay!r}")
        if not 0 < self.augment_scale_min <= 1:
            raise ValueError(f"augment_scale_min must be in (0, 1], got {self.augment_scale_min!r}")
        if self.image_std is not None and (
            len(self.image_std) != 3 or not all(math.isfinite(v) and v > 0 for v in self.image_std)
        ):
            raise ValueError(f"image_std must be 3 finite numbers > 0, got {self.image_std!r}")
        if self.image_mean is not None and (
            len(self.image_mean) != 3 or not all(math.isfinite(v) for v in self.image_mean)
        ):
            raise ValueError(f"image_mean must be 3 finite numbers, got {self.image_mean!r}")
        if self.resample is not None and self.resample not in RESAMPLE_FILTERS:
            raise ValueError(f"resample must be one of {RESAMPLE_FILTERS}, got {self.resample!r}")
        if self.overwrite_output_dir and self.resume_from_checkpoint:
            raise ValueError("give either overwrite_output_dir or resume_from_checkpoint, not both")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> ClarityTrainingConfig:
        """Read a YAML or JSON file (a bare name is looked up among the shipped configs)."""
        path = resolve_config_path(path)
        parser = HfArgumentParser(cls)
        if path.suffix == ".json":
            return parser.parse_json_file(str(path), allow_extra_keys=False)[0]
        return parser.parse_yaml_file(str(path), allow_extra_keys=False)[0]


def resolve_config_path(path: str | os.PathLike) -> Path:
    """`path` itself when it exists, else the shipped config of that name (`tiny_cpu` or `tiny_cpu.yaml`)."""
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    for name in (candidate.name, candidate.name + ".yaml"):
        shipped = CONFIG_DIR / name
        if shipped.is_file():
            return shipped
    known = sorted(p.name for p in CONFIG_DIR.glob("*.yaml"))
    raise FileNotFoundError(f"config file {str(path)!r} not found (shipped configs: {known})")


def parse_training_config(args: list[str] | None = None) -> ClarityTrainingConfig:
    """Parse `--config FILE` (YAML / JSON, optional) and any other `--option value`; the command line wins.

    Example: `parse_training_config(["--config", "tiny_cpu.yaml", "--output_dir", "runs/tiny"])`.
    """
    parser = HfArgumentParser(ClarityTrainingConfig)
    parser.add_argument("--config", type=str, default=None, help="YAML or JSON file with default options.")
    known, _ = parser.parse_known_args(args)
    if known.config is not None:
        path = resolve_config_path(known.config)
        with open(path, encoding="utf-8") as handle:
            values = json.load(handle) if path.suffix == ".json" else yaml.safe_load(handle)
        unknown = set(values or {}) - set(ClarityTrainingConfig.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{path}: unknown option(s) {sorted(unknown)}")
        if isinstance((values or {}).get("model_config_overrides"), dict):
            values["model_config_overrides"] = json.dumps(values["model_config_overrides"])
        parser.set_defaults(**(values or {}))
    config, namespace = parser.parse_args_into_dataclasses(args, return_remaining_strings=False)[0], None
    del namespace
    return config
