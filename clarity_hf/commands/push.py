# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Export a CLARiTy checkpoint as a Hub repo folder and upload it (or, with --dry-run, only write and list it).

    clarity push --model runs/clarity-s-16-512/best --results eval/results.json \\
        --repo-id org/clarity-s-16-512 --examples ../shared/realdata/nih/00000001_000.png --dry-run --out hub_export

The checkpoint folder must hold model.safetensors (pickle checkpoints are refused) and preprocessor_config.json
(else a default `ClarityImageProcessor` at the model's input size is used).
"""

import argparse
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub.utils import validate_repo_id
from transformers import HfArgumentParser

from .. import ClarityForMultiLabelLocalization, ClarityImageProcessor
from ..data.transforms import build_processor
from ..hub import (
    ExportError,
    describe_folder,
    load_model_strictly,
    push_to_hub,
    resolve_model_folder,
    save_for_hub,
)
from .arguments import parse_into_dataclass
from .errors import CommandError


@dataclass
class PushArguments:
    """`clarity push` options (parsed with `HfArgumentParser`; `--repo-id` and `--repo_id` both work)."""

    model: str = field(metadata={"help": "trained model folder (safetensors) or Hub id"})
    repo_id: str = field(metadata={"help": "target Hub repo, e.g. org/clarity-s-16-512"})
    results: str | None = field(
        default=None,
        metadata={
            "help": "evaluation report JSON (clarity_hf.evaluation.report.write_report) for the model card"
        },
    )
    examples: list[str] = field(
        default_factory=list, metadata={"help": "example images (PNG/JPEG/DICOM) for the card"}
    )
    out: str | None = field(
        default=None, metadata={"help": "export folder, new or empty (default: a temporary directory)"}
    )
    overwrite: bool = field(default=False, metadata={"help": "empty a non-empty --out folder first"})
    model_name: str | None = field(
        default=None, metadata={"help": "the report's model entry to publish (default: its first model)"}
    )
    revision: str | None = field(default=None, metadata={"help": "branch to commit to"})
    private: bool = False
    token: str | None = field(
        default=None, metadata={"help": "Hub token (default: the logged-in token / HF_TOKEN)"}
    )
    commit_message: str = "Upload CLARiTy model"
    create_pr: bool = False
    dry_run: bool = field(default=False, metadata={"help": "write the folder and list it; upload nothing"})


def parse_args(argv=None) -> PushArguments:
    parser = HfArgumentParser(
        PushArguments,
        prog="clarity push",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parse_into_dataclass(parser, argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    # Checked before anything is loaded or written: a bad repo id or a missing report must not leave a folder behind.
    validate_repo_id(args.repo_id)
    if args.results is not None and not Path(args.results).is_file():
        raise CommandError(
            f"--results {args.results}: no such file (give the report.json of `clarity evaluate`)"
        )
    try:
        source = resolve_model_folder(args.model)
    except OSError as err:
        raise CommandError(
            f"--model {args.model}: neither a model folder nor a Hub model available here ({err})"
        ) from err
    # Strict: a folder with missing or non-finite weights is never published as a randomly initialised model.
    model = load_model_strictly(source, ClarityForMultiLabelLocalization)
    if (source / "preprocessor_config.json").is_file():
        processor = ClarityImageProcessor.from_pretrained(source)
    else:
        processor = build_processor(model.config)  # the recipe the package trains with
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="clarity_hub_"))
    try:
        save_for_hub(
            model,
            processor,
            out,
            results=args.results,
            example_images=args.examples,
            repo_id=args.repo_id,
            model_name=args.model_name,
            overwrite=args.overwrite,
        )
    except ExportError as err:
        raise ExportError(str(err).replace("pass overwrite=True", "pass --overwrite")) from err
    files = describe_folder(out)
    verb = "would upload" if args.dry_run else "uploading"
    print(f"{verb} {len(files)} files ({sum(size for _, size in files)} bytes) from {out} to {args.repo_id}:")
    for path, size in files:
        print(f"  {size:>12d}  {path}")
    if args.dry_run:
        return 0
    commit = push_to_hub(
        out,
        args.repo_id,
        revision=args.revision,
        private=args.private,
        token=args.token,
        commit_message=args.commit_message,
        create_pr=args.create_pr,
    )
    print(f"committed: {getattr(commit, 'commit_url', commit)}")
    return 0
