#!/usr/bin/env python
# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Rehearse the README's real NIH path at the paper's shapes on an NIH-shaped folder (real metadata, rendered
pixels), on the CPU: make the folder -> prepare_chestxray14.py at 512 -> train_teacher.py teacher_512.yaml ->
torchrun x2 train.py clarity_s16_512.yaml --init_from_dino -> evaluate.py -> push_to_hub.py --dry-run ->
fresh-process reload -> clarity-predict on a DICOM. Each stage prints its wall time and figure; a failure names the
stage. The stage table goes to OUTPUT_DIR/stages.json.

    python scripts/rehearse_nih.py --output-dir /tmp/rehearsal                         # the default (about 35 min on 2 busy cores)
    python scripts/rehearse_nih.py --output-dir /tmp/rehearsal --num-images 48 --steps 2   # a smoke run

The logic is `clarity_hf.rehearsal`.
"""

import argparse
import sys
from dataclasses import fields

from clarity_hf.rehearsal import RehearsalConfig, StageError, format_stage_table, rehearse


def main(argv=None) -> int:
    defaults = RehearsalConfig(output_dir="")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for item in fields(RehearsalConfig):
        name = "--" + item.name.replace("_", "-")
        if item.name == "output_dir":
            parser.add_argument(name, required=True, help="where the folder, cache, runs, report and export go")
        else:
            value = getattr(defaults, item.name)
            parser.add_argument(name, type=type(value), default=value, help=f"default: {value}")
    args = parser.parse_args(argv)
    config = RehearsalConfig(**{item.name: getattr(args, item.name) for item in fields(RehearsalConfig)})
    try:
        stages = rehearse(config)
    except StageError as error:
        print(f"[rehearsal] FAILED: {error}", file=sys.stderr)
        return 1
    print(format_stage_table(stages))
    print(f"[rehearsal] total {sum(s.seconds for s in stages):.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
