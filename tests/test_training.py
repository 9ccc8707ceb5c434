# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Fast tests of the training package: config parsing, optimizer groups, checkpoint discovery, distillation
plumbing, bad images, non-finite losses, cached teacher logits."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
from training_helpers import tiny_config

from clarity_hf.training import (
    ClarityTrainingConfig,
    NonFiniteLossError,
    find_latest_checkpoint,
    parse_training_config,
    train,
)
from clarity_hf.training.arguments import CONFIG_DIR
from clarity_hf.training.checkpointing import COMPLETE_MARKER, read_training_state
from clarity_hf.training.data import build_synthetic
from clarity_hf.training.models import build_model
from clarity_hf.training.optim import parameter_groups
from clarity_hf.training.trackers import read_jsonl


def _tiny_teacher(labels, image_size=32):
    config = ClarityTrainingConfig(
        model="convnextv2", model_preset="convnextv2-test", image_size=image_size, output_dir="unused"
    )
    return build_model(config, labels)


# ------------------------------------------------------------------------------------------------ configuration
def test_shipped_configs_parse():
    names = sorted(path.name for path in CONFIG_DIR.glob("*.yaml"))
    assert names == [
        "clarity_s16_224.yaml",
        "clarity_s16_512.yaml",
        "teacher_512.yaml",
        "tiny_cpu.yaml",
        "tiny_teacher_cpu.yaml",
    ]
    configs = {name: ClarityTrainingConfig.from_file(name) for name in names}
    assert configs["teacher_512.yaml"].model == "convnextv2"
    assert configs["teacher_512.yaml"].model_preset == "convnextv2-base"
    assert configs["clarity_s16_224.yaml"].image_size == 224
    assert configs["clarity_s16_512.yaml"].image_size == 512
    assert configs["clarity_s16_224.yaml"].weight_decay == 0.05
    assert configs["clarity_s16_224.yaml"].drop_path_rate == 0.1


def test_cli_overrides_file(tmp_path):
    config = parse_training_config(
        [
            "--config",
            "tiny_cpu.yaml",
            "--output_dir",
            str(tmp_path),
            "--learning_rate",
            "0.01",
            "--model_config_overrides",
            '{"num_hidden_layers": 2}',
        ]
    )
    assert config.learning_rate == 0.01  # from the command line
    assert config.per_device_train_batch_size == 16  # from the file
    assert config.model_config_overrides == {"num_hidden_layers": 2}
    json_file = tmp_path / "run.json"
    json_file.write_text(
        json.dumps({"model": "convnextv2", "model_preset": "convnextv2-test", "output_dir": "x"})
    )
    assert ClarityTrainingConfig.from_file(json_file).model == "convnextv2"
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rat: 0.1\n")
    with pytest.raises(ValueError, match="learning_rat"):
        parse_training_config(["--config", str(bad)])


def test_cached_logits_with_augmentation_is_refused():
    with pytest.raises(ValueError, match="cached teacher logits were computed on the un-augmented images"):
        ClarityTrainingConfig(use_cached_teacher_logits=True, augment=True, output_dir="x")


# ------------------------------------------------------------------------------------------------ optimizer
def test_parameter_groups_weight_decay_and_layer_decay():
    model = build_model(tiny_config("x"), [f"c{i}" for i in range(3)])
    groups = parameter_groups(model, learning_rate=1.0, weight_decay=0.05, layer_decay=0.5)
    decay_of = {name: group["weight_decay"] for group in groups for name in group["names"]}
    lr_of = {name: group["lr"] for group in groups for name in group["names"]}
    for name in (
        "clarity.embeddings.class_tokens",
        "clarity.embeddings.class_position_embeddings",
        "clarity.embeddings.position_embeddings",
        "clarity.encoder.layers.0.norm1.weight",
        "clarity.encoder.layers.0.attention.qkv.bias",
        "clarity.layernorm.weight",
    ):
        assert decay_of[name] == 0.0, name
    assert decay_of["clarity.encoder.layers.0.attention.qkv.weight"] == 0.05
    assert decay_of["clarity.embeddings.patch_embeddings.projection.weight"] == 0.05
    # 2 blocks: embeddings 0.5**3, block 0 0.5**2, block 1 0.5, heads 1.
    assert lr_of["clarity.embeddings.class_tokens"] == pytest.approx(0.125)
    assert lr_of["clarity.encoder.layers.0.mlp.fc1.weight"] == pytest.approx(0.25)
    assert lr_of["clarity.encoder.layers.1.mlp.fc1.weight"] == pytest.approx(0.5)
    assert lr_of["token_classifier.weight"] == pytest.approx(1.0)
    assert sum(len(g["params"]) for g in groups) == sum(1 for _ in model.parameters())


