#!/usr/bin/env python
# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""`clarity convert-dino` from a clone (the logic is `clarity_hf.commands.convert_dino`); see `clarity convert-dino --help`."""

import sys

from clarity_hf.commands.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("convert-dino", sys.argv[1:]))
