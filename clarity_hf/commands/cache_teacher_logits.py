# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Write a copy of a data set with a `teacher_logits` column (valid only for student runs WITHOUT augmentation).

    clarity cache-teacher-logits --config tiny_cpu.yaml --teacher_name_or_path runs/teacher/best_model \\
        --cache_output_dir data/synthetic_with_logits
    clarity train --config tiny_cpu.yaml --dataset data/synthetic_with_logits \\
        --use_cached_teacher_logits true --distillation_loss_weight 0.5 --output_dir runs/cached

Takes the same options as train.py (dataset, splits, teacher_image_size / image_size, normalisation).
"""

import sys
from dataclasses import dataclass, field

from datasets import DatasetDict
from transformers import HfArgumentParser

from ..configuration_clarity import NIH_PATHOLOGIES
from ..training import parse_training_config
from ..training.data import get_dataset_label_names, load_datasets
from ..training.models import load_teacher
from ..training.teacher_cache import add_teacher_logits
from .arguments import parse_into_dataclass
from .errors import CommandError


@dataclass
class CacheTeacherLogitsArguments:
    """The options of `clarity cache-teacher-logits` on top of `clarity train`'s (`HfArgumentParser`;
    `--cache-output-dir` and `--cache_output_dir` both work)."""

    cache_output_dir: str = field(metadata={"help": "Folder for the DatasetDict with teacher_logits."})
    splits: list[str] | None = field(
        default=None, metadata={"help": "Splits to annotate (default: the train split)."}
    )
    cache_batch_size: int = 32

    def __post_init__(self):
        if self.cache_batch_size < 1:
            raise ValueError(f"--cache_batch_size {self.cache_batch_size}: must be at least 1")


def parse_args(argv=None) -> tuple[CacheTeacherLogitsArguments, list[str]]:
    """Its own options and the rest of the command line, which `parse_training_config` reads (so `--help`
    lists the training options)."""
    # add_help=False: --help goes on to the training parser.
    parser = HfArgumentParser(
        CacheTeacherLogitsArguments, prog="clarity cache-teacher-logits", add_help=False
    )
    return parse_into_dataclass(parser, argv, remaining=True)


def main(argv=None) -> int:
    known, rest = parse_args(list(sys.argv[1:] if argv is None else argv))
    config = parse_training_config(rest + ["--output_dir", known.cache_output_dir])
    if not config.teacher_name_or_path:
        raise CommandError("--teacher_name_or_path is required")
    if config.augment:
        raise CommandError("cached teacher logits are only valid without augmentation: pass --augment false")
    datasets = load_datasets(config)
    label_names = config.label_names or get_dataset_label_names(datasets) or list(NIH_PATHOLOGIES)
    teacher = load_teacher(config.teacher_name_or_path, label_names)
    image_size = config.teacher_image_size or config.image_size or teacher.config.image_size
    splits = known.splits or [config.train_split]
    cached = add_teacher_logits(teacher, datasets, image_size, config, splits, known.cache_batch_size)
    # An empty split (e.g. the synthetic `test` split with 0 rows) does not survive save_to_disk / load_from_disk.
    cached = DatasetDict({name: split for name, split in cached.items() if len(split) > 0})
    cached.save_to_disk(known.cache_output_dir)
    print(f"wrote {known.cache_output_dir} with teacher_logits on {splits}")
    return 0
