# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""`clarity predict` (alias `clarity-predict`): one image -> JSON + overlay, or files and folders -> a table. The
logic is `clarity_hf.inference.predict`; this checks `--device` first, so that a device this machine lacks is one
line, not a traceback from deep inside torch."""

from __future__ import annotations

from collections.abc import Sequence

from .errors import check_device


def _device_option(argv: Sequence[str]) -> str | None:
    for index, item in enumerate(argv):
        if item == "--device" and index + 1 < len(argv):
            return argv[index + 1]
        if item.startswith("--device="):
            return item.split("=", 1)[1]
    return None


def main(argv: Sequence[str] | None = None) -> int:
    import sys

    from ..inference.predict import main as predict

    argv = list(sys.argv[1:] if argv is None else argv)
    check_device(_device_option(argv))
    return predict(argv)
