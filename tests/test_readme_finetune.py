"""The README's "Fine-tune on your data" section, run as written on a CSV of 3 labels and a 14-label start folder."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_data_sources import write_csv_data
from training_helpers import subprocess_env

from clarity_hf import ClarityConfig, ClarityForMultiLabelLocalization
from clarity_hf.data.transforms import build_processor

ROOT = Path(__file__).resolve().parents[1]
LABELS = {"0": "Effusion", "1": "Mass", "2": "Nodule"}


def _section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Fine-tune on your data")
    return text[start : text.index("\n## ", start + 1)]


def _blocks(language: str) -> list[str]:
    section = _section()
    fence = f"```{language}\n"
    return [part.split("```", 1)[0] for part in section.split(fence)[1:]]


@pytest.fixture
def workdir(tmp_path):
    """`xrays/labels.csv` (3 labels, 8 patients) and `clarity-nih14/` (a tiny 14-label model with its processor)."""
    write_csv_data(tmp_path / "xrays", num_patients=10)
    config = ClarityConfig.from_preset(
        "clarity-tiny", image_size=32, patch_size=8, num_hidden_layers=2, num_attention_map_layers=1
    )
    ClarityForMultiLabelLocalization(config).save_pretrained(tmp_path / "clarity-nih14")
    build_processor(config).save_pretrained(tmp_path / "clarity-nih14")
    (tmp_path / "scripts").symlink_to(ROOT / "scripts")
    return tmp_path


def test_three_commands_from_a_csv_to_a_hub_folder(workdir):
    (block,) = _blocks("bash")
    commands = [line for line in block.splitlines() if line.strip()]
    assert len(commands) == 3
    env = subprocess_env()
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env["PATH"]  # `python` is this interpreter
    for command in commands:
        done = subprocess.run(
            ["bash", "-c", command], cwd=workdir, env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, command + "\n" + done.stderr[-3000:]
    saved = json.loads((workdir / "runs/mine/best_model/config.json").read_text())
    assert saved["id2label"] == LABELS
    report = json.loads((workdir / "runs/mine/eval/report.json").read_text())
    evaluated = report["metadata"]["evaluation"]
    assert evaluated["split"] == "validation" and evaluated["label_names"] == list(LABELS.values())
    assert evaluated["dataset_name"] == "CSV labels.csv" and report["published"] is None
    hub = workdir / "hub_folder"
    assert json.loads((hub / "config.json").read_text())["id2label"] == LABELS
    card = (hub / "README.md").read_text()
    assert "CSV labels.csv, split `validation`" in card and "(published)" not in card


def test_the_same_with_transformers_trainer(workdir, monkeypatch):
    (block,) = _blocks("python")
    monkeypatch.chdir(workdir)
    exec(compile(block, "README.md (Fine-tune on your data)", "exec"), {"__name__": "readme"})
    saved = json.loads((workdir / "runs/mine-trainer/model/config.json").read_text())
    assert saved["id2label"] == LABELS
    model = ClarityForMultiLabelLocalization.from_pretrained(workdir / "runs/mine-trainer/model")
    assert model.config.num_labels == 3
