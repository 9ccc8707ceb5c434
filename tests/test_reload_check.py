# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""The fresh-process reload check (`clarity_hf.hub.reload_check`) shared by the demo and the rehearsal: it passes on
an intact export and fails on a folder whose weights changed after the reference or that lacks its code."""

import shutil

import pytest
from hub_testing import make_tiny_export, real_fixtures
from safetensors.torch import load_file, save_file

from clarity_hf.hub.reload_check import check_reload, save_reference
from clarity_hf.image_processing_clarity import ClarityImageProcessor

PNG = real_fixtures()["png"]


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """A tiny export and the reference of its model on the real PNG, prepared by the exported processor."""
    work = tmp_path_factory.mktemp("reload")
    folder = work / "model"
    _, model = make_tiny_export(folder, results=None)
    pixel_values = ClarityImageProcessor.from_pretrained(folder)(str(PNG), return_tensors="pt")[
        "pixel_values"
    ]
    return folder, save_reference(model, pixel_values, work / "reference.pt")


def test_intact_folder_reproduces_the_reference_bit_for_bit_without_clarity_hf(export):
    folder, reference = export
    result = check_reload(folder, reference, image=PNG)
    assert result["ok"] is True, result
    assert result["clarity_hf_imported"] is False
    assert result["model_class"].startswith("transformers_modules.")
    assert result["processor_class"].startswith("transformers_modules.")
    assert result["pixel_values_identical"] and result["logits_identical"] and result["heatmaps_identical"]
    assert result["max_abs_logit_diff"] == 0.0 and result["heatmaps_shape"][0] == 1


def test_weights_changed_after_the_reference_fail(export, tmp_path):
    folder, reference = export
    changed = tmp_path / "changed"
    shutil.copytree(folder, changed)
    weights = load_file(changed / "model.safetensors")
    for name in ("pooled_classifier.bias", "token_classifier.bias"):
        weights[name] = weights[name] + 0.01
    save_file(weights, changed / "model.safetensors", metadata={"format": "pt"})
    result = check_reload(changed, reference, tolerance=1e-4)
    assert result["ok"] is False and result["clarity_hf_imported"] is False
    assert result["logits_identical"] is False
    assert result["max_abs_logit_diff"] > 1e-3


def test_folder_without_its_code_fails(export, tmp_path):
    folder, reference = export
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / "modeling_clarity.py").unlink()
    result = check_reload(broken, reference)
    assert result["ok"] is False
    assert "modeling_clarity" in result["error"], result["error"]


def test_folder_code_that_needs_clarity_hf_fails_although_it_is_installed(export, tmp_path):
    folder, reference = export
    leaning = tmp_path / "leaning"
    shutil.copytree(folder, leaning)
    code = leaning / "modeling_clarity.py"
    code.write_text(code.read_text() + "\nimport clarity_hf.modeling_clarity  # noqa\n")
    result = check_reload(leaning, reference)
    assert result["ok"] is False
    assert "clarity_hf" in result["error"] and "ModuleNotFoundError" in result["error"], result["error"]