# ------------------------------------------------------------------------------------------------ checkpoints
def test_half_written_checkpoint_is_never_latest(tmp_path):
    root = tmp_path / "checkpoints"
    (root / "checkpoint-10").mkdir(parents=True)
    (root / "checkpoint-10" / COMPLETE_MARKER).write_text("10")
    (root / "checkpoint-20").mkdir()  # killed while writing: no marker
    (root / ".tmp-checkpoint-30").mkdir()
    assert find_latest_checkpoint(tmp_path).name == "checkpoint-10"


# ------------------------------------------------------------------------------------------------ distillation
class ExplodingTeacher(torch.nn.Module):
    def __init__(self, labels):
        super().__init__()
        self.inner = _tiny_teacher(labels)
        self.config = self.inner.config

    def forward(self, *args, **kwargs):
        raise AssertionError("the teacher must not run when distillation_loss_weight == 0")


def test_teacher_never_run_without_distillation(tmp_path, tiny_data):
    from clarity_hf.configuration_clarity import NIH_PATHOLOGIES

    labels = list(NIH_PATHOLOGIES)
    config = tiny_config(
        tmp_path, max_steps=2, eval_every_epoch=False, teacher_name_or_path=str(tmp_path / "does-not-exist")
    )
    result = train(config, teacher=ExplodingTeacher(labels), datasets=tiny_data)
    assert result.global_step == 2
    logs = [r for r in read_jsonl(tmp_path / "logs" / "metrics.jsonl") if "train/loss" in r]
    assert logs and all("train/distillation_loss" not in r for r in logs)


def test_distillation_uses_frozen_teacher(tmp_path, tiny_data):
    from clarity_hf.configuration_clarity import NIH_PATHOLOGIES

    teacher = _tiny_teacher(list(NIH_PATHOLOGIES))
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    calls = []
    teacher.register_forward_hook(lambda module, args, output: calls.append(module.training))
    config = tiny_config(tmp_path, max_steps=3, eval_every_epoch=False, distillation_loss_weight=0.5)
    train(config, teacher=teacher, datasets=tiny_data)
    assert len(calls) == 3 and not any(calls)  # once per step, in eval mode
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, before[key]), key
    logs = [r for r in read_jsonl(tmp_path / "logs" / "metrics.jsonl") if "train/loss" in r]
    assert len(logs) == 3
    for record in logs:
        assert record["train/distillation_loss"] > 0
        # loss = token BCE + pooled BCE (classification) + 0.5 distill + 0.1 orthogonal + 0.5 foreground
        expected = (
            record["train/classification_loss"]
            + 0.5 * record["train/distillation_loss"]
            + 0.1 * record["train/orthogonal_loss"]
            + 0.5 * record["train/foreground_loss"]
        )
        assert record["train/loss"] == pytest.approx(expected, rel=1e-5)


def test_cached_teacher_logits(tmp_path, tiny_data):
    from clarity_hf.configuration_clarity import NIH_PATHOLOGIES
    from clarity_hf.training.teacher_cache import add_teacher_logits

    teacher = _tiny_teacher(list(NIH_PATHOLOGIES))
    config = tiny_config(
        tmp_path,
        max_steps=2,
        eval_every_epoch=False,
        distillation_loss_weight=0.5,
        use_cached_teacher_logits=True,
    )
    cached = add_teacher_logits(teacher, tiny_data, 32, config, ["train"])
    assert np.asarray(cached["train"]["teacher_logits"]).shape == (48, 14)
    train(config, teacher=ExplodingTeacher(list(NIH_PATHOLOGIES)), datasets=cached)
    logs = [r for r in read_jsonl(tmp_path / "logs" / "metrics.jsonl") if "train/loss" in r]
    assert all(r["train/distillation_loss"] > 0 for r in logs)
    with pytest.raises(ValueError, match="teacher_logits"):
        train(
            tiny_config(
                tmp_path / "b", max_steps=1, distillation_loss_weight=0.5, use_cached_teacher_logits=True
            ),
            datasets=tiny_data,
        )


