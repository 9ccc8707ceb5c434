"""A user with only the wheel runs the README's path: the built wheel (not the source tree) installed in a fresh
virtual environment, the working directory outside the repository, no PYTHONPATH; `clarity --help` lists every
command and `clarity prepare` -> `clarity train` -> `clarity evaluate` -> `clarity push --dry-run` runs on a small
NIH-shaped folder written here, with tiny settings."""

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO_ROOT
from PIL import Image

from clarity_hf.commands.cli import COMMANDS
from clarity_hf.configuration_clarity import NIH_BOXED_PATHOLOGIES

pytestmark = pytest.mark.slow

LABELS = list(NIH_BOXED_PATHOLOGIES)  # the 8 classes NIH has boxes for
BOX_LABELS = {"Infiltration": "Infiltrate"}  # the box file's spelling


def write_nih_shaped_folder(root: Path, num_patients: int = 16, seed: int = 0) -> Path:
    """Two images per patient, every label somewhere in every split, boxes on half of the test patients."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    meta = [
        "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
        '"OriginalImage[Width,Height]","OriginalImagePixelSpacing[x,y]"'
    ]
    boxes, train_val, test = ["Image Index,Finding Label,Bbox [x,y,w,h],,,"], [], []
    for patient in range(1, num_patients + 1):
        for follow_up in range(2):
            name = f"{patient:08d}_{follow_up:03d}.png"
            label = LABELS[(2 * patient + follow_up) % len(LABELS)]
            meta.append(f"{name},{label},{follow_up},{patient},50,M,PA,1024,1024,0.143,0.143")
            pixels = rng.integers(0, 256, (48, 48), dtype=np.uint8)
            Image.fromarray(pixels, mode="L").save(root / "images" / name)
            is_test = patient > num_patients // 2
            (test if is_test else train_val).append(name)
            if is_test:
                boxes.append(f"{name},{BOX_LABELS.get(label, label)},100,200,300,250,,")
    (root / "Data_Entry_2017_v2020.csv").write_text("\n".join(meta) + "\n")
    (root / "BBox_List_2017.csv").write_text("\n".join(boxes) + "\n")
    (root / "train_val_list.txt").write_text("\n".join(train_val) + "\n")
    (root / "test_list.txt").write_text("\n".join(test) + "\n")
    return root


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory):
    """A venv that sees the system's torch/transformers but imports clarity_hf only from the built wheel."""
    work = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # setuptools builds in the source tree (build/, *.egg-info): build a copy, so the repository stays clean
    source = work / "source"
    shutil.copytree(
        REPO_ROOT,
        source,
        ignore=shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", ".*cache", ".venv*"),
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(work / "dist"),
         str(source)],
        check=True, capture_output=True, env=env, cwd=work, timeout=600,
    )  # fmt: skip
    (wheel,) = (work / "dist").glob("clarity_hf-*.whl")
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(work / "venv")
    python = work / "venv" / "bin" / "python"
    subprocess.run(
        [python, "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
        check=True, capture_output=True, env=env, cwd=work, timeout=600,
    )  # fmt: skip
    return work, python


def _clarity(wheel_venv, *args, check=True):
    work, python = wheel_venv
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PATH=f"{python.parent}{os.pathsep}{env['PATH']}")
    done = subprocess.run(
        ["clarity", *map(str, args)], capture_output=True, text=True, env=env, cwd=work, timeout=900
    )
    if check:
        assert done.returncode == 0, f"clarity {args[0]}: {done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done


def test_the_wheel_alone_runs_prepare_train_evaluate_push(wheel_venv):
    work, python = wheel_venv
    where = subprocess.run(
        [python, "-c", "import clarity_hf; print(clarity_hf.__file__)"],
        capture_output=True,
        text=True,
        cwd=work,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    ).stdout.strip()
    assert where.startswith(str(work / "venv")) and not where.startswith(str(REPO_ROOT)), where

    listed = _clarity(wheel_venv, "--help").stdout
    assert all(f"\n  {name} " in listed for name in COMMANDS)

    nih = write_nih_shaped_folder(work / "nih")
    _clarity(
        wheel_venv, "prepare", nih, work / "cache", "--image-size", "48", "--validation-fraction", "0.25"
    )
    assert {p.name for p in (work / "cache").iterdir()} >= {"train", "validation", "test"}

    trained = _clarity(
        wheel_venv, "train", "--config", "tiny_cpu.yaml", "--dataset", work / "cache", "--output_dir",
        work / "run", "--image_size", "48", "--max_steps", "2", "--per_device_train_batch_size", "4",
        "--checkpointing_steps", "2", "--report_to", "none", "--dataloader_num_workers", "0",
        "--disable_tqdm", "true",
    )  # fmt: skip
    printed = "\n" + trained.stdout
    summary = json.loads(printed[printed.rindex("\n{\n") :])  # the summary is the last top-level JSON block
    assert summary["global_step"] == 2 and Path(summary["best_model_dir"]).is_dir()

    _clarity(
        wheel_venv, "evaluate", "--model", f"clarity={summary['best_model_dir']}", "--dataset", work / "cache",
        "--split", "test", "--n-bootstrap", "10", "--output-dir", work / "report",
    )  # fmt: skip
    report = json.loads((work / "report" / "report.json").read_text())
    assert "clarity" in json.dumps(report) and (work / "report" / "report.md").is_file()

    pushed = _clarity(
        wheel_venv, "push", "--model", summary["best_model_dir"], "--results", work / "report" / "report.json",
        "--repo-id", "someone/clarity-wheel-test", "--dry-run", "--out", work / "export",
    )  # fmt: skip
    assert "would upload" in pushed.stdout
    assert {"config.json", "model.safetensors", "README.md"} <= {p.name for p in (work / "export").iterdir()}

    # The error boundary, from the installed entry point: one line, exit 2.
    refused = _clarity(wheel_venv, "predict", nih / "images" / "00000001_000.png", "--model", work / "export",
                       "--device", "foo", check=False)  # fmt: skip
    assert (
        refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1 and "foo" in refused.stderr
    )
