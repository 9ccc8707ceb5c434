# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""DINO import (HF ViTModel 4.x / 5.x layouts, official DINO layout) and the population anatomical atlas."""

import argparse
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from transformers import ViTConfig, ViTModel

from clarity_hf import ClarityConfig, ClarityForMultiLabelLocalization
from clarity_hf.convert import (
    LAYOUT_DINO,
    LAYOUT_HF_VIT_4,
    LAYOUT_HF_VIT_5,
    convert_dino_checkpoint,
    convert_dino_state_dict,
    detect_layout,
    load_dino_state_dict,
)
from clarity_hf.data.anatomy import (
    ATLAS_FILENAME,
    binarize_mask,
    build_lung_atlas,
    fill_between_lungs,
    load_default_atlas,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CLARITY_SHARED", Path(__file__).resolve().parents[2] / "shared"))
LUNG_MASKS = SHARED / "anatomy" / "semantic_masks_v7labs_lungs.zip"

DINO_VITS16 = {
    "hidden_size": 384,
    "num_hidden_layers": 12,
    "num_attention_heads": 6,
    "intermediate_size": 1536,
    "patch_size": 16,
    "image_size": 224,
    "layer_norm_eps": 1e-6,
    "qkv_bias": True,
}

# transformers >= 5.9 in-memory names -> 4.x names (the inverse of `ViTModel` in transformers' conversion_mapping).
_TO_V4 = [
    (r"^layers\.(\d+)\.attention\.q_proj\.", r"encoder.layer.\1.attention.attention.query."),
    (r"^layers\.(\d+)\.attention\.k_proj\.", r"encoder.layer.\1.attention.attention.key."),
    (r"^layers\.(\d+)\.attention\.v_proj\.", r"encoder.layer.\1.attention.attention.value."),
    (r"^layers\.(\d+)\.attention\.o_proj\.", r"encoder.layer.\1.attention.output.dense."),
    (r"^layers\.(\d+)\.mlp\.fc1\.", r"encoder.layer.\1.intermediate.dense."),
    (r"^layers\.(\d+)\.mlp\.fc2\.", r"encoder.layer.\1.output.dense."),
    (r"^layers\.(\d+)\.", r"encoder.layer.\1."),
]
_TO_V5 = [
    (r"^encoder\.layer\.(\d+)\.attention\.attention\.query\.", r"layers.\1.attention.q_proj."),
    (r"^encoder\.layer\.(\d+)\.attention\.attention\.key\.", r"layers.\1.attention.k_proj."),
    (r"^encoder\.layer\.(\d+)\.attention\.attention\.value\.", r"layers.\1.attention.v_proj."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"layers.\1.attention.o_proj."),
    (r"^encoder\.layer\.(\d+)\.intermediate\.dense\.", r"layers.\1.mlp.fc1."),
    (r"^encoder\.layer\.(\d+)\.output\.dense\.", r"layers.\1.mlp.fc2."),
    (r"^encoder\.layer\.(\d+)\.", r"layers.\1."),
]


def _rename(state_dict, rules):
    renamed = {}
    for key, value in state_dict.items():
        for pattern, replacement in rules:
            new_key, count = re.subn(pattern, replacement, key)
            if count:
                key = new_key
                break
        renamed[key] = value
    return renamed


def _official_dino(sd5):
    """The official DINO / timm names, built by hand from the 5.x names."""
    out = {
        "cls_token": sd5["embeddings.cls_token"],
        "pos_embed": sd5["embeddings.position_embeddings"],
        "patch_embed.proj.weight": sd5["embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": sd5["embeddings.patch_embeddings.projection.bias"],
        "norm.weight": sd5["layernorm.weight"],
        "norm.bias": sd5["layernorm.bias"],
    }
    for i in range(DINO_VITS16["num_hidden_layers"]):
        src, dst = f"layers.{i}.", f"blocks.{i}."
        for kind in ("weight", "bias"):
            out[f"{dst}norm1.{kind}"] = sd5[f"{src}layernorm_before.{kind}"]
            out[f"{dst}norm2.{kind}"] = sd5[f"{src}layernorm_after.{kind}"]
            out[f"{dst}attn.qkv.{kind}"] = torch.cat(
                [sd5[f"{src}attention.{n}_proj.{kind}"] for n in ("q", "k", "v")], dim=0
            )
            out[f"{dst}attn.proj.{kind}"] = sd5[f"{src}attention.o_proj.{kind}"]
            out[f"{dst}mlp.fc1.{kind}"] = sd5[f"{src}mlp.fc1.{kind}"]
            out[f"{dst}mlp.fc2.{kind}"] = sd5[f"{src}mlp.fc2.{kind}"]
    return out


def _single_token_config(**kwargs):
    return ClarityConfig(num_labels=1, id2label={0: "Finding"}, class_token_init_std=0.0, **kwargs)


@pytest.fixture(scope="module")
def dino():
    """A random ViTModel with the dino-vits16 config, its state dict in both HF layouts, and a reference output."""
    torch.manual_seed(0)
    vit = ViTModel(ViTConfig(**DINO_VITS16), add_pooling_layer=False).eval()
    # Random LayerNorm affine and biases too, so that a swapped or dropped tensor shows in the outputs.
    with torch.no_grad():
        for name, parameter in vit.named_parameters():
            if "layernorm" in name or name.endswith("bias"):
                parameter.add_(0.1 * torch.randn_like(parameter))
    state_dict = {k: v.detach().clone() for k, v in vit.state_dict().items()}
    if "layers.0.attention.q_proj.weight" in state_dict:
        sd5, sd4 = state_dict, _rename(state_dict, _TO_V4)
    else:
        sd4, sd5 = state_dict, _rename(state_dict, _TO_V5)
    pixel_values = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = vit(pixel_values).last_hidden_state  # (2, 197, 384)
    return {"vit": vit, "sd4": sd4, "sd5": sd5, "pixel_values": pixel_values, "reference": reference}


def _assert_same_hidden_states(model, dino):
    with torch.no_grad():
        hidden = model.clarity(dino["pixel_values"]).last_hidden_state
    assert hidden.shape == dino["reference"].shape == (2, 197, 384)
    torch.testing.assert_close(hidden, dino["reference"], atol=1e-4, rtol=0)


def test_hf_vit_saved_folder_matches_vit_model(dino, tmp_path):
    dino["vit"].save_pretrained(tmp_path / "dino-vits16")
    assert (tmp_path / "dino-vits16" / "model.safetensors").is_file()
    model, report = convert_dino_checkpoint(
        tmp_path / "dino-vits16", _single_token_config(), return_report=True
    )
    assert report.layout in (LAYOUT_HF_VIT_4, LAYOUT_HF_VIT_5)
    assert report.unused_keys == [] and len(report.used_keys) == 4 + 16 * 12 + 2
    assert not report.resampled_position_embeddings
    embeddings = model.clarity.embeddings
    torch.testing.assert_close(embeddings.class_tokens, dino["sd5"]["embeddings.cls_token"], atol=0, rtol=0)
    _assert_same_hidden_states(model, dino)
    # the conversion records what the backbone started from, for the model card's `base_model`
    assert model.config.base_model_id == "facebook/dino-vits16"
    model.save_pretrained(tmp_path / "converted")
    assert ClarityConfig.from_pretrained(tmp_path / "converted").base_model_id == "facebook/dino-vits16"


@pytest.mark.parametrize("layout", [LAYOUT_HF_VIT_4, LAYOUT_HF_VIT_5])
def test_both_hf_layouts_convert_to_the_same_model(dino, layout):
    state_dict = dino["sd4"] if layout == LAYOUT_HF_VIT_4 else dino["sd5"]
    # As inside a ViTForImageClassification checkpoint: `vit.` prefix and an unused classifier head.
    wrapped = {f"vit.{k}": v for k, v in state_dict.items()} | {"classifier.weight": torch.zeros(2, 384)}
    assert detect_layout(load_dino_state_dict_from(wrapped)) == layout
    model, report = convert_dino_checkpoint(wrapped, _single_token_config(), return_report=True)
    assert report.layout == layout and report.unused_keys == ["classifier.weight"]
    _assert_same_hidden_states(model, dino)


def load_dino_state_dict_from(state_dict):
    from clarity_hf.convert import _unwrap

    return _unwrap(state_dict, "test")


class _NotAllowed:
    pass


def test_official_dino_pth_with_weights_only(dino, tmp_path):
    official = _official_dino(dino["sd5"])
    teacher = {f"module.backbone.{k}": v for k, v in official.items()}
    teacher["module.head.last_layer.weight_g"] = torch.ones(65536, 1)  # DINO's projection head: unused
    checkpoint = {
        "student": {k: torch.zeros_like(v) for k, v in teacher.items()},
        "teacher": teacher,
        "epoch": 100,
        "args": argparse.Namespace(arch="vit_small", patch_size=16),
    }
    path = tmp_path / "checkpoint.pth"
    torch.save(checkpoint, path)
    state_dict = load_dino_state_dict(path)
    assert detect_layout(state_dict) == LAYOUT_DINO
    assert "blocks.0.attn.qkv.weight" in state_dict  # prefixes stripped, teacher chosen over student
    model, report = convert_dino_checkpoint(path, _single_token_config(), return_report=True)
    assert report.layout == LAYOUT_DINO and report.unused_keys == ["head.last_layer.weight_g"]
    _assert_same_hidden_states(model, dino)

    # weights_only=True: a pickle with an arbitrary class is refused with a clear error.
    torch.save({"model": official, "extra": _NotAllowed()}, tmp_path / "unsafe.pth")
    with pytest.raises(ValueError, match=r"unsafe\.pth.*weights_only=True"):
        load_dino_state_dict(tmp_path / "unsafe.pth")


def test_512_conversion_resamples_positions_and_initialises_class_tokens(dino):
    sd5 = dino["sd5"]
    config = ClarityConfig.from_preset("clarity-s-16-512")
    model, report = convert_dino_checkpoint(sd5, config, seed=3, return_report=True)
    assert (report.source_grid, report.target_grid) == (14, 32) and report.resampled_position_embeddings
    embeddings = model.clarity.embeddings

    positions = sd5["embeddings.position_embeddings"]  # (1, 197, 384)
    grid = positions[:, 1:].float().reshape(1, 14, 14, 384).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(32, 32), mode="bicubic", align_corners=False)
    expected = expected.permute(0, 2, 3, 1).reshape(1, 1024, 384)
    assert embeddings.position_embeddings.shape == (1, 1024, 384)
    torch.testing.assert_close(embeddings.position_embeddings.data, expected, atol=1e-6, rtol=0)
    bilinear = F.interpolate(grid, size=(32, 32), mode="bilinear", align_corners=False)
    bilinear = bilinear.permute(0, 2, 3, 1).reshape(1, 1024, 384)
    assert (embeddings.position_embeddings.data - bilinear).abs().max() > 1e-3

    # 14 class tokens = DINO CLS + N(0, 0.02); class positions = the CLS position embedding.
    cls_token, cls_position = sd5["embeddings.cls_token"], positions[:, :1]
    noise = embeddings.class_tokens.data - cls_token
    assert embeddings.class_tokens.shape == (1, 14, 384)
    assert abs(noise.std().item() - 0.02) < 0.001 and abs(noise.mean().item()) < 0.001
    assert noise.abs().amin(dim=-1).max() > 0  # every token moved
    assert torch.equal(embeddings.class_position_embeddings.data, cls_position.expand(1, 14, 384))
    # The backbone blocks are DINO's; the heads stay random (not zero).
    torch.testing.assert_close(
        model.clarity.encoder.layers[5].mlp.fc2.weight.data, sd5["layers.5.mlp.fc2.weight"], atol=0, rtol=0
    )
    assert model.token_classifier.weight.std() > 0.01 and model.segment_cam.class_head.weight.std() > 0.01
    # The anatomical prior is the shipped atlas.
    torch.testing.assert_close(model.anatomical_prior[0, 0], torch.from_numpy(load_default_atlas()))

    with torch.no_grad():
        outputs = model(torch.randn(1, 3, 512, 512, generator=torch.Generator().manual_seed(2)))
    assert outputs.logits.shape == (1, 14) and outputs.heatmaps.shape == (1, 14, 32, 32)
    assert torch.isfinite(outputs.logits).all() and torch.isfinite(outputs.heatmaps).all()

    # Seeded: the same seed gives the same class tokens and heads, another seed other class tokens.
    again = convert_dino_checkpoint(sd5, config, seed=3, atlas=None)
    assert torch.equal(again.clarity.embeddings.class_tokens, embeddings.class_tokens)
    assert torch.equal(again.token_classifier.weight, model.token_classifier.weight)
    other, _ = convert_dino_state_dict(sd5, config, seed=4)
    assert not torch.equal(other["clarity.embeddings.class_tokens"], embeddings.class_tokens.data)


def test_trunc_normal_class_token_init(dino):
    config = ClarityConfig(class_token_init="trunc_normal", class_token_init_std=0.02)
    converted, report = convert_dino_state_dict(dino["sd5"], config)
    assert report.class_token_init.startswith("trunc_normal")
    tokens = converted["clarity.embeddings.class_tokens"]
    positions = converted["clarity.embeddings.class_position_embeddings"]
    cls_token = dino["sd5"]["embeddings.cls_token"]
    assert abs(tokens.std().item() - 0.02) < 0.002 and abs(positions.std().item() - 0.02) < 0.002
    # Not derived from the CLS token: each class token is uncorrelated with it.
    correlations = F.cosine_similarity(
        tokens[0] - tokens[0].mean(-1, keepdim=True), cls_token[0] - cls_token.mean()
    )
    assert correlations.abs().max() < 0.25
    assert not torch.equal(tokens, positions)


def test_clear_errors(dino, tmp_path):
    sd5 = dino["sd5"]
    # Unknown layout, naming the file.
    save_file({"foo.weight": torch.zeros(2, 2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match=r"other\.safetensors.*unknown layout"):
        convert_dino_checkpoint(tmp_path / "other.safetensors", _single_token_config())
    # A ViT of another width (as ViT-B into a ViT-S config), small here to stay fast.
    torch.manual_seed(0)
    narrow = ViTModel(
        ViTConfig(**{**DINO_VITS16, "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 128}),
        add_pooling_layer=False,
    )
    narrow.save_pretrained(tmp_path / "narrow")
    with pytest.raises(ValueError, match=r"narrow.*width is 64.*hidden_size is 384"):
        convert_dino_checkpoint(tmp_path / "narrow", _single_token_config())
    # A different MLP width: a shape mismatch naming the parameter.
    with pytest.raises(ValueError, match=r"shape mismatch for clarity\.encoder\.layers\.0\.mlp\.fc1\.weight"):
        convert_dino_checkpoint(sd5, _single_token_config(intermediate_size=768))
    # A different depth.
    with pytest.raises(ValueError, match="has 12 transformer blocks but the config expects 6"):
        convert_dino_checkpoint(sd5, _single_token_config(num_hidden_layers=6))
    # A missing key.
    missing = {k: v for k, v in sd5.items() if k != "layers.3.layernorm_after.bias"}
    with pytest.raises(ValueError, match=r"missing the key `layers\.3\.layernorm_after\.bias`"):
        convert_dino_checkpoint(missing, _single_token_config())
    # Not a checkpoint at all, and an empty folder.
    Image.new("L", (8, 8)).save(tmp_path / "image.png", format="PNG")
    (tmp_path / "image.png").rename(tmp_path / "image.pth")
    with pytest.raises(ValueError, match=r"image\.pth"):
        load_dino_state_dict(tmp_path / "image.pth")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="cannot find the weights in folder"):
        load_dino_state_dict(tmp_path / "empty")
    with pytest.raises(FileNotFoundError):
        load_dino_state_dict(tmp_path / "nothing-here.pth")


def test_cli_writes_a_loadable_model(dino, tmp_path):
    # The bare backbone state dict (as DINO's released `dino_deitsmall16_pretrain.pth`), here as safetensors.
    save_file(_official_dino(dino["sd5"]), str(tmp_path / "dino.safetensors"))
    from clarity_hf.commands import convert_dino

    output = tmp_path / "clarity-s-16-224"
    convert_dino.main(
        ["--checkpoint", str(tmp_path / "dino.safetensors"), "--preset", "clarity-s-16-224"]
        + ["--output", str(output)]
    )
    assert (output / "config.json").is_file() and (output / "model.safetensors").is_file()
    loaded = ClarityForMultiLabelLocalization.from_pretrained(output)
    assert loaded.config.num_labels == 14
    torch.testing.assert_close(
        loaded.clarity.encoder.layers[11].attention.qkv.weight.data,
        torch.cat([dino["sd5"][f"layers.11.attention.{n}_proj.weight"] for n in "qkv"]),
        atol=0,
        rtol=0,
    )
    torch.testing.assert_close(loaded.anatomical_prior[0, 0], torch.from_numpy(load_default_atlas()))


# ----------------------------------------------------------------------------------------------- anatomical atlas


def test_shipped_atlas_looks_like_a_thorax():
    path = REPO_ROOT / "clarity_hf" / "data" / ATLAS_FILENAME
    assert path.stat().st_size < 20_000
    atlas = load_default_atlas()
    assert atlas.shape == (64, 64) and atlas.dtype == np.float32
    assert atlas.min() >= 0 and atlas.max() <= 1 and atlas.max() > 0.95
    right_lung, left_lung = atlas[20:40, 12:24].mean(), atlas[20:40, 40:52].mean()
    corners = [atlas[:6, :6], atlas[:6, -6:], atlas[-6:, :6], atlas[-6:, -6:]]
    assert right_lung > 0.7 and left_lung > 0.7
    assert max(c.mean() for c in corners) < 0.1
    assert atlas[:, :8].mean() < 0.2 and atlas[:, -8:].mean() < 0.2  # outside the ribcage


def test_mask_helpers():
    noisy = np.zeros((10, 10), dtype=np.uint8)
    noisy[2:8, 1:4] = 250
    noisy[2:8, 6:9] = 255
    noisy[0, 0] = 40  # JPEG ringing
    noisy[5, 1:4] = 127  # a device label inside the lung is not lung
    mask = binarize_mask(Image.fromarray(noisy))
    assert mask.sum() == 6 * 6 - 3 and not mask[0, 0] and not mask[5, 1]
    assert binarize_mask(Image.fromarray((noisy > 200).astype(np.uint8))).sum() == 6 * 6 - 3  # 0/1 masks
    assert not binarize_mask(Image.fromarray(np.zeros((4, 4), np.uint8))).any()
    filled = fill_between_lungs(mask)
    assert (
        filled[2:5, 1:9].all() and filled[6:8, 1:9].all() and not filled[:2].any() and not filled[:, 0].any()
    )
    assert filled[5].tolist() == mask[5].tolist()  # row 5 has one lung only: nothing to fill


@pytest.mark.skipif(not LUNG_MASKS.is_file(), reason=f"{LUNG_MASKS} not present")
def test_atlas_builds_deterministically_from_real_masks():
    subset = build_lung_atlas(LUNG_MASKS, size=64, limit=60)
    again = build_lung_atlas(LUNG_MASKS, size=64, limit=60)
    assert np.array_equal(subset, again)
    assert subset.shape == (64, 64) and subset.min() >= 0 and subset.max() <= 1
    shipped = load_default_atlas()
    assert np.corrcoef(subset.ravel(), shipped.ravel())[0, 1] > 0.95
    lungs = build_lung_atlas(LUNG_MASKS, size=32, region="lungs", limit=60)
    thorax = build_lung_atlas(LUNG_MASKS, size=32, region="thorax", limit=60)
    assert lungs.shape == (32, 32) and (thorax >= lungs - 1e-6).all()
    # The mediastinum between the lung fields is filled in the thorax atlas only.
    assert thorax[10:22, 15:17].mean() > lungs[10:22, 15:17].mean() + 0.3
    with pytest.raises(ValueError, match="region"):
        build_lung_atlas(LUNG_MASKS, region="heart")
