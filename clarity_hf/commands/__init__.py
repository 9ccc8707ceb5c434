# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""The command-line entry points: `clarity-demo` / `python -m clarity_hf demo` (the demo job, `demo.py`) and
`clarity-predict` / `python -m clarity_hf predict` (`cli.py`)."""
