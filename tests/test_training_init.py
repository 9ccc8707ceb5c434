# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Where a run starts and what it leaves: DINO initialisation, fine-tuning a trained folder on another label set,
the Hub-ready `best_model/` folder (model + processor), gradient accumulation and bf16 autocast on CPU."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from datasets import DatasetDict, List, Value
from PIL import Image
from training_helpers import tiny_config
from transformers import AutoImageProcessor, AutoModel, AutoModelForImageClassification, ViTConfig, ViTModel

from clarity_hf.configuration_clarity import NIH_PATHOLOGIES
from clarity_hf.training import train
from clarity_hf.training.data import ClarityTrainingDataset, eval_collator
from clarity_hf.training.models import build_model
from clarity_hf.training.trackers import read_jsonl

# The widths of tiny_config's CLARiTy (clarity-tiny with 2 blocks, patch 8, 32 px).
TINY_VIT = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "patch_size": 8,
    "image_size": 32,
    "layer_norm_eps": 1e-6,
    "qkv_bias": True,
}
BACKBONE_PREFIXES = (
    "clarity.embeddings.patch_embeddings.",
    "clarity.embeddings.position_embeddings",
    "clarity.encoder.",
    "clarity.layernorm.",
)


def _losses(output_dir) -> list[float]:
    return [r["train/loss"] for r in read_jsonl(output_dir / "logs" / "metrics.jsonl") if "train/loss" in r]


def _backbone(state_dict) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state_dict.items() if k.startswith(BACKBONE_PREFIXES)}


# ------------------------------------------------------------------------------------------------ DINO init
def test_init_from_dino_checkpoint_end_to_end(tmp_path, tiny_data):
    torch.manual_seed(0)
    vit = ViTModel(ViTConfig(**TINY_VIT), add_pooling_layer=False)
    with torch.no_grad():  # random norms and biases too, so that a dropped tensor shows
        for name, parameter in vit.named_parameters():
            if "layernorm" in name or name.endswith("bias") or name.endswith("cls_token"):
                parameter.add_(0.1 * torch.randn_like(parameter))
    vit.save_pretrained(tmp_path / "dino")
    dino = {k: v.detach().clone() for k, v in vit.state_dict().items()}

    config = tiny_config(tmp_path / "run", init_from_dino=str(tmp_path / "dino"), max_steps=2)
    model = build_model(config, list(NIH_PATHOLOGIES))
    state = model.state_dict()
    embeddings = "clarity.embeddings."
    assert torch.equal(
        state[embeddings + "patch_embeddings.projection.weight"],
        dino["embeddings.patch_embeddings.projection.weight"],
    )
    assert torch.equal(
        state[embeddings + "position_embeddings"], dino["embeddings.position_embeddings"][:, 1:]
    )
    assert torch.equal(state["clarity.layernorm.weight"], dino["layernorm.weight"])
    for layer in range(TINY_VIT["num_hidden_layers"]):
        ours, theirs = f"clarity.encoder.layers.{layer}.", f"layers.{layer}."
        qkv = torch.cat([dino[f"{theirs}attention.{n}_proj.weight"] for n in ("q", "k", "v")])
        assert torch.equal(state[ours + "attention.qkv.weight"], qkv)
        assert torch.equal(state[ours + "attention.proj.bias"], dino[theirs + "attention.o_proj.bias"])
        assert torch.equal(state[ours + "mlp.fc2.weight"], dino[theirs + "mlp.fc2.weight"])
        assert torch.equal(state[ours + "norm1.bias"], dino[theirs + "layernorm_before.bias"])
    # the 14 class tokens start from DINO's [CLS] token plus N(0, class_token_init_std) noise
    tokens, cls = state[embeddings + "class_tokens"][0], dino["embeddings.cls_token"][0, 0]
    assert tokens.shape == (14, 64) and model.config.class_token_init == "cls_noise"
    noise = tokens - cls
    assert 0.5 < noise.std().item() / model.config.class_token_init_std < 1.5
    assert noise.mean(0).abs().max() < 4 * model.config.class_token_init_std

    result = train(config, model=model, datasets=tiny_data)
    assert result.global_step == 2 and all(math.isfinite(v) for v in _losses(tmp_path / "run"))


# ------------------------------------------------------------------------------------------------ fine-tuning
def _three_label_data(data: DatasetDict) -> DatasetDict:
    feature = List(Value("float32"), length=3)
    out = {}
    for split, dataset in data.items():
        labels = [row[:3] for row in dataset["labels"]]
        out[split] = dataset.remove_columns("labels").add_column("labels", labels, feature=feature)
    return DatasetDict(out)


