# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Baselines (teacher Grad-CAM and CAM, plain-ViT CLS attention) and the split runner that feeds them, like CLARiTy,
through the same AUROC and localization code."""

import dataclasses

import numpy as np
import pytest
import torch
from transformers import ConvNextV2Config, ConvNextV2ForImageClassification

from clarity_hf import ClarityConfig, ClarityForMultiLabelLocalization
from clarity_hf.baselines import (
    PlainViTForMultiLabelClassification,
    plain_vit_config,
    teacher_cam,
    teacher_gradcam,
)
from clarity_hf.configuration_clarity import NIH_PATHOLOGIES
from clarity_hf.data.synthetic import build_synthetic_cxr
from clarity_hf.evaluation.run import (
    SplitPredictions,
    _box_frame,
    build_processor,
    evaluate_predictions,
    heatmap_methods,
    load_model_for_evaluation,
    predict_split,
)


def tiny_teacher(image_size=64):
    torch.manual_seed(0)
    config = ConvNextV2Config(
        depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 32, 64], num_labels=14, image_size=image_size
    )
    return ConvNextV2ForImageClassification(config).eval()


def test_teacher_cam_is_the_exact_decomposition_of_the_logits():
    teacher = tiny_teacher(128)
    with torch.no_grad():  # non-trivial LayerNorm affine and bias, so the check covers them
        teacher.convnextv2.layernorm.weight.uniform_(0.5, 1.5)
        teacher.convnextv2.layernorm.bias.normal_()
    x = torch.randn(3, 3, 128, 128)
    out = teacher_cam(teacher, x)
    assert out.heatmaps.shape == (3, 14, 4, 4)
    assert out.heatmaps.min() >= 0 and out.heatmaps.max() <= 1
    assert torch.allclose(out.heatmaps.amax(dim=(2, 3)), torch.ones(3, 14))
    # Recompute the raw CAM and check mean_hw(CAM) / sigma + const == logits.
    base = teacher.convnextv2
    with torch.no_grad():
        features = base(x).last_hidden_state
        pooled = features.mean((2, 3))
        sigma = (pooled.var(1, unbiased=False, keepdim=True) + base.layernorm.eps).sqrt()
        weights = teacher.classifier.weight * base.layernorm.weight
        cam = torch.einsum("ck,bkhw->bchw", weights, features - features.mean(1, keepdim=True))
        constant = teacher.classifier.weight @ base.layernorm.bias + teacher.classifier.bias
        logits = teacher(x).logits
    assert torch.allclose(cam.mean((2, 3)) / sigma + constant, logits, atol=1e-4)
    assert torch.allclose(out.logits, logits, atol=1e-5)
    low, high = cam.flatten(2).min(-1).values, cam.flatten(2).max(-1).values
    expected = (cam - low[..., None, None]) / (high - low)[..., None, None]
    assert torch.allclose(out.heatmaps, expected, atol=1e-5)


def test_teacher_gradcam_maps():
    teacher = tiny_teacher()
    out = teacher_gradcam(teacher, torch.randn(2, 3, 64, 64))
    assert out.heatmaps.shape == (2, 14, 2, 2) and out.logits.shape == (2, 14)
    assert out.heatmaps.dtype == torch.float32
    assert out.heatmaps.min() >= 0 and out.heatmaps.max() <= 1


def test_plain_vit_heatmap_is_the_dino_cls_attention():
    torch.manual_seed(0)
    model = PlainViTForMultiLabelClassification(ClarityConfig.from_preset("clarity-tiny")).eval()
    assert model.clarity.embeddings.class_tokens.shape[1] == 1  # ONE class token: a plain ViT
    assert model.config.num_labels == 14 and model.classifier.out_features == 14
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = model(x)
        # DINO's idiom on the full last-layer attention: CLS row, patch columns, mean over heads.
        attention = model.clarity.get_last_selfattention(x)  # (B, H, 1 + N, 1 + N)
    reference = attention[:, :, 0, 1:].mean(1).reshape(2, 8, 8)
    low = reference.flatten(1).min(-1).values[:, None, None]
    high = reference.flatten(1).max(-1).values[:, None, None]
    reference = (reference - low) / (high - low)
    assert out.heatmaps.shape == (2, 14, 8, 8)
    assert torch.allclose(out.heatmaps, reference[:, None].expand(-1, 14, -1, -1), atol=1e-5)
    assert out.heatmaps.min() >= 0 and out.heatmaps.max() <= 1


def test_plain_vit_config_switches_clarity_parts_off():
    plain = plain_vit_config(ClarityConfig.from_preset("clarity-tiny", orthogonal_loss_weight=0.3))
    assert not plain.use_segment_cam and not plain.use_attention_pooling and not plain.use_anatomical_prior
    assert plain.distillation_loss_weight == 0 and plain.num_attention_map_layers == 1
    assert plain.hidden_size == 64 and plain.num_labels == 14


def test_box_frame_is_height_width():
    dataset = build_synthetic_cxr(0, 0, 1, image_size=32, num_proc=1)["test"]
    # `original_size` is (height, width) in the data schema, as the evaluator wants it.
    assert _box_frame(dataset, {"original_size": [40, 80]}) == (40, 80)


def oracle_predictions(shift: int) -> SplitPredictions:
    """Four 40x80 (h x w) images whose heatmap is exactly the ground-truth box (shifted by `shift` pixels)."""
    boxes = [
        [{"label": "Nodule", "x": 10.0, "y": 5.0, "w": 20.0, "h": 10.0}],
        [{"label": "Mass", "x": 50.0, "y": 20.0, "w": 16.0, "h": 16.0}],
        [{"label": "Nodule", "x": 60.0, "y": 2.0, "w": 10.0, "h": 10.0}],
        [{"label": "Mass", "x": 0.0, "y": 0.0, "w": 30.0, "h": 20.0}],
    ]
    heatmaps = np.zeros((4, 14, 40, 80), dtype=np.float32)
    for i, image_boxes in enumerate(boxes):
        for box in image_boxes:
            c = NIH_PATHOLOGIES.index(box["label"])
            x, y, w, h = (int(box[k]) for k in ("x", "y", "w", "h"))
            heatmaps[i, c, y : y + h, min(x + shift, 80 - 1) : min(x + w + shift, 80)] = 1.0
    labels = np.zeros((4, 14), dtype=np.float32)
    labels[[0, 2], NIH_PATHOLOGIES.index("Nodule")] = 1
    labels[[1, 3], NIH_PATHOLOGIES.index("Mass")] = 1
    logits = labels * 4 - 2
    return SplitPredictions(
        logits=logits,
        heatmaps=heatmaps,
        labels=labels,
        image_ids=list("abcd"),
        boxes=boxes,
        box_frames=[(40, 80)] * 4,
        box_splits=["tune", "tune", "eval", "eval"],
    )


def test_evaluate_predictions_oracle_and_shifted():
    exact = evaluate_predictions(oracle_predictions(0), NIH_PATHOLOGIES, n_bootstrap=0)
    assert exact["classification"]["per_class"]["Nodule"]["auroc"] == 1.0
    result = exact["localization"]["eval"]
    assert result["n_images"] == 2 and sum(result["n_gt_boxes"].values()) == 2
    assert result["iou"]["macro"] == [1.0] * 7
    assert result["false_positives"]["total"] == 0
    # Shift every heatmap 5 px right. Eval Nodule: box (65, 2, 75, 12) vs GT (60, 2, 70, 12): IoU = 50 / 150 = 1/3,
    # found at T(IoU) 0.1-0.3. Eval Mass: box (5, 0, 35, 20) vs GT (0, 0, 30, 20): IoU = 500 / 700 = 0.714, found
    # at every T(IoU) up to 0.7.
    shifted = evaluate_predictions(oracle_predictions(5), NIH_PATHOLOGIES, n_bootstrap=0)["localization"][
        "eval"
    ]
    assert shifted["iou"]["per_class"]["Nodule"] == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    assert shifted["iou"]["per_class"]["Mass"] == [1.0] * 7
    assert shifted["iou"]["macro"] == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5]


@pytest.fixture(scope="module")
def small_data():
    return build_synthetic_cxr(48, 16, 48, image_size=64, seed=3, num_proc=1)


def test_all_methods_flow_through_the_same_evaluator(small_data):
    torch.manual_seed(0)
    clarity = ClarityForMultiLabelLocalization(ClarityConfig.from_preset("clarity-tiny")).eval()
    vit = PlainViTForMultiLabelClassification(ClarityConfig.from_preset("clarity-tiny")).eval()
    methods = {
        **heatmap_methods(clarity, "clarity"),
        **heatmap_methods(tiny_teacher(), "convnextv2"),
        **heatmap_methods(vit, "plain_vit"),
    }
    assert set(methods) == {"CLARiTy", "teacher Grad-CAM", "teacher CAM", "plain ViT (CLS attention)"}
    test = small_data["test"]
    predictions = predict_split(methods, test, build_processor(64), batch_size=20)
    boxed = sum(1 for b in test["boxes"] if b)
    assert boxed > 4 and {"tune", "eval"} <= set(test["box_split"])
    for name, pred in predictions.items():
        grid = 2 if "teacher" in name else 8
        assert pred.heatmaps.shape == (len(test), 14, grid, grid), name
        assert pred.heatmaps.min() >= 0 and pred.heatmaps.max() <= 1, name
        assert pred.logits.shape == (len(test), 14)
        entry = evaluate_predictions(pred, NIH_PATHOLOGIES, n_bootstrap=0)
        localization = entry["localization"]
        assert localization["eval"]["n_images"] + localization["tune"]["n_images"] == boxed
        assert len(localization["eval"]["iou"]["macro"]) == 7
        assert 0 <= entry["classification"]["mean_auroc"] <= 1
    # The CAM and Grad-CAM baselines share the teacher's logits.
    assert np.allclose(predictions["teacher CAM"].logits, predictions["teacher Grad-CAM"].logits, atol=1e-5)


def test_gradcam_runs_only_on_the_boxed_rows_and_changes_no_number(small_data):
    """With `logits_only`, the teacher's Grad-CAM (one backward pass per class) sees only the rows with boxes; the
    others get the stand-in's logits and NaN maps, which no metric reads: every number of the evaluation is the
    same as with Grad-CAM on every row."""
    from clarity_hf.evaluation.run import logits_methods

    teacher = tiny_teacher()
    test = small_data["test"]
    boxed = np.asarray([bool(b) for b in test["boxes"]])
    assert 0 < boxed.sum() < len(test)
    methods = heatmap_methods(teacher, "convnextv2", gradcam_stages=True)
    seen = []
    gradcam = methods["teacher Grad-CAM"]

    def counted(x):
        seen.append(len(x))
        return gradcam(x)

    methods["teacher Grad-CAM"] = counted
    processor = build_processor(64)
    full = predict_split(methods, test, processor, batch_size=20)
    assert sum(seen) == len(test)
    seen.clear()
    restricted = predict_split(
        methods, test, processor, batch_size=20, logits_only=logits_methods(teacher, "convnextv2")
    )
    assert sum(seen) == boxed.sum()  # Grad-CAM ran on the boxed rows only
    assert list(restricted) == list(full) and len(full) == 5  # four stages and CAM
    for name in full:
        a, b = full[name], restricted[name]
        assert np.allclose(a.logits, b.logits, atol=1e-5), name
        assert np.array_equal(a.heatmaps[boxed], b.heatmaps[boxed]), name
        assert np.isnan(b.heatmaps[~boxed]).all() == ("Grad-CAM" in name), name
        first = evaluate_predictions(a, NIH_PATHOLOGIES, n_bootstrap=20)
        second = evaluate_predictions(b, NIH_PATHOLOGIES, n_bootstrap=20)
        assert first["localization"] == second["localization"], name
        assert first["classification"]["mean_auroc"] == pytest.approx(second["classification"]["mean_auroc"])
    # A split without boxes is run whole.
    seen.clear()
    unboxed = test.filter(lambda row: not row["boxes"])
    predict_split(
        methods, unboxed, processor, batch_size=20, logits_only=logits_methods(teacher, "convnextv2")
    )
    assert sum(seen) == len(unboxed)


def test_plain_vit_trains_with_the_project_loop(small_data, tmp_path):
    from clarity_hf.training import ClarityTrainingConfig, train

    config = ClarityTrainingConfig(
        model="clarity",
        model_preset="clarity-tiny",
        image_size=64,
        distillation_loss_weight=0.0,
        output_dir=str(tmp_path / "vit"),
        max_steps=2,
        per_device_train_batch_size=16,
        report_to=[],
        disable_tqdm=True,
        save_total_limit=1,
    )
    model = PlainViTForMultiLabelClassification(plain_vit_config(ClarityConfig.from_preset("clarity-tiny")))
    before = model.classifier.weight.detach().clone()
    result = train(config, model=model, datasets=small_data)
    assert result.global_step == 2 and result.best_model_dir
    loaded, processor, kind = load_model_for_evaluation(result.best_model_dir)
    assert kind == "plain_vit" and isinstance(loaded, PlainViTForMultiLabelClassification)
    assert not torch.equal(loaded.classifier.weight, before)  # it was trained
    assert processor.size == {"height": 64, "width": 64}


def test_plain_vit_classify_gives_the_forward_logits_and_saves_without_hub_code(tmp_path):
    from clarity_hf.baselines import PlainViTForMultiLabelClassification, plain_vit_config

    torch.manual_seed(0)
    vit = PlainViTForMultiLabelClassification(
        plain_vit_config(ClarityConfig.from_preset("clarity-tiny"))
    ).eval()
    pixel_values = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(vit.classify(pixel_values), vit(pixel_values).logits, rtol=0, atol=1e-6)
    # Only CLARiTy's model class writes the Hub auto_map and code files; the baseline saves as a plain folder.
    vit.save_pretrained(tmp_path / "vit")
    saved = {p.name for p in (tmp_path / "vit").iterdir()}
    assert (
        "modeling_clarity.py" not in saved
        and "auto_map" not in (tmp_path / "vit" / "config.json").read_text()
    )
    ClarityForMultiLabelLocalization(ClarityConfig.from_preset("clarity-tiny")).save_pretrained(
        tmp_path / "clarity"
    )
    assert {"modeling_clarity.py", "configuration_clarity.py"} <= {
        p.name for p in (tmp_path / "clarity").iterdir()
    }


def test_one_teacher_builder_serves_training():
    from types import SimpleNamespace

    from clarity_hf.baselines import build_teacher
    from clarity_hf.training.models import build_model

    labels = ["Atelectasis", "Effusion"]
    built = build_teacher("convnextv2-test", labels, image_size=64)
    assert built.config.depths == [1, 1, 1, 1] and built.config.id2label == {0: "Atelectasis", 1: "Effusion"}
    assert built.config.problem_type == "multi_label_classification"
    config = SimpleNamespace(
        model="convnextv2",
        model_preset="convnextv2-test",
        model_name_or_path=None,
        model_config_overrides=None,
        drop_path_rate=0.1,
        image_size=64,
        distillation_loss_weight=None,
    )
    trained = build_model(config, labels)
    assert trained.config.to_dict() | {"drop_path_rate": 0.0} == built.config.to_dict() | {
        "drop_path_rate": 0.0
    }
    assert trained.config.drop_path_rate == 0.1
    with pytest.raises(ValueError, match="unknown ConvNeXtV2 preset 'convnextv2-huge'"):
        build_teacher("convnextv2-huge")


class _BoxChannels(torch.nn.Module):
    """Stands in for the teacher's stem: the image's first two channels (one box mask per class) pooled to the
    stage-0 grid (image side / 4)."""

    def forward(self, pixel_values):
        return torch.nn.functional.avg_pool2d(pixel_values[:, :2], 4)


class _NoisyDownsample(torch.nn.Module):
    """Stands in for stage 1: halves the grid (linear, so the gradients reaching stage 0 stay exact) and adds strong
    fixed noise, so that maps read at this stage no longer follow the boxes."""

    def __init__(self, grid):
        super().__init__()
        self.register_buffer(
            "noise", 4 * torch.randn(2, grid, grid, generator=torch.Generator().manual_seed(0))
        )

    def forward(self, hidden_states):
        return torch.nn.functional.avg_pool2d(hidden_states, 2) + self.noise


def test_stage_selection_on_tune_picks_the_stage_whose_maps_follow_the_boxes():
    """A teacher with two stages (16 x 16 and 8 x 8 at 64 px): stage 0 sees the boxes, stage 1 is noise. The
    selection, made on the tune half only, must pick stage 0 and report its grid, even though stage 1 is the
    default (last) Grad-CAM layer."""
    from clarity_hf.evaluation.selection import select_stage

    classes = ["Atelectasis", "Cardiomegaly"]
    teacher = ConvNextV2ForImageClassification(
        ConvNextV2Config(num_stages=2, depths=[1, 1], hidden_sizes=[2, 2], num_labels=2, image_size=64)
    ).eval()
    teacher.convnextv2.embeddings = _BoxChannels()
    teacher.convnextv2.encoder.stages[0] = torch.nn.Identity()
    teacher.convnextv2.encoder.stages[1] = _NoisyDownsample(8)
    teacher.convnextv2.layernorm = torch.nn.Identity()
    teacher.classifier = torch.nn.Linear(2, 2)
    with torch.no_grad():  # logit c = mean of channel c: Grad-CAM of class c reads channel c
        teacher.classifier.weight.copy_(torch.eye(2))
        teacher.classifier.bias.zero_()

    generator = np.random.default_rng(0)
    n = 16
    pixel_values = torch.zeros(n, 3, 64, 64)
    boxes = []
    for i in range(n):
        image_boxes = []
        for c, name in enumerate(classes):
            x, y = (int(v) * 8 for v in generator.integers(0, 5, size=2))
            w, h = (int(v) * 8 for v in generator.integers(2, 4, size=2))
            pixel_values[i, c, y : y + h, x : x + w] = 1.0
            image_boxes.append({"label": name, "x": x, "y": y, "w": w, "h": h})
        boxes.append(image_boxes)

    methods = heatmap_methods(teacher, "convnextv2", gradcam_stages=True)
    outputs = methods["teacher Grad-CAM"](pixel_values)
    assert {k: tuple(v.heatmaps.shape[-2:]) for k, v in outputs.items()} == {
        "teacher Grad-CAM [stage 0]": (16, 16),
        "teacher Grad-CAM [stage 1]": (8, 8),
    }

    def predictions_of(output):
        return SplitPredictions(
            logits=output.logits.numpy(),
            heatmaps=output.heatmaps.numpy(),
            labels=np.ones((n, 2), dtype=np.float32),
            image_ids=[str(i) for i in range(n)],
            boxes=boxes,
            box_frames=[(64, 64)] * n,
            box_splits=["tune" if i % 2 == 0 else "eval" for i in range(n)],
        )

    predictions = {name: predictions_of(out) for name, out in outputs.items()}
    predictions["other"] = predictions["teacher Grad-CAM [stage 1]"]
    # The reference grid (8 x 8) favours stage 1 on ties only; the objective must decide here.
    selected, choice = select_stage(predictions, "teacher Grad-CAM", classes, reference_grid=(8, 8))
    assert list(selected) == ["teacher Grad-CAM", "other"]
    assert choice["stage"] == 0 and choice["grid"] == "16 x 16" and choice["selected_on"] == "tune"
    scores = {s: c["tune_objective"] for s, c in choice["candidates"].items()}
    assert scores[0] > 0.9 and scores[1] < scores[0] - 0.3, scores
    assert selected["teacher Grad-CAM"] is predictions["teacher Grad-CAM [stage 0]"]

    # The report entry states the grid and the stage; the eval half confirms the choice.
    entry = evaluate_predictions(
        selected["teacher Grad-CAM"], classes, boxed_classes=classes, n_bootstrap=0, map_info={"stage": 0}
    )
    assert entry["map"] == {"grid": "16 x 16", "stage": 0}
    assert np.mean(entry["localization"]["eval"]["iou"]["macro"]) > 0.9

    # Per-class tuning is the same freedom, and picks the same stage.
    _, per_class = select_stage(predictions, "teacher Grad-CAM", classes, per_class=True)
    assert per_class["stage"] == 0 and per_class["per_class"]

    # Several families at once (two teachers), each with its own choice; the report's map_info follows.
    from clarity_hf.evaluation.selection import select_stages

    two = dict(predictions)
    two["B Grad-CAM [stage 0]"] = predictions["teacher Grad-CAM [stage 1]"]  # here stage 0 is the noisy one
    two["B Grad-CAM [stage 1]"] = predictions["teacher Grad-CAM [stage 0]"]
    selected, info = select_stages(two, classes, reference_grid=(8, 8))
    assert list(selected) == ["teacher Grad-CAM", "other", "B Grad-CAM"]
    assert info["teacher Grad-CAM"]["stage"] == 0 and info["B Grad-CAM"]["stage"] == 1
    assert info["B Grad-CAM"]["stage_selection"]["grid"] == "16 x 16"
    # Without a tune half nothing can be localised: the last stage is kept and said to be unselected.
    untuned = {name: dataclasses.replace(pred, box_splits=[""] * n) for name, pred in predictions.items()}
    selected, info = select_stages(untuned, classes)
    assert list(selected) == ["teacher Grad-CAM", "other"]
    assert (
        info["teacher Grad-CAM"]["stage"] == 1
        and info["teacher Grad-CAM"]["stage_selection"]["selected_on"] is None
    )
    assert selected["teacher Grad-CAM"] is untuned["teacher Grad-CAM [stage 1]"]
