# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Evaluate saved models on a dataset split and write a report folder (report.json, report.md, overlay figures).

    clarity evaluate --model runs/student/best_model --model runs/teacher/best_model \
        --dataset data/nih --split test --output-dir reports/nih
    clarity evaluate --model clarity-demo-output/model --synthetic --output-dir reports/synthetic

Each `--model` is a folder (`NAME=DIR` names its rows): a CLARiTy model gives one row, a ConvNeXt(V2) teacher two
(Grad-CAM and CAM), a plain-ViT baseline one (CLS attention). AUROC on every image of the split; localization tuned on
`box_split == "tune"`, reported on `"eval"`; a teacher's Grad-CAM is read from the stage that localises best on the
tune half (ties: the grid closest to the first CLARiTy model's), and each row states its map grid and stage. The
logic is `clarity_hf.evaluation.models.evaluate_models` (shared with the demo).

Sharded over processes (one per GPU, or gloo CPU processes): `torchrun --nproc_per_node N -m clarity_hf evaluate ...`
or `accelerate launch --multi_gpu --num_processes N -m clarity_hf evaluate ...`. Each process runs the models on its
share of the split's batches; the predictions are gathered in the split's order, and only the main process computes
the metrics and writes the report (the same numbers as one process). `--device cuda` is each process's own GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from datasets import DatasetDict
from transformers import HfArgumentParser

from ..data.features import get_label_names, get_metadata
from ..data.sources import load_training_data
from ..data.synthetic import build_synthetic_cxr
from ..distributed import close_processes, process_state
from ..evaluation.models import LabelMismatchError, evaluate_models
from ..evaluation.report import evaluation_metadata
from ..evaluation.run import write_evaluation
from .arguments import parse_into_dataclass
from .errors import CommandError, check_device


@dataclass
class EvaluateArguments:
    """`clarity evaluate` options (`HfArgumentParser`; `--output-dir` and `--output_dir` both work). `--model`
    repeats (and takes several folders at once); exactly one of `--dataset` and `--synthetic` is checked on
    construction, as argparse's mutually exclusive group did."""

    model: list[str] = field(metadata={"action": "extend", "help": "model folder, or NAME=DIR (repeatable)"})
    output_dir: str
    dataset: str | None = field(
        default=None,
        metadata={
            "help": "a DatasetDict folder written by save_to_disk (clarity_hf data builders), or any source "
            "training's --dataset takes (CSV, image folder, datasets name; the same --seed and "
            "--validation-fraction give the training run's validation split)"
        },
    )
    synthetic: bool = field(default=False, metadata={"help": "build the synthetic benchmark's test split"})
    split: str = "test"
    seed: int = field(default=42, metadata={"help": "seed of a validation split drawn from the data"})
    validation_fraction: float = 0.2
    synthetic_num_test: int = 512
    synthetic_image_size: int = 128
    synthetic_seed: int = 0
    per_class_thresholds: bool = field(
        default=False, metadata={"help": "tune one heatmap threshold per class"}
    )
    n_bootstrap: int = 1000
    batch_size: int = 32
    device: str = "cpu"

    def __post_init__(self):
        if self.synthetic and self.dataset is not None:
            raise ValueError("argument --synthetic: not allowed with argument --dataset")
        if not self.synthetic and self.dataset is None:
            raise ValueError("one of the arguments --dataset --synthetic is required")
        for option in ("batch_size", "synthetic_num_test", "synthetic_image_size"):
            if getattr(self, option) < 1:
                raise ValueError(f"--{option.replace('_', '-')} {getattr(self, option)}: must be at least 1")


def parse_args(argv=None) -> EvaluateArguments:
    return parse_into_dataclass(
        HfArgumentParser(
            EvaluateArguments,
            prog="clarity evaluate",
            description=__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        ),
        argv,
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    check_device(args.device)
    state = process_state()
    device = state.device if state is not None and args.device == "cuda" else args.device
    if args.synthetic:
        datasets = build_synthetic_cxr(
            0, 0, args.synthetic_num_test, image_size=args.synthetic_image_size, seed=args.synthetic_seed
        )
        source = f"synthetic CXR benchmark (seed {args.synthetic_seed}, {args.synthetic_image_size} px)"
    else:
        # the main process first: whatever the loader caches is written once, then read by the others
        with state.main_process_first() if state is not None else contextlib.nullcontext():
            datasets = load_training_data(
                args.dataset, validation_fraction=args.validation_fraction, seed=args.seed
            )
        source = args.dataset
    if isinstance(datasets, DatasetDict):
        if args.split not in datasets:
            raise CommandError(f"{source} has no split {args.split!r} (splits: {list(datasets)})")
        split = datasets[args.split]
    else:
        split = datasets
    try:
        label_names = get_label_names(split)
    except ValueError:
        label_names = None

    specs = [spec.rpartition("=")[::2] if "=" in spec else ("", spec) for spec in args.model]
    out = Path(args.output_dir)
    try:
        result = evaluate_models(
            [(name or None, folder) for name, folder in specs],
            split,
            label_names,
            batch_size=args.batch_size,
            device=device,
            per_class_thresholds=args.per_class_thresholds,
            n_bootstrap=args.n_bootstrap,
            figures_dir=out / "figures",
            state=state,
        )
    except LabelMismatchError as err:
        raise CommandError(str(err)) from err
    if state is not None and not state.is_main_process:  # the main process alone writes
        close_processes(state)
        return 0
    figures = [f"{name}: {path}" for name, path in result.figures]
    reference_grid = result.reference_grid
    paths = write_evaluation(
        out,
        result.entries,
        metadata={
            "evaluation": evaluation_metadata(
                get_metadata(split).get("source") or source,
                args.split,
                len(split),
                result.label_names,
                map_grid=" x ".join(map(str, reference_grid)) if reference_grid else None,
                dataset_id=None if args.synthetic else source,
                synthetic=args.synthetic,
                split_source=get_metadata(split).get("split_source"),
            ),
            "models": ", ".join(args.model),
        },
        extra_markdown="## Figures\n\n" + "\n".join(f"- {f}" for f in figures) if figures else "",
    )
    summary = {
        "report_json": str(paths["json"]),
        "report_markdown": str(paths["markdown"]),
        "figures": figures,
    }
    if state is not None:
        summary["processes"] = state.num_processes
    print(json.dumps(summary, indent=2))
    close_processes(state)
    return 0
