#!/usr/bin/env python
# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""`clarity cache-teacher-logits` from a clone (the logic is `clarity_hf.commands.cache_teacher_logits`); see `clarity cache-teacher-logits --help`."""

import sys

from clarity_hf.commands.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("cache-teacher-logits", sys.argv[1:]))
