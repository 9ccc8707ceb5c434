# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Batched augmentation where the model runs (`augment_on: device`): the loader worker only decodes, the training
step warps the whole batch.

Split of the work. A worker decodes an image to its raw 8-bit gray values (`uint8`, no float conversion, no
resize) and draws the sample's augmentation parameters from its `(seed, epoch, index)` generator exactly as the
CPU path draws them (`ClarityTransform.sample_params`): the crop box, the angle, the brightness and contrast
factors. Those seven numbers travel with the uint8 image. `BatchAugmenter` then builds one affine matrix per image
(random resized crop followed by rotation) and samples the batch with `torch.nn.functional.affine_grid` /
`grid_sample`, applies the intensity jitter and normalises: one kernel launch per operation for the batch.

Why torch and not kornia: the warp is one 2x3 matrix per image, which `affine_grid` / `grid_sample` take as is;
kornia would add a dependency (and its own version pins) for a wrapper over the same two calls.

Agreement with the CPU path (`ClarityTransform.transform_one`). The CPU path crop-resizes with PIL, then rotates
the resized image (bilinear, zero fill). Here one bilinear sample of the source does both, and the CPU path's zero
fill is reproduced by zeroing each output pixel whose centre falls outside the rotated square, as PIL does. Two bilinear interpolations against one differ by a little
smoothing, so the two paths agree within interpolation tolerance, not bit for bit; PIL's antialiased downscale is not
reproduced, so sources should be at (or near) the model's side: the resized cache (`clarity_hf.data.cache`) is.
Without augmentation (identity box, no angle, factors 1) a source already at the model's side is not resampled,
and its pixels equal the processor's exactly: the uint8 -> [0, 1] table is the processor's own arithmetic.

Masks get the same matrices with nearest sampling and are zero outside the rotated square, as PIL's rotation of
the CPU path leaves them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

# The columns of a sample's parameter vector.
PARAM_NAMES = ("left", "top", "right", "bottom", "angle", "brightness", "contrast")
NUM_PARAMS = len(PARAM_NAMES)

# uint8 value -> the processor's float32 [0, 1] gray: `clarity_hf.xray_io` scales 8-bit data by halves in float64
# ((0.5 v - 0) / 127.5) and the processor casts to float32. For all 256 values that equals the float32 quotient
# v / 255 (checked at import and in the tests), which is what `unit_gray` computes: one division, no table lookup.
UINT8_TO_UNIT = torch.from_numpy(((0.5 * np.arange(256, dtype=np.float64)) / 127.5).astype(np.float32))
assert torch.equal(torch.arange(256, dtype=torch.float32) / 255, UINT8_TO_UNIT)


def unit_gray(source: torch.Tensor) -> torch.Tensor:
    """(..., H, W) uint8 raw gray or float [0, 1] gray -> float32 [0, 1] gray, on `source`'s device."""
    if source.dtype == torch.uint8:
        return source.float().div_(255)
    return source.float()