# ------------------------------------------------------------------------------------------------ robustness
def test_corrupt_and_missing_images_are_skipped_and_reported(tmp_path, tiny_data):
    from datasets import DatasetDict, Image

    train_split = tiny_data["train"].cast_column("image", Image(decode=False))
    folder = tmp_path / "images"
    folder.mkdir()
    paths = []
    for index, value in enumerate(train_split["image"]):
        path = folder / f"{index:03d}.png"
        path.write_bytes(value["bytes"])
        paths.append({"bytes": None, "path": str(path)})
    (folder / "005.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")  # corrupt
    (folder / "011.png").unlink()  # missing
    train_split = train_split.remove_columns("image").add_column("image", paths, feature=Image(decode=False))
    data = DatasetDict({"train": train_split, "validation": tiny_data["validation"]})
    result = train(tiny_config(tmp_path / "run", num_train_epochs=2), datasets=data)
    assert result.global_step == 12  # 48 images / batch 8, two epochs: the run reached its end
    assert result.skipped == {"missing_file": 2, "corrupt_image": 2}  # once per epoch
    assert any("005.png" in f and f.startswith("corrupt_image") for f in result.skipped_files)
    assert any("011.png" in f and f.startswith("missing_file") for f in result.skipped_files)
    assert [r["skipped"] for r in result.history] == [{"missing_file": 1, "corrupt_image": 1}] * 2
    assert result.num_eval_samples == 25


def test_nonfinite_loss_stops_with_last_good_checkpoint(tmp_path, tiny_data):
    from clarity_hf.configuration_clarity import NIH_PATHOLOGIES

    config = tiny_config(tmp_path, max_steps=6, checkpointing_steps=2, eval_every_epoch=False)
    model = build_model(config, list(NIH_PATHOLOGIES))
    original_forward, calls = model.forward, []

    def forward(*args, **kwargs):
        output = original_forward(*args, **kwargs)
        calls.append(1)
        if len(calls) >= 4 and output.loss is not None:
            output.loss = output.loss * float("nan")
        return output

    model.forward = forward
    with pytest.raises(NonFiniteLossError, match="non-finite loss .* optimizer step 4.*checkpoint-2"):
        train(config, model=model, datasets=tiny_data)
    latest = find_latest_checkpoint(tmp_path)
    assert latest.name == "checkpoint-2"
    assert read_training_state(latest)["global_step"] == 2
    assert not math.isnan(sum(float(p.detach().sum()) for p in model.parameters()))


def test_balanced_pos_weight_reaches_the_loss_and_the_saved_config(tmp_path):
    from datasets import Dataset

    from clarity_hf.training.data import balanced_pos_weight

    labels = [[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 1.0, 1.0], [0.0, 0.0, 0.0]]
    assert balanced_pos_weight(Dataset.from_dict({"labels": labels})) == [3.0, 3.0, 1 / 3]
    with pytest.raises(ValueError, match=r"split 'train' has no positive image for class index\(es\) \[1\]"):
        balanced_pos_weight(Dataset.from_dict({"labels": [[1.0, 0.0], [0.0, 0.0]]}))
    with pytest.raises(ValueError, match="pos_weight is applied by the CLARiTy model's loss"):
        ClarityTrainingConfig(model="convnextv2", pos_weight="balanced", output_dir="x")

    data = build_synthetic(tiny_config(tmp_path, synthetic_num_train=192))  # every class has a positive
    train_labels = np.asarray(data["train"]["labels"])
    positives = train_labels.sum(0)
    expected = (len(train_labels) - positives) / positives
    result = train(tiny_config(tmp_path, max_steps=1, pos_weight="balanced"), datasets=data)
    saved = json.loads((tmp_path / "best_model" / "config.json").read_text())["pos_weight"]
    np.testing.assert_allclose(saved, expected, rtol=1e-6)

    assert result.global_step == 1

    # The model's BCE weighs positives by it (set_pos_weight on a model built without).
    from clarity_hf.training.models import set_pos_weight

    torch.manual_seed(0)
    model = build_model(tiny_config(tmp_path), [f"c{i}" for i in range(14)]).eval()
    assert model.pos_weight is None
    pixel_values, targets = torch.randn(3, 3, 32, 32), torch.tensor(train_labels[:3], dtype=torch.float32)
    weights = torch.arange(1.0, 15.0)
    set_pos_weight(model, weights.tolist())
    with torch.no_grad():
        output = model(pixel_values=pixel_values, labels=targets)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    expected_loss = bce(output.token_logits, targets, pos_weight=weights) + bce(
        output.pooled_logits, targets, pos_weight=weights
    )
    torch.testing.assert_close(output.classification_loss, expected_loss)
    assert model.config.pos_weight == weights.tolist()


