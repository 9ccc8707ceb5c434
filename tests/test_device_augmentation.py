# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""`augment_on: device`: loader workers decode to uint8 and draw the parameters; `BatchAugmenter` warps the batch.

Tolerance against the CPU path. The CPU path resamples twice (PIL crop-resize, then PIL rotation of the resized
image, both bilinear); the device path samples the source once through the composed matrix. On a smooth
X-ray-like image at the model's side the two differ by a fraction of a gray level on average; the largest
differences are single pixels on sharp edges, where one interpolation against two matters most. So: mean absolute
difference below 0.005 and every pixel within 0.15 on the [0, 1] gray scale (measured: mean ~0.002, max ~0.1 on
real 512 X-rays), and the parameters (what the two paths share) equal exactly.
"""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from training_helpers import checkpoint_weights, tiny_config

from clarity_hf.data.device_augment import BatchAugmenter
from clarity_hf.data.transforms import ClarityTransform, build_processor, source_batch
from clarity_hf.training import train
from clarity_hf.training.checkpointing import list_checkpoints

SIZE = 96


def _png(array: np.ndarray) -> dict:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def _xray(size: int = SIZE, seed: int = 0) -> np.ndarray:
    """A smooth chest-like 8-bit image: two dark lung fields in a bright body, with mild noise."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    body = 0.75 - 0.3 * ((xx - 0.5) ** 2 + (yy - 0.5) ** 2)
    lungs = np.exp(-(((xx - 0.32) / 0.12) ** 2 + ((yy - 0.5) / 0.25) ** 2))
    lungs += np.exp(-(((xx - 0.68) / 0.12) ** 2 + ((yy - 0.5) / 0.25) ** 2))
    noise = np.random.default_rng(seed).normal(0, 0.01, (size, size))
    return (np.clip(body - 0.45 * lungs + noise, 0, 1) * 255).round().astype(np.uint8)


def _lung_mask(size: int = SIZE) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / size
    inside = (((xx - 0.32) / 0.12) ** 2 + ((yy - 0.5) / 0.25) ** 2 < 1) | (
        ((xx - 0.68) / 0.12) ** 2 + ((yy - 0.5) / 0.25) ** 2 < 1
    )
    return (inside * 255).astype(np.uint8)


def _augmenter(transform: ClarityTransform) -> BatchAugmenter:
    return BatchAugmenter.like(transform)


def _device(transform, examples):
    batch = source_batch(examples)
    return _augmenter(transform)(
        batch["source"], batch["source_size"], batch["augment"], batch.get("source_mask")
    )


def _gray(pixels: torch.Tensor, transform: ClarityTransform) -> torch.Tensor:
    """Normalised (.., 3, S, S) -> the [0, 1] gray of channel 0."""
    return pixels[..., 0, :, :] * transform.std[0, 0, 0] + transform.mean[0, 0, 0]


def test_worker_decodes_uint8_and_draws_the_cpu_paths_parameters():
    transform = ClarityTransform(SIZE, train=True, seed=7, brightness=0.2, contrast=0.2)
    item = transform.source_one(_png(_xray()), rng=transform.sample_rng(3, 11))
    assert item["source"].dtype == torch.uint8 and torch.equal(item["source"], torch.from_numpy(_xray()))
    # The same generator, drawn in the CPU path's order: geometry, then brightness, then contrast.
    rng = transform.sample_rng(3, 11)
    box, angle = transform.sample_geometry(SIZE, SIZE, rng)
    brightness = rng.uniform(0.8, 1.2)
    contrast = rng.uniform(0.8, 1.2)
    assert item["augment"].tolist() == [*box, angle, brightness, contrast]
    assert angle != 0 and box != (0, 0, SIZE, SIZE)


def test_same_parameters_give_the_cpu_paths_image_within_interpolation_tolerance():
    transform = ClarityTransform(SIZE, train=True, seed=1, brightness=0.2, contrast=0.2, rotation=10)
    image = _png(_xray())
    cpu, device = [], []
    for index in range(8):
        cpu.append(transform.transform_one(image, rng=transform.sample_rng(0, index))["pixel_values"])
        device.append(transform.source_one(image, rng=transform.sample_rng(0, index)))
    pixels, masks = _device(transform, device)
    assert masks is None and pixels.shape == (8, 3, SIZE, SIZE) and pixels.dtype == torch.float32
    difference = (_gray(pixels, transform) - _gray(torch.stack(cpu), transform)).abs()
    assert difference.mean() < 0.005, difference.mean()
    assert difference.max() < 0.15, difference.max()
    # A wrong rotation sign or crop offset would break the tolerance: the mirror angle is far off.
    flipped = source_batch(device)
    flipped["augment"][:, 4] *= -1
    wrong, _ = _augmenter(transform)(flipped["source"], flipped["source_size"], flipped["augment"])
    assert (_gray(wrong, transform) - _gray(torch.stack(cpu), transform)).abs().mean() > 0.01


def test_sources_of_different_sizes_share_a_batch():
    transform = ClarityTransform(SIZE, train=True, seed=2)
    small, large = _png(_xray(80)), _png(_xray(SIZE + 20, seed=1))
    examples = [
        transform.source_one(img, rng=transform.sample_rng(0, i)) for i, img in enumerate((small, large))
    ]
    pixels, _ = _device(transform, examples)
    for i, image in enumerate((small, large)):
        cpu = transform.transform_one(image, rng=transform.sample_rng(0, i))["pixel_values"]
        difference = (_gray(pixels[i], transform) - _gray(cpu, transform)).abs()
        assert difference.mean() < 0.01 and difference.max() < 0.2, (i, difference.mean(), difference.max())


