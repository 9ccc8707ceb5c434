# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""`clarity evaluate` sharded over processes (`accelerate launch`, `torchrun`): two CPU processes over gloo run the
models on their shares of the split, the main process alone writes the report, and its numbers (AUROC, localization,
thresholds, the teacher's stage choice) are those of one process."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import run_two_processes

from clarity_hf import ClarityConfig, ClarityForMultiLabelLocalization
from clarity_hf.baselines import build_teacher
from clarity_hf.commands import evaluate
from clarity_hf.data.synthetic import build_synthetic_cxr
from clarity_hf.evaluation.run import build_processor

pytestmark = pytest.mark.slow  # each launch starts two Python processes with torch


@pytest.fixture(scope="module")
def model_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    ClarityForMultiLabelLocalization(ClarityConfig.from_preset("clarity-tiny")).save_pretrained(root / "tiny")
    build_teacher("convnextv2-test", image_size=64).save_pretrained(root / "teacher")
    for name in ("tiny", "teacher"):
        build_processor(64).save_pretrained(root / name)
    # 34 test images (11 boxed on the tune half, 9 on the eval half); 9 batches of 4 over 2 processes: shares of 5
    # and 4 batches, the last one short
    build_synthetic_cxr(2, 2, 34, image_size=64, seed=0, num_proc=1).save_to_disk(root / "data")
    return root


def _arguments(model_folders, out) -> list[str]:
    return [
        "--model",
        f"tiny={model_folders / 'tiny'}",
        "--model",
        str(model_folders / "teacher"),
        "--dataset",
        str(model_folders / "data"),
        "--batch-size",
        "4",
        "--n-bootstrap",
        "10",
        "--output-dir",
        str(out),
    ]


def _numbers(value, path=""):
    """Every number of a report entry, by its path in the JSON."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _numbers(item, f"{path}/{key}").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in _numbers(item, f"{path}/{i}").items()}
    return {path: value}


def test_two_processes_write_the_report_of_one(model_folders, tmp_path, capsys):
    assert evaluate.main(_arguments(model_folders, tmp_path / "one")) == 0
    capsys.readouterr()
    printed = json.loads(
        run_two_processes("accelerate", ["evaluate", *_arguments(model_folders, tmp_path / "two")])
    )
    # one summary (the main process's: json.loads reads one document)
    assert printed["report_json"] == str(tmp_path / "two" / "report.json") and printed["processes"] == 2
    one = json.loads((tmp_path / "one" / "report.json").read_text())
    two = json.loads((tmp_path / "two" / "report.json").read_text())
    assert list(two["models"]) == ["tiny", "teacher Grad-CAM", "teacher CAM"]
    assert two["metadata"] == one["metadata"]
    for name, entry in one["models"].items():
        expected, found = _numbers(entry), _numbers(two["models"][name])
        assert set(found) == set(expected)
        numeric = [k for k, v in expected.items() if isinstance(v, float)]
        assert [found[k] for k in expected if k not in numeric] == [
            v for k, v in expected.items() if k not in numeric
        ]
        np.testing.assert_allclose(
            [found[k] for k in numeric], [expected[k] for k in numeric], rtol=1e-9, atol=1e-12, err_msg=name
        )
    assert sorted(p.name for p in (tmp_path / "two").rglob("*")) == sorted(
        p.name for p in (tmp_path / "one").rglob("*")
    )
