# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""CLARiTy's benchmarks (not part of the wheel): speed and memory against the plain ViT and Grad-CAM
(`measure`, `report`, `run`), the training step (`training_step`) and data loading (`data_loading`). Run them from
the repository root: `python -m benchmarks.run --help`."""
