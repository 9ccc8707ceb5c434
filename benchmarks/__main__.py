# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""`python -m benchmarks` is `python -m benchmarks.run`."""

import sys

from .run import main

sys.exit(main())
