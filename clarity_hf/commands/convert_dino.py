# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Convert DINO ViT-S/16 weights into a Hub-ready CLARiTy model folder.

    clarity convert-dino --checkpoint dino_deitsmall16_pretrain.pth --preset clarity-s-16-512 \\
        --output clarity-s-16-512-dino

The checkpoint may be an HF `ViTModel` folder or safetensors file (e.g. a local copy of `facebook/dino-vits16`), or an
official DINO / timm `.pth` (read with `torch.load(weights_only=True)`).
"""

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from transformers import HfArgumentParser

from .. import ClarityConfig
from ..configuration_clarity import CLARITY_PRESETS
from ..convert import convert_dino_checkpoint
from ..data.transforms import build_processor
from .arguments import parse_into_dataclass


@dataclass
class ConvertDinoArguments:
    """`clarity convert-dino` options (parsed with `HfArgumentParser`)."""

    checkpoint: str = field(metadata={"help": "DINO checkpoint file or folder"})
    output: str = field(metadata={"help": "folder for save_pretrained"})
    preset: str = field(default="clarity-s-16-512", metadata={"choices": sorted(CLARITY_PRESETS)})
    class_token_init: Literal["cls_noise", "trunc_normal"] | None = None
    class_token_init_std: float | None = None
    seed: int = field(default=0, metadata={"help": "seeds the heads and the class-token noise"})
    no_atlas: bool = field(default=False, metadata={"help": "keep the analytic prior, not the shipped atlas"})


def main(argv: list[str] | None = None) -> None:
    parser = HfArgumentParser(
        ConvertDinoArguments,
        prog="clarity convert-dino",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    args = parse_into_dataclass(parser, argv)
    args.checkpoint, args.output = Path(args.checkpoint), Path(args.output)

    overrides = {}
    if args.class_token_init is not None:
        overrides["class_token_init"] = args.class_token_init
    if args.class_token_init_std is not None:
        overrides["class_token_init_std"] = args.class_token_init_std
    config = ClarityConfig.from_preset(args.preset, **overrides)
    model, report = convert_dino_checkpoint(
        args.checkpoint,
        config,
        atlas=None if args.no_atlas else "default",
        seed=args.seed,
        return_report=True,
    )
    model.save_pretrained(args.output)  # a complete folder: auto_map, custom_pipelines, the Hub code files
    build_processor(config).save_pretrained(args.output)  # the recipe's pixels (DINO's ImageNet statistics)
    print(report.summary())
    print(f"saved {args.preset} to {args.output}")
