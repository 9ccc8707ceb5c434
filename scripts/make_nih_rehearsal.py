#!/usr/bin/env python
# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""`clarity make-nih-rehearsal` from a clone (the logic is `clarity_hf.commands.make_nih_rehearsal`); see `clarity make-nih-rehearsal --help`."""

import sys

from clarity_hf.commands.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("make-nih-rehearsal", sys.argv[1:]))
