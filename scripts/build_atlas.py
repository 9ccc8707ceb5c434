# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Build the population thorax atlas shipped as `clarity_hf/data/lung_atlas_64.npy` from real lung masks.

    python scripts/build_atlas.py --masks ../shared/anatomy/semantic_masks_v7labs_lungs.zip \
        --output clarity_hf/data/lung_atlas_64.npy [--preview /tmp/atlas.png]
"""

import argparse
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from clarity_hf.data.anatomy import ATLAS_REGIONS, build_lung_atlas


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--masks", required=True, type=Path, help="zip archive or folder of lung mask images")
    parser.add_argument("--output", required=True, type=Path, help="output .npy file")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--region", choices=ATLAS_REGIONS, default="thorax")
    parser.add_argument("--blur-sigma", type=float, default=0.0)
    parser.add_argument("--dtype", choices=("float16", "float32"), default="float16")
    parser.add_argument(
        "--preview", type=Path, default=None, help="optionally write an 8-bit PNG of the atlas"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    atlas = build_lung_atlas(args.masks, size=args.size, region=args.region, blur_sigma=args.blur_sigma)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    np.save(args.output, atlas.astype(args.dtype))
    print(
        f"wrote {args.output}: shape {atlas.shape}, min {atlas.min():.3f}, max {atlas.max():.3f}, "
        f"mean {atlas.mean():.3f}, {args.output.stat().st_size} bytes"
    )
    if args.preview is not None:
        Image.fromarray(np.round(atlas * 255).astype(np.uint8)).resize(
            (256, 256), Image.Resampling.NEAREST
        ).save(args.preview)
        print(f"wrote preview {args.preview}")


if __name__ == "__main__":
    main()
