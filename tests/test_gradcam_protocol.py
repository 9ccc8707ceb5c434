# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""The teacher's Grad-CAM computed only where the localization protocol reads it (the boxed classes of each boxed
image; every stage on the tune half, the chosen stage on the eval half; CAM from the same forward pass) gives the
same maps, stage choice and numbers as the full computation (every class, every stage, every row)."""

import numpy as np
import pytest
import torch
from test_baselines import tiny_teacher

from clarity_hf.baselines import GradCAM, teacher_stages
from clarity_hf.configuration_clarity import NIH_BOXED_PATHOLOGIES, NIH_PATHOLOGIES
from clarity_hf.data.synthetic import build_synthetic_cxr
from clarity_hf.evaluation.run import (
    _read_classes,
    build_processor,
    evaluate_predictions,
    figure_rows,
    heatmap_methods,
    logits_methods,
    predict_split,
    save_claims_figure,
    save_figure,
)
from clarity_hf.evaluation.selection import select_stages


class Counter:
    """Counts the teacher's forward passes (images) and the backward passes (autograd.grad calls)."""

    def __init__(self, teacher, monkeypatch):
        self.images, self.backward = 0, 0
        # On the base model: CAM calls it directly, Grad-CAM through the classifier.
        teacher.convnextv2.register_forward_hook(lambda module, inputs, output: self._forward(inputs))
        grad = torch.autograd.grad

        def counted(*args, **kwargs):
            self.backward += 1
            return grad(*args, **kwargs)

        monkeypatch.setattr(torch.autograd, "grad", counted)

    def _forward(self, inputs):
        self.images += len(inputs[0]) if inputs else 0

    def reset(self):
        self.images, self.backward = 0, 0


def test_gradcam_read_mask_computes_only_the_read_maps():
    teacher = tiny_teacher()
    torch.manual_seed(1)
    pixel_values = torch.randn(3, 3, 64, 64)
    cam = GradCAM(teacher, teacher_stages(teacher))
    full = cam(pixel_values)
    read = torch.zeros(3, 14, dtype=torch.bool)
    read[0, 2] = read[1, 2] = read[2, 9] = True
    calls = []
    grad = torch.autograd.grad
    try:
        torch.autograd.grad = lambda *a, **k: calls.append(1) or grad(*a, **k)
        part = cam(pixel_values, read=read)
    finally:
        torch.autograd.grad = grad
    assert len(calls) == 2  # one backward pass per class some image reads
    for full_maps, maps in zip(full.layer_heatmaps, part.layer_heatmaps):
        assert torch.equal(full_maps[read], maps[read])
        assert torch.isnan(maps[~read]).all()
    assert torch.equal(full.logits, part.logits)
    # The vectorised alternative gives the same maps up to float rounding.
    batched = GradCAM(teacher, teacher_stages(teacher), batched_gradients=True)(pixel_values, read=read)
    for full_maps, maps in zip(full.layer_heatmaps, batched.layer_heatmaps):
        assert torch.allclose(full_maps[read], maps[read], atol=1e-5)
    with pytest.raises(ValueError, match="read must be"):
        cam(pixel_values, read=torch.ones(2, 14, dtype=torch.bool))


def test_protocol_reads_give_the_full_computations_numbers(tmp_path, monkeypatch):
    test = build_synthetic_cxr(48, 16, 48, image_size=64, seed=3, num_proc=1)["test"]
    boxed = np.asarray([bool(b) for b in test["boxes"]])
    splits = np.asarray([s or "" for s in test["box_split"]])
    tune, evaluated = boxed & (splits == "tune"), boxed & (splits == "eval")
    assert tune.sum() >= 3 and evaluated.sum() >= 3 and (~boxed).sum() >= 3
    read = _read_classes(test["boxes"], NIH_PATHOLOGIES)
    assert (read.sum(axis=1)[boxed] >= 1).all() and read.sum() < 14 * boxed.sum()

    teacher = tiny_teacher()
    counter = Counter(teacher, monkeypatch)
    processor = build_processor(64)
    methods = heatmap_methods(teacher, "convnextv2", gradcam_stages=True)
    full = predict_split(methods, test, processor, batch_size=20)  # every class, stage and row
    assert counter.images == len(test)  # CAM from Grad-CAM's forward pass
    full, full_info = select_stages(full, NIH_PATHOLOGIES, reference_grid=(8, 8))

    counter.reset()
    restricted = predict_split(
        methods, test, processor, batch_size=20, logits_only=logits_methods(teacher, "convnextv2")
    )
    assert counter.backward == read[tune].sum()  # every stage from one backward pass per read class
    assert counter.images == len(test) - evaluated.sum()
    waiting = restricted["teacher Grad-CAM [stage 0]"]
    assert np.isnan(waiting.heatmaps[evaluated]).all() and np.isnan(waiting.logits[evaluated]).all()
    with pytest.raises(ValueError, match="select_stages"):
        evaluate_predictions(restricted["teacher CAM"], NIH_PATHOLOGIES)
    restricted, info = select_stages(restricted, NIH_PATHOLOGIES, reference_grid=(8, 8))
    # The eval half at the chosen stage only, read classes only, CAM from the same forward pass.
    assert counter.backward == read[boxed].sum()
    assert counter.images == len(test)
    assert info == full_info and list(restricted) == list(full)

    for name in ("teacher Grad-CAM", "teacher CAM"):
        a, b = full[name], restricted[name]
        assert np.array_equal(a.heatmaps[read], b.heatmaps[read]), name
        assert np.allclose(a.logits, b.logits, atol=1e-5), name
        if name == "teacher Grad-CAM":
            unread = ~read & boxed[:, None]
            assert np.isnan(b.heatmaps[unread]).all() and np.isnan(b.heatmaps[~boxed]).all()
        else:  # CAM is read in full where computed per image (boxed rows), from the batch pass elsewhere
            assert np.array_equal(a.heatmaps[boxed], b.heatmaps[boxed])
        first = evaluate_predictions(a, NIH_PATHOLOGIES, n_bootstrap=20)
        second = evaluate_predictions(b, NIH_PATHOLOGIES, n_bootstrap=20)
        assert first["localization"] == second["localization"], name
        assert first["classification"]["mean_auroc"] == pytest.approx(second["classification"]["mean_auroc"])

    # The claims figure computes the maps it shows (its images' claimed classes), the same as the full computation's;
    # the overlay grid draws only computed maps.
    gradcam = restricted["teacher Grad-CAM"]
    rows = figure_rows(gradcam, 3)
    boxed_classes = [NIH_PATHOLOGIES.index(n) for n in NIH_BOXED_PATHOLOGIES]
    claimed = np.zeros((len(rows), 14), dtype=bool)
    claimed[:, boxed_classes] = True  # thresholds 0: every boxed class is claimed
    assert np.isnan(gradcam.heatmaps[rows][claimed]).any()
    before = gradcam.heatmaps.copy()
    assert save_figure(tmp_path / "overlays.png", test, gradcam, NIH_PATHOLOGIES, max_images=3) is not None
    assert np.array_equal(before, gradcam.heatmaps, equal_nan=True)
    thresholds = dict.fromkeys(NIH_BOXED_PATHOLOGIES, 0.0)
    path = save_claims_figure(
        tmp_path / "claims.png", test, gradcam, NIH_PATHOLOGIES, thresholds, max_images=3
    )
    assert path is not None
    shown = gradcam.heatmaps[rows][claimed]
    assert not np.isnan(shown).any()
    assert np.array_equal(shown, full["teacher Grad-CAM"].heatmaps[rows][claimed])
