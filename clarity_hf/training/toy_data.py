# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""A minimal synthetic chest-X-ray-like data set for the training tests, used only when the data package's
generator (`clarity_hf.data.synthetic.build_synthetic_cxr`) is not available.

Each image is a dark field with a bright thorax ellipse (its mask is the `anatomy_mask` column); every label is
present with probability `positive_rate`, and a present label draws one lesion with a class-specific pattern
(disc or square, times seven textures) at a random position inside the thorax. The lesion's box is stored in the
clarity_hf schema (`boxes`, x/y top-left in the image frame) so that heatmap localisation can be scored.
"""

from __future__ import annotations

import io

import numpy as np
from datasets import Dataset, DatasetDict, Features, Image, List, Value
from PIL import Image as PILImage

from ..configuration_clarity import NIH_PATHOLOGIES

TEXTURES = ("bright", "dim", "horizontal", "vertical", "diagonal", "antidiagonal", "checker")


def _texture(kind: str, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    period = 4
    if kind == "bright":
        return np.full((size, size), 1.0)
    if kind == "dim":
        return np.full((size, size), 0.45)
    if kind == "horizontal":
        return ((yy // (period // 2)) % 2).astype(float)
    if kind == "vertical":
        return ((xx // (period // 2)) % 2).astype(float)
    if kind == "diagonal":
        return (((xx + yy) // (period // 2)) % 2).astype(float)
    if kind == "antidiagonal":
        return (((xx - yy) // (period // 2)) % 2).astype(float)
    return (((xx // 3) + (yy // 3)) % 2).astype(float)


def _thorax_mask(size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / size
    return (((xx - 0.5) / 0.42) ** 2 + ((yy - 0.52) / 0.44) ** 2 <= 1.0).astype(np.float32)


def _png(array: np.ndarray) -> dict:
    buffer = io.BytesIO()
    PILImage.fromarray(array).save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def _make_split(num: int, image_size: int, positive_rate: float, rng: np.random.Generator, prefix: str, labels):
    thorax = _thorax_mask(image_size)
    rows = {key: [] for key in ("image", "labels", "image_id", "patient_id", "boxes", "box_split", "anatomy_mask")}
    inside = np.argwhere(thorax > 0)
    for index in range(num):
        image = 0.08 + 0.25 * thorax + 0.03 * rng.standard_normal((image_size, image_size))
        present = rng.random(len(labels)) < positive_rate
        boxes = []
        occupied = np.zeros_like(thorax, dtype=bool)
        for class_index in np.flatnonzero(present):
            side = int(rng.integers(image_size // 5, image_size // 4 + 1))
            for _ in range(20):  # rejection sampling: a free spot inside the thorax
                cy, cx = inside[rng.integers(len(inside))]
                y0, x0 = int(np.clip(cy - side // 2, 0, image_size - side)), int(np.clip(cx - side // 2, 0, image_size - side))
                if not occupied[y0 : y0 + side, x0 : x0 + side].any():
                    break
            else:
                present[class_index] = False
                continue
            occupied[y0 : y0 + side, x0 : x0 + side] = True
            pattern = _texture(TEXTURES[class_index % len(TEXTURES)], side)
            if class_index >= len(TEXTURES):  # second half of the labels: discs instead of squares
                yy, xx = np.mgrid[0:side, 0:side] - (side - 1) / 2
                shape = (yy**2 + xx**2) <= (side / 2) ** 2
            else:
                shape = np.ones((side, side), dtype=bool)
            patch = image[y0 : y0 + side, x0 : x0 + side]
            patch[shape] = 0.35 + 0.6 * pattern[shape]
            boxes.append({"label": labels[class_index], "x": float(x0), "y": float(y0), "w": float(side), "h": float(side)})
        pixels = (np.clip(image, 0, 1) * 255).astype(np.uint8)
        rows["image"].append(_png(pixels))
        rows["labels"].append(present.astype(np.float32).tolist())
        rows["image_id"].append(f"{prefix}_{index:05d}.png")
        rows["patient_id"].append(f"{prefix}{index}")
        rows["boxes"].append(boxes)
        rows["box_split"].append("eval" if boxes else "")
        rows["anatomy_mask"].append(_png((thorax * 255).astype(np.uint8)))
    return rows


def toy_features(num_labels: int) -> Features:
    box = {"label": Value("string"), "x": Value("float32"), "y": Value("float32"), "w": Value("float32"), "h": Value("float32")}
    return Features(
        {
            "image": Image(),
            "labels": List(Value("float32"), length=num_labels),
            "image_id": Value("string"),
            "patient_id": Value("string"),
            "boxes": List(box),
            "box_split": Value("string"),
            "anatomy_mask": Image(),
        }
    )


def build_toy_cxr(
    num_train: int = 512,
    num_validation: int = 128,
    num_test: int = 0,
    image_size: int = 64,
    positive_rate: float = 0.15,
    seed: int = 0,
    label_names: tuple[str, ...] = NIH_PATHOLOGIES,
) -> DatasetDict:
    """A `DatasetDict` with `train` / `validation` (/ `test`) splits of synthetic images (see the module docstring)."""
    rng = np.random.default_rng(seed)
    features = toy_features(len(label_names))
    splits = {"train": num_train, "validation": num_validation, "test": num_test}
    result = {}
    for name, count in splits.items():
        if count > 0:
            rows = _make_split(count, image_size, positive_rate, rng, name, list(label_names))
            result[name] = Dataset.from_dict(rows, features=features)
    return DatasetDict(result)
