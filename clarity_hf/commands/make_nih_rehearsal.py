# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Write an NIH ChestX-ray14-shaped folder: the real metadata rows and boxes of N images (whole patients), with
rendered 1024 x 1024 pixels, in the release's layout (images_0NN/images/*.png, the two CSVs, split lists).

    clarity make-nih-rehearsal nih_rehearsal --num-images 600 --metadata-dir ../shared/nih

Prints a JSON summary (counts, ms per image) as its last line. The logic is `clarity_hf.data.nih_rehearsal`.
"""

import argparse
import json

from ..data.nih_rehearsal import write_nih_rehearsal


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="clarity make-nih-rehearsal",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("output", help="folder to write")
    parser.add_argument("--num-images", type=int, default=600)
    parser.add_argument(
        "--metadata-dir",
        required=True,
        help="folder with Data_Entry_2017_v2020.csv(.gz) and BBox_List_2017.csv(.gz)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--num-proc", type=int, default=None, help="render processes (default: the cores, <= 8)"
    )
    args = parser.parse_args(argv)
    summary = write_nih_rehearsal(args.output, args.num_images, args.metadata_dir, args.seed, args.num_proc)
    print(json.dumps(summary))
    return 0
