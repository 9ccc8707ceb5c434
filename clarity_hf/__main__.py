# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""`python -m clarity_hf demo|predict ...` (the `clarity-demo` / `clarity-predict` console scripts)."""

import sys

from .commands.cli import main

if __name__ == "__main__":
    sys.exit(main())
