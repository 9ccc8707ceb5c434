# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Train the ConvNeXtV2 teacher (stage 1): `clarity train` with `--model convnextv2` forced.

clarity train-teacher --config tiny_teacher_cpu.yaml --output_dir runs/teacher
accelerate launch -m clarity_hf train-teacher --config teacher_512.yaml --dataset data/nih --output_dir runs/teacher
"""

import json
import sys

from ..training import parse_training_config, train
from .errors import CommandError, as_input_errors


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    with as_input_errors():  # the config's checks name the option and the value
        config = parse_training_config(argv)
    if config.model != "convnextv2":
        raise CommandError(
            f"train-teacher trains a convnextv2 teacher, the config says model={config.model!r}"
        )
    result = train(config)
    print(
        json.dumps(
            {"best_mean_auroc": result.best_mean_auroc, "best_model_dir": result.best_model_dir}, indent=2
        )
    )
    return 0
