# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""The `clarity <command>` console script (`cli.py`: the dispatch, `clarity --help`), one module per command
(`demo.py`, `prepare.py`, `train.py`, `train_teacher.py`, `cache_teacher_logits.py`, `evaluate.py`, `predict.py`,
`export_onnx.py`, `push.py`, `convert_dino.py`, `make_nih_rehearsal.py`, `rehearse.py`), each with `main(argv)`, and
the error boundary they all run in (`errors.py`). `clarity-demo` / `clarity-predict` are aliases; `python -m
clarity_hf <command>` is the same entry point."""
