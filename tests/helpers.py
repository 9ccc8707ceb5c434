"""Small helpers shared by the test files (no fixtures, no test collection)."""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# The project's shared data lives at ../shared from the repository root; CLARITY_SHARED overrides it.
SHARED_DIR = Path(os.environ.get("CLARITY_SHARED", REPO_ROOT.parent / "shared")).resolve()
NIH_METADATA_DIR = SHARED_DIR / "nih"
TBX11K_DIR = SHARED_DIR / "realdata" / "tbx11k"


def subprocess_env() -> dict:
    """Environment for a subprocess that must import the local clarity_hf and stay offline."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["HF_HUB_OFFLINE"] = "1"
    env["HF_DATASETS_OFFLINE"] = "1"
    return env
