"""Small helpers shared by the test files (no fixtures, no test collection)."""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# The project's shared data lives at ../shared from the repository root; CLARITY_SHARED overrides it.
SHARED_DIR = Path(os.environ.get("CLARITY_SHARED", REPO_ROOT.parent / "shared")).resolve()
NIH_METADATA_DIR = SHARED_DIR / "nih"
TBX11K_DIR = SHARED_DIR / "realdata" / "tbx11k"


def stop_process(process) -> None:
    """End a server subprocess the test started: terminate, then kill if it does not exit within 20 s."""
    import subprocess

    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def subprocess_env() -> dict:
    """Environment for a subprocess that must import the local clarity_hf and stay offline."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["HF_HUB_OFFLINE"] = "1"
    env["HF_DATASETS_OFFLINE"] = "1"
    return env


def clarity_dataset_of_files(paths, label_names=("A", "B")):
    """A clarity_hf `Dataset` with one row per image file (image id "<i>.png", every image labelled with the
    last label), for tests of the transforms, the cache and the loaders."""
    from datasets import Dataset

    from clarity_hf.data.features import attach_metadata, clarity_features, make_metadata

    num_labels = len(label_names)
    rows = {key: [] for key in clarity_features(num_labels)}
    for index, path in enumerate(paths):
        row = dict(
            image=str(path),
            labels=[0.0] * (num_labels - 1) + [1.0],
            image_id=f"{index}.png",
            patient_id=str(index),
            age=1,
            sex="M",
            view_position="PA",
            follow_up=0,
            original_size=[0, 0],
            pixel_spacing=[0.0, 0.0],
            boxes=[],
            box_split="",
        )
        for key, value in row.items():
            rows[key].append(value)
    dataset = Dataset.from_dict(rows, features=clarity_features(num_labels))
    return attach_metadata(dataset, make_metadata(list(label_names), "test"))