def test_finetune_trained_folder_on_another_label_set(tmp_path, tiny_data):
    first = train(tiny_config(tmp_path / "first", max_steps=2), datasets=tiny_data)
    saved = AutoModel.from_pretrained(first.best_model_dir, trust_remote_code=True).state_dict()
    new_labels = ["Atelectasis", "Cardiomegaly", "Effusion"]
    config = tiny_config(
        tmp_path / "second", model_name_or_path=first.best_model_dir, label_names=new_labels, max_steps=2
    )
    model = build_model(config, new_labels)
    assert model.config.id2label == dict(enumerate(new_labels)) and model.config.num_labels == 3
    state = model.state_dict()
    backbone = _backbone(saved)
    assert len(backbone) >= 20
    for key, value in backbone.items():
        assert torch.equal(state[key], value), key  # carried over bit-identically
    # the per-label parts are new tensors of the new size
    for key in (
        "clarity.embeddings.class_tokens",
        "clarity.embeddings.class_position_embeddings",
        "token_classifier.weight",
        "pooled_classifier.weight",
    ):
        assert 3 in state[key].shape and 14 in saved[key].shape, key
    result = train(config, model=model, datasets=_three_label_data(tiny_data))
    assert result.global_step == 2 and set(result.best_per_class_auroc) == set(new_labels)
    assert all(math.isfinite(v) for v in _losses(tmp_path / "second"))


# ------------------------------------------------------------------------------------------------ best_model
@pytest.mark.parametrize("kind", ["clarity", "convnextv2"])
def test_best_model_folder_loads_with_auto_classes(tmp_path, tiny_data, kind):
    overrides = {"model": kind, "max_steps": 2, "image_mean": [0.5] * 3, "image_std": [0.25] * 3}
    if kind == "convnextv2":
        overrides.update(model_preset="convnextv2-test", model_config_overrides=None)
    config = tiny_config(tmp_path, **overrides)
    result = train(config, datasets=tiny_data)
    folder = result.best_model_dir

    processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
    assert type(processor).__name__ == "ClarityImageProcessor"
    assert processor.size == {"height": 32, "width": 32}
    assert processor.image_mean == [0.5] * 3 and processor.image_std == [0.25] * 3
    if kind == "clarity":
        model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    else:
        model = AutoModelForImageClassification.from_pretrained(folder).eval()
    assert model.config.id2label == dict(enumerate(NIH_PATHOLOGIES))

    # the processor reproduces the training loop's evaluation input
    validation = tiny_data["validation"].select(range(4))
    wrapped = ClarityTrainingDataset(validation, 32, config, name="validation")
    expected = eval_collator()([wrapped[i] for i in range(4)])["pixel_values"]
    images = [Image.fromarray(np.asarray(image)) for image in validation["image"]]
    pixel_values = processor(images, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(pixel_values, expected, atol=2e-5, rtol=0)
    with torch.no_grad():
        logits = model(pixel_values=pixel_values).logits
    assert logits.shape == (4, 14) and torch.isfinite(logits).all()


# ------------------------------------------------------------------------------------------------ numerics
def test_gradient_accumulation_matches_the_double_batch(tmp_path, tiny_data):
    """2 accumulated micro-batches of 4 == 1 batch of 8 (the same 8 images: the sampler's order does not depend on
    the batch size). AdamW's first step is lr * g / (|g| + eps); eps = 1 makes it linear in the gradient, so the
    weights compare the gradients. Tolerance 1e-6 (float32 summation order), against updates of ~1e-3."""
    common = dict(
        max_steps=1,
        eval_every_epoch=False,
        warmup_steps=0,
        learning_rate=0.1,
        adam_epsilon=1.0,
        max_grad_norm=0,
    )
    weights = {}
    for name, batch, accumulation in (("double", 8, 1), ("accumulated", 4, 2)):
        config = tiny_config(
            tmp_path / name,
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=accumulation,
            **common,
        )
        torch.manual_seed(0)
        model = build_model(config, list(NIH_PATHOLOGIES))
        initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
        result = train(config, model=model, datasets=tiny_data)
        assert result.global_step == 1
        weights[name] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    moved = max((weights["double"][k] - initial[k]).abs().max().item() for k in initial)
    assert moved > 1e-4
    for key, value in weights["double"].items():
        torch.testing.assert_close(weights["accumulated"][key], value, atol=1e-6, rtol=0, msg=key)


def test_bf16_mixed_precision_on_cpu(tmp_path, tiny_data):
    config = tiny_config(tmp_path, mixed_precision="bf16", max_steps=3)
    result = train(config, datasets=tiny_data)
    losses = _losses(tmp_path)
    assert result.global_step == 3 and len(losses) == 3 and all(math.isfinite(v) for v in losses)
    assert math.isfinite(result.best_mean_auroc)
