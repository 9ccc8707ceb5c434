# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""The fresh-process reload check: a saved model folder loaded with `trust_remote_code=True` in a new Python process
where `clarity_hf` cannot be imported (as for a Hub user without the package), run on the inputs of a reference and
compared with the reference's outputs.

- [`save_reference`]: the outputs of a model (in this process) on `pixel_values`, saved for the check;
- [`RELOAD_SCRIPT`] and [`reload_command`]: the check as a command line (`python -c RELOAD_SCRIPT folder reference
  [--image IMAGE] [--tolerance T]`); it prints one JSON line and exits 3 when the folder does not reproduce the
  reference. With `--image`, the folder's own image processor prepares the image and its `pixel_values` must equal
  the reference's bit for bit;
- [`check_reload`]: runs that command and returns its JSON (`{"ok": False, "error": ...}` when it crashed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path

import torch

__all__ = [
    "RELOAD_SCRIPT",
    "WITHOUT_CLARITY_HF",
    "check_reload",
    "fresh_process_env",
    "reload_command",
    "save_reference",
]

# The first lines of a script run in a fresh process to prove that a saved folder works on its own, as for a Hub user
# without clarity_hf, also where clarity_hf is installed: importing clarity_hf or any submodule then fails.
WITHOUT_CLARITY_HF = (
    'import sys\nsys.modules["clarity_hf"] = None  # everything must come from the model folder\n'
)
RELOAD_SCRIPT = WITHOUT_CLARITY_HF + textwrap.dedent(
    """
    import argparse
    import json
    import torch
    from transformers import AutoImageProcessor, AutoModel

    parser = argparse.ArgumentParser()
    parser.add_argument("folder")
    parser.add_argument("reference")
    parser.add_argument("--image")
    parser.add_argument("--tolerance", type=float, default=0.0)
    args = parser.parse_args()
    model = AutoModel.from_pretrained(args.folder, trust_remote_code=True).eval()
    reference = torch.load(args.reference)
    result = {"model_class": type(model).__module__ + "." + type(model).__name__}
    pixel_values = reference["pixel_values"]
    if args.image:
        processor = AutoImageProcessor.from_pretrained(args.folder, trust_remote_code=True)
        result["processor_class"] = type(processor).__module__ + "." + type(processor).__name__
        pixel_values = processor(args.image, return_tensors="pt")["pixel_values"]
        result["pixel_values_identical"] = bool(torch.equal(pixel_values, reference["pixel_values"]))
    with torch.no_grad():
        output = model(pixel_values=pixel_values)
    result.update(
        clarity_hf_imported=any(
            module is not None and (name == "clarity_hf" or name.startswith("clarity_hf."))
            for name, module in sys.modules.items()
        ),
        logits_identical=bool(torch.equal(output.logits, reference["logits"])),
        heatmaps_identical=bool(torch.equal(output.heatmaps, reference["heatmaps"])),
        max_abs_logit_diff=float((output.logits - reference["logits"]).abs().max()),
        max_abs_heatmap_diff=float((output.heatmaps - reference["heatmaps"]).abs().max()),
        heatmaps_shape=list(output.heatmaps.shape),
    )
    result["ok"] = (
        not result["clarity_hf_imported"]
        and result.get("pixel_values_identical", True)
        and result["max_abs_logit_diff"] <= args.tolerance
        and result["max_abs_heatmap_diff"] <= args.tolerance
    )
    print(json.dumps(result))
    sys.exit(0 if result["ok"] else 3)
    """
)


def save_reference(model, pixel_values: torch.Tensor, path: str | Path) -> Path:
    """Save `pixel_values` with `model`'s logits and heatmaps on them (in eval mode) as the reference of the check."""
    with torch.no_grad():
        output = model.eval()(pixel_values=pixel_values)
    path = Path(path)
    torch.save({"pixel_values": pixel_values, "logits": output.logits, "heatmaps": output.heatmaps}, path)
    return path


def reload_command(
    folder: str | Path, reference: str | Path, image: str | Path | None = None, tolerance: float = 0.0
) -> list[str]:
    """The check as a command line of this Python (run it with [`fresh_process_env`])."""
    command = [
        sys.executable,
        "-c",
        RELOAD_SCRIPT,
        str(Path(folder).resolve()),
        str(Path(reference).resolve()),
    ]
    if image is not None:
        command += ["--image", str(Path(image).resolve())]
    return command + ["--tolerance", repr(float(tolerance))]


def fresh_process_env(modules_cache: str | Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (default: this process's environment) without PYTHONPATH, offline, with its own remote-code module
    cache, so that the folder's code is imported from the folder and not from a source tree."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if k != "PYTHONPATH"}
    env.update({"HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(modules_cache)})
    return env


def check_reload(
    folder: str | Path,
    reference: str | Path,
    image: str | Path | None = None,
    tolerance: float = 0.0,
    timeout: float = 300,
) -> dict:
    """Run the check on `folder` against `reference` (written by [`save_reference`]) in a fresh process; returns
    its JSON, whose "ok" says that clarity_hf stayed unimported and the outputs are within `tolerance` (0: bit
    identical), or `{"ok": False, "error": <end of stderr>}` when the process failed before printing it."""
    work = Path(reference).resolve().parent
    completed = subprocess.run(
        reload_command(folder, reference, image, tolerance),
        capture_output=True,
        text=True,
        env=fresh_process_env(work / ".hf_modules"),
        cwd=str(work),
        timeout=timeout,
    )
    lines = completed.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1]) if lines else {"ok": False, "error": completed.stderr[-2000:]}
    except json.JSONDecodeError:
        return {"ok": False, "error": completed.stderr[-2000:] or completed.stdout[-2000:]}
