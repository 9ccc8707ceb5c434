# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Write an NIH ChestX-ray14-shaped folder: the real metadata rows and boxes of N images (whole patients), with
rendered 1024 x 1024 pixels, in the release's layout (images_0NN/images/*.png, the two CSVs, split lists).

    clarity make-nih-rehearsal nih_rehearsal --num-images 600 --metadata-dir ../shared/nih

Prints a JSON summary (counts, ms per image) as its last line. The logic is `clarity_hf.data.nih_rehearsal`.
"""

import argparse
import json
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from ..data.nih_rehearsal import write_nih_rehearsal
from .arguments import parse_into_dataclass


@dataclass
class MakeNihRehearsalArguments:
    """`clarity make-nih-rehearsal` options (`HfArgumentParser`; `--num-images` and `--num_images` both work).
    The positional `output` is added to the parser by hand: `HfArgumentParser` makes every field an option."""

    metadata_dir: str = field(
        metadata={"help": "folder with Data_Entry_2017_v2020.csv(.gz) and BBox_List_2017.csv(.gz)"}
    )
    num_images: int = field(default=600, metadata={"help": "images to write (%(default)s)"})
    seed: int = 0
    num_proc: int | None = field(
        default=None, metadata={"help": "render processes (default: the cores, <= 8)"}
    )
    output: str = field(init=False, default="", metadata={"help": "folder to write"})

    def __post_init__(self):
        # Refused before the metadata is read (the selection needs a train and a test image).
        if self.num_images < 2:
            raise ValueError(f"--num-images {self.num_images}: must be at least 2 (a train and a test image)")


def build_parser() -> HfArgumentParser:
    parser = HfArgumentParser(
        MakeNihRehearsalArguments,
        prog="clarity make-nih-rehearsal",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "output", help=MakeNihRehearsalArguments.__dataclass_fields__["output"].metadata["help"]
    )
    return parser


def parse_args(argv=None) -> MakeNihRehearsalArguments:
    return parse_into_dataclass(build_parser(), argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    summary = write_nih_rehearsal(args.output, args.num_images, args.metadata_dir, args.seed, args.num_proc)
    print(json.dumps(summary))
    return 0