@pytest.mark.parametrize("bits", [8, 16])
def test_no_augmentation_gives_the_processors_pixels_exactly(bits):
    array = _xray() if bits == 8 else (_xray().astype(np.uint16) * 257 - 1000).clip(0).astype(np.uint16)
    image = _png(array)
    transform = ClarityTransform(SIZE, train=False, seed=0)
    item = transform.source_one(image)
    assert item["source"].dtype == (torch.uint8 if bits == 8 else torch.float32)
    assert item["augment"].tolist() == [0, 0, SIZE, SIZE, 0, 1, 1]
    pixels, _ = _device(transform, [item])
    expected = build_processor(SIZE)(images=Image.open(io.BytesIO(image["bytes"])), return_tensors="pt")
    assert torch.equal(pixels, expected["pixel_values"])


def test_masks_follow_the_image():
    """A mask drawn from the image's own dark lung fields stays on them after the warp, and agrees with the CPU
    path's (nearest) mask except on a thin boundary."""
    transform = ClarityTransform(SIZE, train=True, seed=4, brightness=0, contrast=0, rotation=10)
    image, mask = _png(_xray()), _png(_lung_mask())
    device = [transform.source_one(image, mask, rng=transform.sample_rng(0, i)) for i in range(6)]
    pixels, masks = _device(transform, device)
    assert masks.shape == (6, 1, SIZE, SIZE) and set(masks.unique().tolist()) <= {0.0, 1.0}
    gray = _gray(pixels, transform)
    for i in range(6):
        inside, outside = gray[i][masks[i, 0] == 1], gray[i][(masks[i, 0] == 0) & (gray[i] > 0)]
        assert inside.mean() < outside.mean() - 0.15, (inside.mean(), outside.mean())
        cpu = transform.transform_one(image, mask, rng=transform.sample_rng(0, i))["anatomy_masks"]
        assert (cpu != masks[i]).float().mean() < 0.01
    # Moving the mask and not the image (an identity warp of the mask) would not agree.
    assert not torch.equal(masks[0, 0], torch.from_numpy(_lung_mask() > 127).float())


def test_invalid_image_is_dropped_by_the_collator():
    from clarity_hf.training.data import train_collator

    transform = ClarityTransform(SIZE, train=True, seed=0)
    good = transform.source_one(_png(_xray()), rng=transform.sample_rng(0, 0))
    bad = transform.source_one(
        {"bytes": b"not a png", "path": None}, name="bad.png", rng=transform.sample_rng(0, 1)
    )
    assert bad["valid"] is False and bad["problem"] == "corrupt_image"
    for item, labels in ((good, [1.0]), (bad, [0.0])):
        item["labels"] = torch.tensor(labels)
    batch = train_collator()([good, bad])
    assert batch["source"].shape == (1, SIZE, SIZE) and batch["augment"].shape == (1, 7)
    assert len(batch["problems"]) == 1 and batch["problems"][0].startswith("corrupt_image: bad.png")


@pytest.mark.slow
def test_resume_mid_epoch_is_bit_identical_with_device_augmentation(tmp_path):
    """Checkpoint 4 is in the middle of epoch 0 (6 batches an epoch): resuming from it gives the final weights of
    the uninterrupted run, bit for bit."""
    options = dict(
        augment=True,
        augment_on="device",
        augment_brightness=0.2,
        augment_contrast=0.2,
        num_train_epochs=2,
        checkpointing_steps=4,
        save_total_limit=10,
    )
    reference = tmp_path / "reference"
    train(tiny_config(reference, **options))
    final = list_checkpoints(reference)[-1]
    assert final.name == "checkpoint-12"
    resumed = tmp_path / "resumed"
    shutil.copytree(reference, resumed)
    for checkpoint in list_checkpoints(resumed):
        if int(checkpoint.name.split("-")[1]) > 4:
            shutil.rmtree(checkpoint)
    assert [p.name for p in list_checkpoints(resumed)] == ["checkpoint-4"]
    result = train(tiny_config(resumed, resume_from_checkpoint="latest", **options))
    assert result.global_step == 12
    weights_a, weights_b = checkpoint_weights(final), checkpoint_weights(resumed / "checkpoints" / final.name)
    assert weights_a.keys() == weights_b.keys()
    for key in weights_a:
        assert torch.equal(weights_a[key], weights_b[key]), key
    # The device path did run: the CPU path trains to other weights (other interpolation).
    cpu = tmp_path / "cpu"
    train(tiny_config(cpu, **{**options, "augment_on": "cpu"}))
    assert any(
        not torch.equal(weights_a[key], value)
        for key, value in checkpoint_weights(list_checkpoints(cpu)[-1]).items()
    )


def test_a_batch_mixing_8_and_16_bit_sources_gives_each_images_own_pixels():
    """8-bit sources travel as uint8, 16-bit ones as float gray; a batch holding both is warped as float, and each
    image comes out as it does alone."""
    transform = ClarityTransform(SIZE, train=True, seed=5)
    eight = _png(_xray())
    sixteen = _png((_xray(SIZE + 8, seed=2).astype(np.uint16) * 257).astype(np.uint16))
    items = [
        transform.source_one(img, rng=transform.sample_rng(1, i)) for i, img in enumerate((eight, sixteen))
    ]
    assert [item["source"].dtype for item in items] == [torch.uint8, torch.float32]
    together, _ = _device(transform, items)
    for i, item in enumerate(items):
        alone, _ = _device(transform, [item])
        assert torch.allclose(together[i], alone[0], atol=1e-5), i
