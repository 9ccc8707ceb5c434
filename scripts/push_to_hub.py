#!/usr/bin/env python
# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""`clarity push` from a clone (the logic is `clarity_hf.commands.push`); see `clarity push --help`."""

import sys

from clarity_hf.commands.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("push", sys.argv[1:]))