def pad_stack(images: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack (H_i, W_i) images into (B, H, W) (H, W the largest sides), each padded by repeating its last row and
    column (a border sample then sees the image's own edge, as PIL's resize does), and their (B, 2) sizes.
    Mixed uint8 / float images are stacked as float32 [0, 1] gray."""
    sizes = torch.tensor([tuple(image.shape[-2:]) for image in images], dtype=torch.long).reshape(-1, 2)
    if not images:
        return torch.zeros(0, 1, 1, dtype=torch.uint8), sizes
    if len({image.dtype for image in images}) > 1:
        images = [unit_gray(image) for image in images]
    height, width = (int(v) for v in sizes.max(dim=0).values)
    out = images[0].new_empty((len(images), height, width))
    for i, image in enumerate(images):
        h, w = image.shape
        out[i, :h, :w] = image
        out[i, h:, :w] = image[-1:, :]
        out[i, :, w:] = out[i, :, w - 1 : w]
    return out, sizes


class BatchAugmenter:
    """(B, H, W) sources + (B, 7) parameters -> (B, 3, S, S) normalised `pixel_values` and (B, 1, S, S) masks.

    Args:
        image_size: output side S.
        mean / std: per-channel normalisation (3 values each).
    """

    def __init__(self, image_size: int, mean: Sequence[float], std: Sequence[float]):
        self.image_size = int(image_size)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    @classmethod
    def like(cls, transform) -> BatchAugmenter:
        """The augmenter making the pixels `transform` (a `ClarityTransform`) makes: its side, mean and std."""
        return cls(transform.image_size, transform.mean.flatten().tolist(), transform.std.flatten().tolist())

    def matrices(self, params: torch.Tensor, sizes: torch.Tensor, canvas: tuple[int, int]):
        """The crop as (B, 2, 2) per-axis (scale, shift) from its square [-1, 1] to the padded source (normalised,
        align_corners=False), and the (B, 2, 3) rotations (output -> the crop's square): the source matrix of
        output pixel p is crop(rotation(p)), one affine map."""
        p = params.to(torch.float32 if params.device.type == "mps" else torch.float64)  # MPS has no float64
        left, top, right, bottom, angle = p[:, 0], p[:, 1], p[:, 2], p[:, 3], p[:, 4]
        height, width = canvas
        # PIL's rotate(angle) turns the image counter-clockwise on screen (y down): output (x, y) reads the crop
        # at (cos x - sin y, sin x + cos y) in the square's normalised coordinates.
        theta = torch.deg2rad(angle)
        cos, sin = torch.cos(theta), torch.sin(theta)
        zero = torch.zeros_like(cos)
        rotation = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
        # crop square [-1, 1] -> the box [left, right] x [top, bottom] (pixel edges) -> canvas normalised
        scale_x, shift_x = (right - left) / width, (left + right) / width - 1
        scale_y, shift_y = (bottom - top) / height, (top + bottom) / height - 1
        crop = torch.stack([torch.stack([scale_x, shift_x], 1), torch.stack([scale_y, shift_y], 1)], 1)
        return crop.float(), rotation.float()

    def warp(self, source: torch.Tensor, sizes: torch.Tensor, params: torch.Tensor, masks=None):
        """Geometry only: (B, S, S) float [0, 1] gray and, with `masks` ((B, H, W) uint8, 255 = inside), (B, S, S)
        float {0, 1} masks."""
        batch, size = source.shape[0], self.image_size
        gray = unit_gray(source)
        out_masks = None if masks is None else gray.new_zeros((batch, size, size))
        if batch == 0:
            return gray.new_zeros((0, size, size)), out_masks
        device = gray.device
        params, sizes = params.to(device), sizes.to(device)
        height, width = gray.shape[-2:]
        crop, rotations = self.matrices(params, sizes, (height, width))
        shape = (batch, 1, size, size)
        # One grid: the rotation's (output -> the crop's square), then the crop's per-axis scale and shift.
        square = F.affine_grid(rotations, shape, align_corners=False)
        grid = square * crop[:, None, None, :, 0] + crop[:, None, None, :, 1]
        out = F.grid_sample(gray[:, None], grid, mode="bilinear", padding_mode="border", align_corners=False)[
            :, 0
        ]
        # The CPU path rotates the resized crop with PIL, which fills a pixel whose centre falls outside the
        # square with zero (a hard edge, no blending): the same here.
        inside_square = square.abs().amax(dim=-1) < 1
        out = torch.where(inside_square, out.clamp_(0.0, 1.0), 0.0)
        # Identity geometry at the model's side: no resampling at all (the processor's pixels, exactly).
        identity = (
            (params[:, 0] == 0)
            & (params[:, 1] == 0)
            & (params[:, 2] == sizes[:, 1])
            & (params[:, 3] == sizes[:, 0])
            & (params[:, 4] == 0)
            & (sizes[:, 0] == size)
            & (sizes[:, 1] == size)
        )
        if identity.any():
            out[identity] = gray[identity, :size, :size]
        if masks is not None:
            inside = F.grid_sample(
                masks[:, None].to(device=device, dtype=torch.float32),
                grid,
                mode="nearest",
                padding_mode="border",
                align_corners=False,
            )[:, 0]
            out_masks = ((inside > 127) & inside_square).float()
        return out, out_masks

    def jitter(self, gray: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Brightness b then contrast c around the image's mean m, clamped to [0, 1], as the CPU path: with
        x = b * gray, (x - mean(x)) * c + mean(x) = gray * (b c) + b m (1 - c), one fused pass. Factors of 1 give
        gray * 1 + 0: the image bit for bit."""
        brightness = params[:, 5].to(gray).view(-1, 1, 1)
        contrast = params[:, 6].to(gray).view(-1, 1, 1)
        shift = brightness * gray.mean(dim=(-2, -1), keepdim=True) * (1 - contrast)
        return torch.addcmul(shift, gray, brightness * contrast).clamp_(0.0, 1.0)

    def normalise(self, gray: torch.Tensor) -> torch.Tensor:
        """(B, S, S) [0, 1] -> (B, 3, S, S) `(x - mean) / std`, the processor's arithmetic in float32."""
        mean, std = self.mean.to(gray.device), self.std.to(gray.device)
        return (gray[:, None] - mean) / std

    @torch.no_grad()
    def __call__(self, source, sizes, params, masks=None) -> tuple[torch.Tensor, torch.Tensor | None]:
        gray, out_masks = self.warp(source, sizes, params, masks)
        pixels = self.normalise(self.jitter(gray, params.to(gray.device)))
        return pixels, None if out_masks is None else out_masks[:, None]
