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


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_two_processes(launcher: str, arguments) -> str:
    """`python -m clarity_hf ARGUMENTS` as two CPU processes; returns their stdout. "accelerate": accelerate launch
    (its --cpu starts one process without an mpirun hostfile, so --multi_gpu on a host without GPUs, which gives
    gloo CPU processes); "torchrun": torch.distributed.run."""
    import subprocess
    import sys

    port = str(free_port())
    if launcher == "accelerate":
        head = [
            "-m",
            "accelerate.commands.launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
        ]
        head += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", port, "-m"]
    else:
        head = ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port, "-m"]
    env = subprocess_env()
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    command = [sys.executable, *head, "clarity_hf", *map(str, arguments)]
    result = subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


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
