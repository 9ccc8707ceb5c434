# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""The bf16 inference path on CPU: autocast and bfloat16 weights agree with fp32 and give the same boxes.

Measured on the random-weights tiny model (seed 0, 4 real chest X-rays from ../shared; a clone without it uses the
two PNG fixtures and their mirror images): max |sigmoid(bf16) - sigmoid(fp32)|
is 0.0003 with autocast and 0.0006 with bf16 weights (0.001 / 0.002 for CLARiTy-S/16-224); of the fp32 boxes
(threshold 0.5, components of at least 1% of the image) 98% have a bf16 box with IoU > 0.9.
"""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clarity_hf import ClarityConfig, ClarityForMultiLabelLocalization
from clarity_hf.image_processing_clarity import heatmap_to_boxes, upsample_heatmaps

SHARED = Path(os.environ.get("CLARITY_SHARED", Path(__file__).resolve().parents[2] / "shared"))
REAL_IMAGES = [
    SHARED / "realdata/nih/00000001_000.png",
    SHARED / "realdata/tbx11k/imgs/health/h0001.png",
    SHARED / "realdata/tbx11k/imgs/tb/tb0005.png",
    SHARED / "realdata/tbx11k/imgs/tb/tb0007.png",
]
# Without ../shared (a user's clone): the repository's two PNG fixtures and their mirror images.
FIXTURES = Path(__file__).resolve().parent / "fixtures"
FIXTURE_IMAGES = [FIXTURES / "00000001_000.png", FIXTURES / "tbx11k_tb0005.png"]
SIGMOID_TOLERANCE = 0.02
BOX_THRESHOLD = 0.5
BOX_IOU = 0.9


def load_images(size: int) -> torch.Tensor:
    shared = all(path.is_file() for path in REAL_IMAGES)
    images = []
    for path in REAL_IMAGES if shared else FIXTURE_IMAGES:
        gray = Image.open(path).convert("L").resize((size, size), Image.BILINEAR)
        array = (np.asarray(gray, dtype=np.float32) / 255.0 - 0.5) / 0.25
        images.append(torch.from_numpy(array)[None].repeat(3, 1, 1))
        if not shared:
            images.append(images[-1].flip(-1))
    return torch.stack(images)


def build(seed: int = 0) -> ClarityForMultiLabelLocalization:
    torch.manual_seed(seed)
    return ClarityForMultiLabelLocalization(ClarityConfig.from_preset("clarity-tiny")).eval()


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    intersection = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - intersection
    return float(intersection / union)


def matched_ious(reference: torch.Tensor, other: torch.Tensor, size: int) -> np.ndarray:
    """For every fp32 box, the best IoU with a box of the same (image, class) from the other heatmaps."""
    reference = upsample_heatmaps(reference, (size, size))
    other = upsample_heatmaps(other, (size, size))
    min_area = size * size // 100
    ious = []
    for image in range(reference.shape[0]):
        for label in range(reference.shape[1]):
            ref_boxes, _ = heatmap_to_boxes(reference[image, label].numpy(), BOX_THRESHOLD, min_area=min_area)
            boxes, _ = heatmap_to_boxes(other[image, label].numpy(), BOX_THRESHOLD, min_area=min_area)
            ious += [max((box_iou(r, b) for b in boxes), default=0.0) for r in ref_boxes]
    return np.asarray(ious)


@pytest.fixture(scope="module")
def fp32_and_bf16():
    model = build()
    pixel_values = load_images(model.config.image_size)
    with torch.no_grad():
        reference = model(pixel_values)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = model(pixel_values)
        weights_bf16 = build().to(torch.bfloat16)(pixel_values)
    return model, pixel_values, reference, {"autocast": autocast, "bf16 weights": weights_bf16}


@pytest.mark.parametrize("path", ["autocast", "bf16 weights"])
def test_bf16_logits_agree_with_fp32(fp32_and_bf16, path):
    _, _, reference, outputs = fp32_and_bf16
    output = outputs[path]
    difference = (torch.sigmoid(output.logits.float()) - torch.sigmoid(reference.logits)).abs().max()
    assert difference < SIGMOID_TOLERANCE, f"{path}: max sigmoid difference {difference:.4f}"
    assert output.heatmaps.dtype == torch.float32
    assert output.heatmaps.min() >= 0 and output.heatmaps.max() <= 1


@pytest.mark.parametrize("path", ["autocast", "bf16 weights"])
def test_bf16_heatmaps_give_the_same_boxes(fp32_and_bf16, path):
    model, _, reference, outputs = fp32_and_bf16
    ious = matched_ious(reference.heatmaps, outputs[path].heatmaps, model.config.image_size)
    assert len(ious) >= 20, "too few boxes to compare"
    assert np.median(ious) == 1.0
    assert (ious > BOX_IOU).mean() >= 0.95, f"{path}: {(ious > BOX_IOU).mean():.2%} of boxes matched"


def test_perturbed_heatmaps_fail_the_box_check(fp32_and_bf16):
    """The box comparison can fail: heatmaps of a different model do not match."""
    model, pixel_values, reference, _ = fp32_and_bf16
    with torch.no_grad():
        other = build(seed=1)(pixel_values)
    ious = matched_ious(reference.heatmaps, other.heatmaps, model.config.image_size)
    assert (ious > BOX_IOU).mean() < 0.95


def test_autocast_losses_and_outputs_are_float32(fp32_and_bf16):
    model, pixel_values, _, _ = fp32_and_bf16
    labels = torch.zeros(pixel_values.shape[0], model.config.num_labels)
    labels[:, 1] = 1
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(pixel_values, labels=labels, teacher_logits=torch.randn_like(labels))
    for name in ("loss", "classification_loss", "distillation_loss", "foreground_loss"):
        assert getattr(output, name).dtype == torch.float32, name
    assert output.heatmaps.dtype == torch.float32
    assert output.logits.dtype == torch.float32


def test_autocast_orthogonal_loss_is_float32(fp32_and_bf16):
    model, pixel_values, _, _ = fp32_and_bf16
    labels = torch.zeros(pixel_values.shape[0], model.config.num_labels)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(pixel_values, labels=labels)
    assert output.orthogonal_loss.dtype == torch.float32


def test_from_pretrained_bfloat16(tmp_path, fp32_and_bf16):
    model, pixel_values, reference, _ = fp32_and_bf16
    model.save_pretrained(tmp_path)
    loaded = ClarityForMultiLabelLocalization.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    assert loaded.clarity.embeddings.class_tokens.dtype == torch.bfloat16
    labels = torch.ones(pixel_values.shape[0], model.config.num_labels)
    with torch.no_grad():
        output = loaded(pixel_values, labels=labels)  # float32 pixels are cast to the weights' dtype
    # With bf16 weights the logits are bfloat16; heatmaps and losses are float32.
    assert output.logits.dtype == torch.bfloat16
    assert output.heatmaps.dtype == torch.float32 and output.loss.dtype == torch.float32
    difference = (torch.sigmoid(output.logits.float()) - torch.sigmoid(reference.logits)).abs().max()
    assert difference < SIGMOID_TOLERANCE
