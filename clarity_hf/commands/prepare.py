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

from ..data.cache import build_cache
from ..data.chestxray14 import build_chestxray14
from ..data.features import get_build_report
from ..hub.dataset_upload import push_dataset_to_hub
from .errors import as_input_errors


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="clarity prepare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "root", help="folder of the NIH download (Data_Entry_2017*.csv, BBox_List_2017.csv, images)"
    )
    parser.add_argument("output", help="cache folder for the Parquet shards")
    parser.add_argument("--image-size", type=int, default=224, help="side of the cached images (224 or 512)")
    parser.add_argument("--num-proc", type=int, default=1, help="worker processes")
    parser.add_argument("--shard-size", type=int, default=1000, help="rows per Parquet shard")
    parser.add_argument(
        "--resample",
        default="bilinear",
        choices=["bilinear", "lanczos", "box", "bicubic"],
        help="resize filter; bilinear (default) is the model processor's, so cached pixels match inference",
    )
    parser.add_argument(
        "--image-format", default="png", choices=["png", "pgm"], help="pgm: raw, fastest reads"
    )
    parser.add_argument("--validation-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0, help="seed of the validation carve")
    parser.add_argument(
        "--train-val-list", default=None, help="official train_val_list.txt (default: in root)"
    )
    parser.add_argument("--test-list", default=None, help="official test_list.txt (default: in root)")
    parser.add_argument("--skip-missing", action="store_true", help="skip bad rows / images and report them")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="rebuild a cache of other parameters found in --output (default: refuse; same parameters resume)",
    )
    parser.add_argument("--push-to-hub", default=None, metavar="REPO_ID", help="upload the cache as Parquet")
    parser.add_argument("--public", action="store_true", help="make the Hub repository public")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    # The builders' ValueErrors all name a bad input (file and line, a parameter, a cache of other parameters).
    with as_input_errors(**{"skip_missing=True": "--skip-missing", "overwrite=True": "--overwrite"}):
        prepare(parse_args(argv))


def prepare(args: argparse.Namespace) -> None:
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