def test_prior_logits_are_the_bce_optimal_constants():
    from datasets import Dataset

    from clarity_hf.training.data import prior_logits

    labels = Dataset.from_dict(
        {"labels": [[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]}
    )
    # half a pseudo-image on each side: a class without positives still gets a finite logit
    np.testing.assert_allclose(prior_logits(labels), np.log([1.5 / 3.5, 0.5 / 4.5, 3.5 / 1.5]), rtol=1e-12)
    np.testing.assert_allclose(
        prior_logits(labels, pos_weight=[3.0, 1.0, 0.5]), np.log([3 * 1.5 / 3.5, 0.5 / 4.5, 0.5 * 3.5 / 1.5])
    )
    # it is the constant that minimises the BCE: the gradient of the mean BCE there is ~0 (exactly 0 without the
    # pseudo-counts; here within their effect)
    targets = torch.tensor(labels["labels"])
    constant = torch.tensor(prior_logits(labels), requires_grad=True)
    torch.nn.functional.binary_cross_entropy_with_logits(constant.expand(4, 3), targets).backward()
    assert constant.grad.abs().max() < 0.04
    with pytest.raises(ValueError, match="classifier_bias_init must be one of"):
        ClarityTrainingConfig(classifier_bias_init="zeros", output_dir="x")


@pytest.mark.parametrize("model_type", ["clarity", "convnextv2"])
def test_prior_bias_init_of_new_heads(tmp_path, tiny_data, model_type):
    from clarity_hf.training.data import prior_logits

    expected = torch.tensor(prior_logits(tiny_data["train"]))
    overrides = {}
    if model_type == "convnextv2":
        overrides = dict(model="convnextv2", model_preset="convnextv2-test", model_config_overrides=None)
    heads = (
        ["token_classifier.bias", "pooled_classifier.bias"]
        if model_type == "clarity"
        else ["classifier.bias"]
    )

    def biases(folder):
        from safetensors.torch import load_file

        state = load_file(os.path.join(folder, "model.safetensors"))
        return [state[name] for name in heads]

    # learning_rate 1e-30 (0 is refused): the saved heads are the initial ones
    result = train(
        tiny_config(tmp_path / "prior", max_steps=1, learning_rate=1e-30, **overrides), datasets=tiny_data
    )
    for bias in biases(result.best_model_dir):
        torch.testing.assert_close(bias, expected)
    assert expected.min() < -1.0  # the rare labels start well below 0 (zeros would be the "none" init)
    result = train(
        tiny_config(
            tmp_path / "none", max_steps=1, learning_rate=1e-30, classifier_bias_init="none", **overrides
        ),
        datasets=tiny_data,
    )
    for bias in biases(result.best_model_dir):
        assert bias.abs().max() < 1e-20  # zeros, moved by at most one step of lr 1e-30

    # A head loaded from a saved model with the same number of labels is kept, not reset to the prior.
    with torch.no_grad():
        trained = build_model(tiny_config(tmp_path, **overrides), [f"c{i}" for i in range(14)])
        for name in heads:
            trained.get_parameter(name).fill_(0.25)
    trained.save_pretrained(tmp_path / "trained")
    config = tiny_config(
        tmp_path / "kept",
        max_steps=1,
        learning_rate=1e-30,
        model_name_or_path=str(tmp_path / "trained"),
        **overrides,
    )
    for bias in biases(train(config, datasets=tiny_data).best_model_dir):
        torch.testing.assert_close(bias, torch.full((14,), 0.25))


# ------------------------------------------------------------------------------------------------ decoding once
def _count_decodes(dataset, monkeypatch) -> list[int]:
    calls = []
    original = dataset.transform.transform_one

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(dataset.transform, "transform_one", counted)
    return calls


def test_unaugmented_split_is_decoded_once_when_it_fits(tmp_path, tiny_data, monkeypatch):
    from clarity_hf.training.data import ClarityTrainingDataset

    config = tiny_config(tmp_path)
    split = tiny_data["train"]
    reference = ClarityTrainingDataset(split, 32, config)  # memory_mb=0: decoded on every access
    kept = ClarityTrainingDataset(split, 32, config, memory_mb=64)
    reference_calls, kept_calls = _count_decodes(reference, monkeypatch), _count_decodes(kept, monkeypatch)
    for _epoch in range(3):
        for index in range(len(split)):
            expected, item = reference[index], kept[index]
            assert item.keys() == expected.keys()
            for key in ("pixel_values", "anatomy_masks", "labels"):
                assert torch.equal(item[key], expected[key]), key
    assert len(reference_calls) == 3 * len(split)
    assert len(kept_calls) == len(split)  # once per sample, whatever the number of epochs

    # A caller changing the returned dict does not change the kept sample.
    kept[0].pop("pixel_values")
    assert "pixel_values" in kept[0]

    # Augmented views differ per epoch, and a split larger than the budget is never kept.
    sample_mb = 4 * 4 * 32 * 32 / 2**20  # 3 image channels and the mask, float32
    for dataset in (
        ClarityTrainingDataset(split, 32, config, augment=True, memory_mb=64),
        ClarityTrainingDataset(split, 32, config, memory_mb=sample_mb * (len(split) - 1)),
    ):
        calls = _count_decodes(dataset, monkeypatch)
        for _epoch in range(2):
            for index in range(len(split)):
                dataset[index]
        assert len(calls) == 2 * len(split)
    fits = ClarityTrainingDataset(split, 32, config, memory_mb=sample_mb * len(split))
    calls = _count_decodes(fits, monkeypatch)
    for _epoch in range(2):
        for index in range(len(split)):
            fits[index]
    assert len(calls) == len(split)


def test_anatomy_masks_are_read_only_for_the_clarity_loss(tmp_path, tiny_data):
    """A bad anatomy mask costs the student its image (the mask feeds its loss) but neither the teacher, a model
    without SegmentCAM nor the validation: they never read the masks."""
    from datasets import DatasetDict, Image

    from clarity_hf.training.data import ClarityTrainingDataset

    def with_bad_mask(split):
        split = split.cast_column("anatomy_mask", Image(decode=False))
        masks = list(split["anatomy_mask"])
        masks[3] = {"bytes": b"\x89PNG\r\n\x1a\n not a mask", "path": None}
        return split.remove_columns("anatomy_mask").add_column(
            "anatomy_mask", masks, feature=Image(decode=False)
        )

    data = DatasetDict(
        {"train": with_bad_mask(tiny_data["train"]), "validation": with_bad_mask(tiny_data["validation"])}
    )
    config = tiny_config(tmp_path)
    with_masks = ClarityTrainingDataset(data["train"], 32, config)
    assert with_masks[3]["valid"] is False and with_masks[3]["problem"] == "corrupt_image"
    without = ClarityTrainingDataset(data["train"], 32, config, with_anatomy_masks=False)
    assert without[3]["valid"] is True and "anatomy_masks" not in without[3]

    student = train(tiny_config(tmp_path / "student"), datasets=data)
    assert student.skipped == {"missing_file": 0, "corrupt_image": 1}
    assert any("anatomy mask" in f for f in student.skipped_files)
    assert student.num_eval_samples == 25 and student.history[0]["eval_skipped"] == 0
    teacher = train(
        tiny_config(
            tmp_path / "teacher",
            model="convnextv2",
            model_preset="convnextv2-test",
            model_config_overrides=None,
        ),
        datasets=data,
    )
    assert teacher.skipped == {"missing_file": 0, "corrupt_image": 0}
    assert teacher.history[0]["eval_skipped"] == 0
    # A CLARiTy model without SegmentCAM (the plain-ViT baseline, that ablation) has no loss that reads masks.
    overrides = {**tiny_config(tmp_path).model_config_overrides, "use_segment_cam": False}
    no_segment_cam = train(
        tiny_config(tmp_path / "no_segment_cam", model_config_overrides=overrides), datasets=data
    )
    assert no_segment_cam.skipped == {"missing_file": 0, "corrupt_image": 0}
