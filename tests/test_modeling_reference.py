"""The model reproduces the numbers saved before its refactor: logits, heatmaps, maps, every loss term, the hidden
states and attentions, on seeded tiny configurations covering each head and problem type (`modeling_reference.py`
builds them and rewrites the reference)."""

import pytest
import torch
from modeling_reference import CASES, REFERENCE_PATH, run_case
from safetensors.torch import load_file

REFERENCE = load_file(str(REFERENCE_PATH))


@pytest.mark.parametrize("case", sorted(CASES))
def test_model_reproduces_saved_reference(case):
    expected = {key.split("/", 1)[1]: value for key, value in REFERENCE.items() if key.startswith(case + "/")}
    actual = run_case(case)
    # The same outputs exist (no term appears or disappears), then each equals the reference.
    assert sorted(actual) == sorted(expected)
    for key, value in expected.items():
        torch.testing.assert_close(
            actual[key], value, atol=1e-6, rtol=1e-6, msg=lambda m, key=key: f"{key}: {m}"
        )


def test_reference_covers_every_loss_term_and_head():
    # A guard on the reference itself: each loss term and optional head is present in at least one case.
    names = {key.split("/", 1)[1] for key in REFERENCE}
    for field in (
        "classification_loss",
        "distillation_loss",
        "orthogonal_loss",
        "foreground_loss",
        "segment_maps",
        "pooled_logits",
        "attentions.0",
        "hidden_states.0",
    ):
        assert field in names, field
    inferred = {REFERENCE[f"{case}/problem_type_inferred"].item() for case in CASES}
    assert inferred == {0, 1, 2}  # regression, single-label, multi-label
