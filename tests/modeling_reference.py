"""The model's numbers on a few tiny seeded configurations, saved once as a reference for refactors.

`python tests/modeling_reference.py` rewrites `tests/fixtures/modeling_reference.safetensors` from the current model;
`tests/test_modeling_reference.py` asserts that the model still reproduces it. Each case seeds the weights (so the
reference also pins `_init_weights`), runs one forward pass in eval mode and records the logits, heatmaps and maps,
every loss term, and (where asked) the hidden states and attentions.
"""

import dataclasses
from pathlib import Path

import torch

from clarity_hf import ClarityConfig, ClarityForMultiLabelLocalization, ClarityMultiLabelLocalizationOutput

REFERENCE_PATH = Path(__file__).parent / "fixtures" / "modeling_reference.safetensors"

# A 32x32 input, 8x8 patches (a 4x4 grid), 3 classes, 2 layers: a few kilobytes of numbers per case.
BASE = {
    "image_size": 32,
    "patch_size": 8,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 48,
    "num_attention_map_layers": 2,
    "foreground_hidden_size": 8,
    "anatomical_prior_size": 16,
    "id2label": {0: "a", 1: "b", 2: "c"},
}

# name -> (config overrides, forward inputs: labels kind, teacher, masks, output flags, interpolated size)
CASES = {
    # The full model, multi-label: SegmentCAM + per-image masks + pooling, every output, the eager kernel.
    "full_multilabel_eager": (
        {"problem_type": "multi_label_classification", "attn_implementation": "eager"},
        {"labels": "multi", "teacher": True, "masks": True, "outputs": True},
    ),
    # SDPA, atlas target, max head fusion, pooled logits, per-class positive weights, hard distillation.
    "atlas_sdpa_maxfusion": (
        {
            "problem_type": "multi_label_classification",
            "attention_map_head_fusion": "max",
            "logit_combination": "pooled",
            "pos_weight": [1.0, 2.0, 3.0],
            "distillation_type": "hard",
            "distillation_temperature": 2.0,
        },
        {"labels": "multi", "teacher": True, "masks": False, "outputs": True},
    ),
    # No SegmentCAM: pooling over log class maps, patch-affinity refinement; single-label inferred from the labels.
    "nosegcam_single_label_affinity": (
        {
            "use_segment_cam": False,
            "use_patch_affinity_refinement": True,
            "heatmap_source": "attention",
            "problem_type": None,
        },
        {"labels": "single", "teacher": False, "masks": False, "outputs": False},
    ),
    # SegmentCAM without the anatomical prior, token logits only, regression.
    "segcam_noprior_regression": (
        {"use_anatomical_prior": False, "logit_combination": "token", "problem_type": "regression"},
        {"labels": "regression", "teacher": False, "masks": False, "outputs": False},
    ),
    # The plainest model: no SegmentCAM, no pooling; teacher only (no labels); a 48x48 input interpolated.
    "plain_teacher_only_interpolated": (
        {"use_segment_cam": False, "use_attention_pooling": False, "attn_implementation": "eager"},
        {"labels": None, "teacher": True, "masks": False, "outputs": True, "size": 48},
    ),
    # One class: regression inferred, no orthogonal term.
    "one_class_regression_inferred": (
        {"id2label": {0: "a"}, "problem_type": None},
        {"labels": "regression", "teacher": False, "masks": False, "outputs": False},
    ),
}

# Every tensor field of the output (the tuples are recorded per element below).
OUTPUT_FIELDS = tuple(
    field.name
    for field in dataclasses.fields(ClarityMultiLabelLocalizationOutput)
    if field.name not in ("hidden_states", "attentions")
)


def build_case(name: str, seed: int = 0):
    """The seeded model of case `name` and its forward inputs."""
    overrides, spec = CASES[name]
    attn_implementation = overrides.get("attn_implementation", "sdpa")
    config = ClarityConfig(**{**BASE, **{k: v for k, v in overrides.items() if k != "attn_implementation"}})
    config._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    model = ClarityForMultiLabelLocalization(config).eval()
    generator = torch.Generator().manual_seed(seed + 1)
    size = spec.get("size", config.image_size)
    batch, num_labels = 2, config.num_labels
    inputs = {"pixel_values": torch.randn(batch, 3, size, size, generator=generator)}
    if spec["labels"] == "multi":
        inputs["labels"] = (torch.rand(batch, num_labels, generator=generator) > 0.5).float()
    elif spec["labels"] == "single":
        inputs["labels"] = torch.randint(0, num_labels, (batch,), generator=generator)
    elif spec["labels"] == "regression":
        inputs["labels"] = torch.randn(batch, num_labels, generator=generator)
    if spec["teacher"]:
        inputs["teacher_logits"] = torch.randn(batch, num_labels, generator=generator)
    if spec["masks"]:
        inputs["anatomy_masks"] = (torch.rand(batch, 1, size, size, generator=generator) > 0.4).float()
    if spec.get("size"):
        inputs["interpolate_pos_encoding"] = True
    if spec["outputs"]:
        inputs["output_hidden_states"] = True
        inputs["output_attentions"] = True
    return model, inputs


def run_case(name: str) -> dict[str, torch.Tensor]:
    """Every number case `name` produces, flat: `field`, `hidden_states.i`, `attentions.i`, `last_selfattention`."""
    model, inputs = build_case(name)
    with torch.no_grad():
        output = model(**inputs)
        last = model.get_last_selfattention(
            inputs["pixel_values"], interpolate_pos_encoding=bool(inputs.get("interpolate_pos_encoding"))
        )
    numbers = {field: getattr(output, field) for field in OUTPUT_FIELDS if getattr(output, field) is not None}
    for field in ("hidden_states", "attentions"):
        for index, tensor in enumerate(getattr(output, field) or ()):
            numbers[f"{field}.{index}"] = tensor
    numbers["last_selfattention"] = last
    numbers["problem_type_inferred"] = torch.tensor(
        ["regression", "single_label_classification", "multi_label_classification", None].index(
            model.config.problem_type
        )
    )
    return {key: value.detach().contiguous().clone() for key, value in numbers.items()}


def compute_reference() -> dict[str, torch.Tensor]:
    return {f"{name}/{key}": value for name in CASES for key, value in run_case(name).items()}


if __name__ == "__main__":
    from safetensors.torch import save_file

    save_file(compute_reference(), str(REFERENCE_PATH))
    print(f"wrote {REFERENCE_PATH} ({REFERENCE_PATH.stat().st_size} bytes)")
