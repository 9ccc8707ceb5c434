#!/usr/bin/env python
# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""`clarity train-teacher` from a clone (the logic is `clarity_hf.commands.train_teacher`); see `clarity train-teacher --help`."""

import sys

from clarity_hf.commands.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("train-teacher", sys.argv[1:]))
