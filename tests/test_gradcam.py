# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Grad-CAM baseline: shapes, range, agreement with a hand-computed Grad-CAM, and both backward modes."""

import pytest
import torch
from transformers import ConvNextV2Config, ConvNextV2ForImageClassification

from clarity_hf.baselines.gradcam import GradCAM


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    config = ConvNextV2Config(depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 32, 64], num_labels=5, image_size=64)
    return ConvNextV2ForImageClassification(config).eval()


def reference_gradcam(model, pixel_values, index):
    """Grad-CAM written out with hooks and loss.backward(), the usual implementation."""
    store = {}
    layer = model.convnextv2.encoder.stages[-1]
    handle = layer.register_forward_hook(lambda module, inputs, output: store.setdefault("a", output))
    logits = model(pixel_values).logits
    handle.remove()
    activations = store["a"]
    activations.retain_grad()
    model.zero_grad()
    logits[:, index].sum().backward()
    weights = activations.grad.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * activations).sum(1)).detach()
    flat = cam.flatten(1)
    low, high = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - low) / (high - low).clamp_min(1e-8)).reshape(cam.shape)


@pytest.mark.parametrize("parameter_gradients", [False, True])
def test_gradcam_matches_reference(teacher, parameter_gradients):
    pixel_values = torch.randn(2, 3, 64, 64)
    output = GradCAM(teacher, parameter_gradients=parameter_gradients)(pixel_values, [0, 3, 4])
    assert output.heatmaps.shape == (2, 3, 2, 2)
    assert output.heatmaps.dtype == torch.float32
    assert output.class_indices == [0, 3, 4]
    assert output.heatmaps.min() >= 0 and output.heatmaps.max() <= 1
    for position, index in enumerate([0, 3, 4]):
        expected = reference_gradcam(teacher, pixel_values, index)
        torch.testing.assert_close(output.heatmaps[:, position], expected, atol=1e-5, rtol=1e-4)


def test_gradcam_batch_is_per_image(teacher):
    """Summing the class score over the batch gives each image its own map."""
    pixel_values = torch.randn(3, 3, 64, 64)
    batched = GradCAM(teacher)(pixel_values, [1]).heatmaps
    single = torch.cat([GradCAM(teacher)(pixel_values[i : i + 1], [1]).heatmaps for i in range(3)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-4)


def test_large_batches_are_explained_in_chunks_with_the_same_maps(teacher):
    """The graph kept for the backward passes grows with the batch: a batch over `max_batch_pixels` is explained
    in chunks (here 2 images of 64 x 64 each), with the maps, stages and logits of one pass."""
    stages = list(teacher.convnextv2.encoder.stages)
    pixel_values = torch.randn(5, 3, 64, 64)
    whole = GradCAM(teacher, stages, max_batch_pixels=10**9)(pixel_values, [0, 2])
    calls = []
    handle = teacher.register_forward_pre_hook(lambda module, args: calls.append(len(args[0])))
    try:
        chunked = GradCAM(teacher, stages, max_batch_pixels=2 * 64 * 64 + 5)(pixel_values, [0, 2])
    finally:
        handle.remove()
    assert calls == [2, 2, 1]
    torch.testing.assert_close(chunked.logits, whole.logits)
    assert chunked.class_indices == [0, 2] and len(chunked.layer_heatmaps) == 4
    for mine, theirs in zip(chunked.layer_heatmaps, whole.layer_heatmaps):
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(chunked.heatmaps, whole.heatmaps, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="max_batch_pixels"):
        GradCAM(teacher, max_batch_pixels=0)


def test_gradcam_all_classes_and_errors(teacher):
    pixel_values = torch.randn(1, 3, 64, 64)
    output = GradCAM(teacher)(pixel_values)
    assert output.heatmaps.shape == (1, 5, 2, 2) and output.logits.shape == (1, 5)
    with pytest.raises(ValueError, match="out of range"):
        GradCAM(teacher)(pixel_values, [5])
    with pytest.raises(ValueError, match="target layer"):
        GradCAM(torch.nn.Linear(3, 3))


def test_several_stages_with_the_graph_cut_give_the_uncut_maps():
    # Without parameter gradients the graph starts at the first target map; the later stages' maps must not change.
    torch.manual_seed(0)
    config = ConvNextV2Config(num_labels=5, depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 32, 64], image_size=64)
    model = ConvNextV2ForImageClassification(config).eval()
    stages = list(model.convnextv2.encoder.stages)
    pixel_values = torch.randn(2, 3, 64, 64)
    cut = GradCAM(model, stages, parameter_gradients=False)(pixel_values)
    full = GradCAM(model, stages, parameter_gradients=True)(pixel_values)
    assert [tuple(m.shape[-2:]) for m in cut.layer_heatmaps] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    for a, b in zip(cut.layer_heatmaps, full.layer_heatmaps):
        assert float(a.max()) > 0
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
