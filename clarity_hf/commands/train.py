# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Train a CLARiTy student (or, with `--model convnextv2`, a teacher).

    clarity train --config tiny_cpu.yaml --output_dir runs/tiny
    torchrun --nproc_per_node 2 -m clarity_hf train --config tiny_cpu.yaml --output_dir runs/tiny   # 2 CPU processes
    accelerate launch -m clarity_hf train --config clarity_s16_224.yaml --dataset data/nih --output_dir runs/s16 \\
        --teacher_name_or_path runs/teacher/best_model
    clarity train --config tiny_cpu.yaml --output_dir runs/tiny --resume_from_checkpoint latest
"""

import json

from ..training import parse_training_config, train
from .errors import as_input_errors


def main(argv=None) -> int:
    with as_input_errors():  # the config's checks name the option and the value
        config = parse_training_config(argv)
    result = train(config)
    summary = {
        key: getattr(result, key) for key in ("best_mean_auroc", "best_model_dir", "global_step", "skipped")
    }
    print(json.dumps(summary, indent=2))
    return 0
