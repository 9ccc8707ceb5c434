# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Heatmap overlays with boxes on chest X-rays (numpy + PIL only, no matplotlib, no torch).

The one home of the drawing primitives used by the demo Space and by the evaluation figures
(`clarity_hf.evaluation.figures`): [`jet_colormap`], [`overlay_heatmap`] (a colour-mapped heatmap blended over the
X-ray at the X-ray's own size, with optional boxes) and [`draw_boxes`]; [`annotated_overlay`] is the reader-facing
figure of `clarity-predict --overlays` (class, probability, threshold, colour scale, "research use only").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["annotated_overlay", "decode_for_display", "draw_boxes", "jet_colormap", "overlay_heatmap"]

BoxLike = Mapping | Sequence[float]

RESEARCH_USE = "RESEARCH USE ONLY - not for diagnosis"
NO_FINDING = "no finding above threshold"


def jet_colormap(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] of any shape -> uint8 RGB of shape (*values.shape, 3), the classic piecewise-linear 'jet'
    map (dark blue -> blue -> cyan -> yellow -> red -> dark red)."""
    x = np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0)[..., None]
    centres = np.array([0.75, 0.5, 0.25], dtype=np.float32)  # red, green, blue peak positions
    rgb = np.clip(1.5 - np.abs(4.0 * (x - centres)), 0.0, 1.0)
    return np.round(rgb * 255.0).astype(np.uint8)


def decode_for_display(image_processor, image) -> Image.Image:
    """Any input the `ClarityImageProcessor` reads (PNG/JPEG/DICOM path, PIL image, array) -> the 8-bit grayscale
    image the model sees before resizing and normalisation, at its original size (DICOM windowing, MONOCHROME1
    inversion and bit-depth scaling exactly as the processor applies them)."""
    pixels = image_processor(images=image, do_resize=False, do_normalize=False, return_tensors="np")[
        "pixel_values"
    ]
    gray = np.clip(np.asarray(pixels[0, 0], dtype=np.float32), 0.0, 1.0)
    return Image.fromarray(np.round(gray * 255).astype(np.uint8), mode="L")


def _box_coordinates(box: BoxLike) -> tuple[float, float, float, float]:
    if isinstance(box, Mapping):
        box = box.get("box", box)
        return float(box["xmin"]), float(box["ymin"]), float(box["xmax"]), float(box["ymax"])
    x0, y0, x1, y1 = (float(v) for v in box)
    return x0, y0, x1, y1


def draw_boxes(
    image: Image.Image,
    boxes: np.ndarray | Iterable[BoxLike],
    color: tuple[int, int, int],
    label: str | None = None,
    width: int = 2,
    scale: float = 1.0,
    offset: tuple[float, float] = (0.0, 0.0),
) -> Image.Image:
    """Draw boxes in place and return the image.

    `boxes` are xyxy (x1, y1 exclusive) as a (K, 4) array or sequences, or the pipeline's
    {"box": {"xmin", "ymin", "xmax", "ymax"}} dicts; each is mapped by `scale` then `offset` and its outline drawn
    `width` pixels wide inside the box. `label` is written at each box's top-left corner in PIL's default font.
    """
    if isinstance(boxes, np.ndarray):
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default() if label else None
    for box in boxes:
        x0, y0, x1, y1 = _box_coordinates(box)
        left, top = x0 * scale + offset[0], y0 * scale + offset[1]
        right, bottom = x1 * scale + offset[0] - 1, y1 * scale + offset[1] - 1
        draw.rectangle(
            [round(left), round(top), round(max(right, left)), round(max(bottom, top))],
            outline=color,
            width=width,
        )
        if label:
            draw.text((round(left) + width + 1, round(top) + width), label, fill=color, font=font)
    return image


def overlay_heatmap(
    image: Image.Image | np.ndarray,
    heatmap: np.ndarray,
    boxes: Iterable[BoxLike] = (),
    alpha: float = 0.45,
    box_color: tuple[int, int, int] = (0, 255, 0),
    line_width: int | None = None,
    weighted_alpha: bool = True,
) -> Image.Image:
    """Blend `heatmap` (H', W') in [0, 1] (clipped; NaN as 0) over `image` in the jet colormap and draw `boxes`.

    The heatmap is resized (PIL bilinear) to the image when sizes differ. With `weighted_alpha=True` (the Space's
    view) the opacity is `alpha * heatmap`, so where the heatmap is 0 the X-ray shows through unchanged; with
    `weighted_alpha=False` (the evaluation figures) it is `alpha` everywhere:
    `out = (1 - a) * image + a * jet(heatmap)`. `boxes` are xyxy in the image's pixels or the pipeline's
    {"box": {"xmin", ...}} dicts, drawn with [`draw_boxes`] in `box_color`, `line_width` pixels wide (default:
    1/200 of the image's shorter side, at least 1). Returns an RGB image of the input image's size.
    """
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    base = image.convert("RGB")
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.ndim != 2:
        raise ValueError(f"overlay_heatmap expects a 2-D heatmap, got shape {heatmap.shape}")
    if heatmap.shape != (base.height, base.width):
        heatmap = np.asarray(
            Image.fromarray(heatmap, mode="F").resize((base.width, base.height), Image.BILINEAR),
            dtype=np.float32,
        )
    heatmap = np.clip(np.nan_to_num(heatmap), 0.0, 1.0)
    weight = (alpha * heatmap)[..., None] if weighted_alpha else alpha
    blended = (1.0 - weight) * np.asarray(base, dtype=np.float32) + weight * jet_colormap(heatmap).astype(
        np.float32
    )
    result = Image.fromarray(np.round(blended).clip(0, 255).astype(np.uint8), mode="RGB")
    boxes = list(boxes)
    if boxes:
        width = line_width or max(1, round(min(base.size) / 200))
        draw_boxes(result, boxes, box_color, width=width)
    return result


def _font(size: int) -> ImageFont.ImageFont:
    """PIL's default font at `size` pixels (a scalable font since Pillow 10.1; the fixed bitmap font before)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def annotated_overlay(
    image: Image.Image | np.ndarray,
    heatmap: np.ndarray,
    class_name: str,
    probability: float,
    threshold: float,
    boxes: Iterable[BoxLike] = (),
) -> Image.Image:
    """The overlay a reader can interpret: the X-ray with `class_name`'s heatmap (jet, see [`overlay_heatmap`]) and
    boxes, a colour bar on the right, and a caption band below naming the class, its probability and the threshold,
    with "research use only".

    A class whose `probability` is under `threshold` gets no heatmap and no boxes (a map is normalised per image, so
    it would paint a confident-looking hot spot for an unlikely finding): the X-ray is shown as it is and the caption
    says "no finding above threshold". The X-ray keeps its own pixels and size at the top left of the result, which
    is `(width + bar, height + band)` pixels.
    """
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    above = float(probability) >= float(threshold)
    shown = overlay_heatmap(image, heatmap, boxes=boxes) if above else image.convert("RGB")
    width, height = shown.size
    text_size = max(12, round(min(width, height) / 40))
    font = _font(text_size)
    band = 3 * text_size + 4 * max(2, text_size // 3)
    bar = 4 * text_size
    pad = max(2, text_size // 3)
    if above:
        caption = f"{class_name}: p = {probability:.2f} (threshold {threshold:.2f})"
    else:
        caption = f"{NO_FINDING} {threshold:.2f} (top: {class_name}, p = {probability:.2f})"
    lines = [
        (caption, (255, 255, 255)),
        (
            "colour: where the model looked (scaled per image)" if above else "no heatmap shown",
            (200, 200, 200),
        ),
        (RESEARCH_USE, (255, 200, 0)),
    ]
    text_width = max(font.getlength(text) for text, _ in lines) + 2 * pad
    canvas = Image.new("RGB", (max(width + bar, round(text_width)), height + band), (0, 0, 0))
    canvas.paste(shown, (0, 0))
    draw = ImageDraw.Draw(canvas)
    if above:
        # the colour scale of the map: high at the top, low at the bottom
        top, bottom = pad + text_size + pad, height - pad - text_size - pad
        ramp = np.linspace(1.0, 0.0, max(bottom - top, 2), dtype=np.float32)
        colours = jet_colormap(ramp)[:, None, :].repeat(bar // 2, axis=1)
        canvas.paste(Image.fromarray(colours, mode="RGB"), (width + bar // 4, top))
        draw.text((width + pad, pad), "high", fill=(255, 255, 255), font=font)
        draw.text((width + pad, bottom + pad), "low", fill=(255, 255, 255), font=font)
    for number, (text, colour) in enumerate(lines):
        draw.text((pad, height + pad + number * (text_size + pad)), text, fill=colour, font=font)
    return canvas
