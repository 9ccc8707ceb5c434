# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""`python -m clarity_hf <command> ...`: the `clarity` console script (`clarity --help` lists the commands)."""

import sys

from .commands.cli import main

if __name__ == "__main__":
    sys.exit(main())
