# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Build NIH ChestX-ray14 as a clarity_hf data set from a local download, and cache it resized as Parquet.

    clarity prepare /data/nih ./nih-224 --image-size 224 --num-proc 8
    clarity prepare /data/nih ./nih-224 --push-to-hub user/nih-cxr14-224

A rerun resumes: finished shards are skipped. Prints a JSON summary (rows per split, skipped items) as its last line.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from typing import Literal

from transformers import HfArgumentParser

from ..checks import check_positive_integers
from ..data.cache import build_cache
from ..data.chestxray14 import build_chestxray14
from ..data.features import get_build_report
from ..hub.dataset_upload import push_dataset_to_hub
from .arguments import parse_into_dataclass
from .errors import as_input_errors


@dataclass
class PrepareArguments:
    """`clarity prepare` options (`HfArgumentParser`; `--image-size` and `--image_size` both work). The positionals
    and the three flags are added to the parser by hand and filled in: `HfArgumentParser` makes every field an
    option, and a bool one takes an optional value, which would swallow `ROOT` in `--skip-missing ROOT OUT`."""

    image_size: int = field(default=224, metadata={"help": "side of the cached images (224 or 512)"})
    num_proc: int = field(default=1, metadata={"help": "worker processes"})
    shard_size: int = field(default=1000, metadata={"help": "rows per Parquet shard"})
    resample: Literal["bilinear", "lanczos", "box", "bicubic"] = field(
        default="bilinear",
        metadata={
            "help": "resize filter; bilinear (default) is the model processor's, so cached pixels match inference"
        },
    )
    image_format: Literal["pgm", "png"] = field(
        default="pgm",
        metadata={
            "help": "pgm (default): raw uint8, the fastest reads, for the decode-only loader workers of `augment_on:"
            " device`; png: lossless and about half the disk, but inflating it bounds a worker (BENCHMARKS.md, loader)"
        },
    )
    validation_fraction: float = 0.1
    seed: int = field(default=0, metadata={"help": "seed of the validation carve"})
    train_val_list: str | None = field(
        default=None, metadata={"help": "official train_val_list.txt (default: in root)"}
    )
    test_list: str | None = field(
        default=None, metadata={"help": "official test_list.txt (default: in root)"}
    )
    push_to_hub: str | None = field(
        default=None, metadata={"metavar": "REPO_ID", "help": "upload the cache as Parquet"}
    )
    root: str = field(
        init=False,
        default="",
        metadata={"help": "folder of the NIH download (Data_Entry_2017*.csv, BBox_List_2017.csv, images)"},
    )
    output: str = field(init=False, default="", metadata={"help": "cache folder for the Parquet shards"})
    skip_missing: bool = field(
        init=False, default=False, metadata={"help": "skip bad rows / images and report them"}
    )
    overwrite: bool = field(
        init=False,
        default=False,
        metadata={
            "help": "rebuild a cache of other parameters found in --output (default: refuse; same parameters resume)"
        },
    )
    public: bool = field(init=False, default=False, metadata={"help": "make the Hub repository public"})

    def __post_init__(self):
        # Refused before the metadata is read, naming the option.
        check_positive_integers(
            {name: getattr(self, name) for name in ("image_size", "num_proc", "shard_size")},
            lambda name: "--" + name.replace("_", "-"),
        )
        if not 0 <= self.validation_fraction < 1:
            raise ValueError(f"--validation-fraction {self.validation_fraction}: must be in [0, 1)")


BY_HAND = ("root", "output", "skip_missing", "overwrite", "public")


def build_parser() -> HfArgumentParser:
    parser = HfArgumentParser(
        PrepareArguments,
        prog="clarity prepare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for name in BY_HAND:
        help_text = PrepareArguments.__dataclass_fields__[name].metadata["help"]
        if name in ("root", "output"):
            parser.add_argument(name, help=help_text)
        else:
            spellings = dict.fromkeys([f"--{name}", f"--{name.replace('_', '-')}"])
            parser.add_argument(*spellings, action="store_true", help=help_text)
    return parser


def parse_args(argv=None) -> PrepareArguments:
    return parse_into_dataclass(build_parser(), argv)


def main(argv=None) -> None:
    # The builders' ValueErrors all name a bad input (file and line, a parameter, a cache of other parameters).
    with as_input_errors(**{"skip_missing=True": "--skip-missing", "overwrite=True": "--overwrite"}):
        prepare(parse_args(argv))


def prepare(args: PrepareArguments) -> None:
    start = time.perf_counter()
    dataset = build_chestxray14(
        args.root,
        validation_fraction=args.validation_fraction,
        seed=args.seed,
        skip_missing=args.skip_missing,
        train_val_list=args.train_val_list,
        test_list=args.test_list,
    )
    built = time.perf_counter()
    cached = build_cache(
        dataset,
        args.output,
        image_size=args.image_size,
        num_proc=args.num_proc,
        shard_size=args.shard_size,
        resample=args.resample,
        skip_missing=args.skip_missing,
        image_format=args.image_format,
        overwrite=args.overwrite,
    )
    if args.push_to_hub:
        push_dataset_to_hub(cached, args.push_to_hub, private=not args.public)
    summary = {
        "rows": {split: len(part) for split, part in cached.items()},
        "skipped": get_build_report(cached).counts,
        "metadata_seconds": round(built - start, 2),
        "cache_seconds": round(time.perf_counter() - built, 2),
    }
    print(json.dumps(summary))
