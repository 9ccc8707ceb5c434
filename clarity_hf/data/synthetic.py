# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""A deterministic synthetic chest X-ray benchmark with known labels, boxes and thorax masks.

It is the embedded default data of the project's demo and localization tests: every downstream step (transform,
training, evaluation) runs on it unchanged, because it writes the same features as the NIH builder
(`clarity_hf.data.features.clarity_features(14, with_anatomy_mask=True)`).

What an image holds (all vectorised numpy, one image a few milliseconds at 256x256):

* anatomy: a soft-tissue body, two lung fields (ellipses with lung markings), heart (on the image's right, as in a
  PA film), mediastinum / spine, clavicles, curved ribs; low-frequency texture, Gaussian noise and a random global
  contrast / brightness;
* the 8 boxed NIH findings as localized lesions of class-specific size, shape and zone, clipped to the lungs:
  Nodule (1-3 small round opacities), Mass (one larger lobulated opacity), Effusion (a homogeneous opacity with a
  meniscus at one or both lung bases), Cardiomegaly (an enlarged heart), Pneumothorax (a dark rim without lung
  markings and a pleural line at one apex), Atelectasis (a plate-like band, middle / lower zone), Infiltration
  (a patchy, hazy cluster), Pneumonia (a dense, soft-edged lobar consolidation, middle / lower zone);
* the 6 other findings as diffuse changes without boxes: Consolidation (bibasal patchy airspace opacities), Edema
  (bilateral perihilar haze), Emphysema (hyperlucent lungs with fewer markings), Fibrosis (a reticular net in the
  lower lungs), Pleural_Thickening (a bright band along the lateral pleura), Hernia (a retrocardiac round density
  with an air-fluid level);
* label-correlated distractors OUTSIDE the lungs that a model could use as shortcuts: a wire / tube in the lateral
  soft tissue (more frequent with Pneumothorax or Effusion), a "portable" text block in a lower corner (more
  frequent with Edema, Cardiomegaly or Effusion, which also makes the view AP), and an uncorrelated laterality
  marker.

Labels: 40% of images have no finding; the others carry 1-4 findings, drawn from prevalences proportional to the
square root of the NIH counts (so that rare classes still occur) with pairwise co-occurrence boosts taken from
clinical knowledge (effusion-atelectasis, edema-effusion-cardiomegaly, infiltration-pneumonia, mass-nodule, ...).
Nothing here is tuned to any model.

Boxes are the bounding boxes of each rendered lesion's footprint, in the image's pixel frame (= `original_size`);
`box_split` is "tune" / "eval" for test images with at least one box (by patient, stratified by class).

Determinism: every image is drawn from `SeedSequence([seed, split, index])`, split into independent streams for
labels, anatomy, findings, distractors and noise, so the result does not depend on `num_proc`, and a render with
`findings=()` differs from the full render only by the lesions.
"""

from __future__ import annotations

import io
import os
from collections.abc import Collection, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
from datasets import DatasetDict
from PIL import Image

from ..configuration_clarity import NIH_BOXED_PATHOLOGIES, NIH_PATHOLOGIES
from .features import (
    attach_metadata,
    clarity_features,
    dataset_from_columns,
    make_metadata,
    stratified_group_split,
)

SPLIT_CODES = {"train": 0, "validation": 1, "test": 2}
NIH_COUNTS = {
    "Atelectasis": 11559,
    "Cardiomegaly": 2776,
    "Effusion": 13317,
    "Infiltration": 19894,
    "Mass": 5782,
    "Nodule": 6331,
    "Pneumonia": 1431,
    "Pneumothorax": 5302,
    "Consolidation": 4667,
    "Edema": 2303,
    "Emphysema": 2516,
    "Fibrosis": 1686,
    "Pleural_Thickening": 3385,
    "Hernia": 227,
}
PREVALENCE = np.sqrt(np.array([NIH_COUNTS[name] for name in NIH_PATHOLOGIES], dtype=np.float64))
PREVALENCE /= PREVALENCE.sum()
NORMAL_FRACTION = 0.4
CO_OCCURRENCE = {
    ("Effusion", "Atelectasis"): 3.0,
    ("Effusion", "Cardiomegaly"): 2.5,
    ("Edema", "Effusion"): 3.0,
    ("Edema", "Cardiomegaly"): 2.5,
    ("Infiltration", "Pneumonia"): 3.0,
    ("Consolidation", "Pneumonia"): 2.0,
    ("Mass", "Nodule"): 3.0,
    ("Emphysema", "Pneumothorax"): 3.0,
    ("Fibrosis", "Pleural_Thickening"): 2.5,
    ("Infiltration", "Effusion"): 1.5,
    ("Atelectasis", "Infiltration"): 1.5,
}
WIRE_PROBABILITY = {True: 0.6, False: 0.12}  # given Pneumothorax or Effusion
PORTABLE_PROBABILITY = {True: 0.55, False: 0.1}  # given Edema, Cardiomegaly or Effusion


def _co_occurrence_matrix() -> np.ndarray:
    index = {name: i for i, name in enumerate(NIH_PATHOLOGIES)}
    matrix = np.ones((len(NIH_PATHOLOGIES), len(NIH_PATHOLOGIES)))
    for (first, second), boost in CO_OCCURRENCE.items():
        matrix[index[first], index[second]] = matrix[index[second], index[first]] = boost
    return matrix


BOOST = _co_occurrence_matrix()


@dataclass
class SyntheticSample:
    """One rendered image: `image` and `anatomy_mask` (S, S) uint8, `labels` (14,) float32, `boxes` in pixels."""

    image: np.ndarray
    anatomy_mask: np.ndarray
    labels: np.ndarray
    boxes: list[dict[str, Any]] = field(default_factory=list)
    attributes: dict[str, Any] = field(default_factory=dict)


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised pixel-centre coordinates (u = x / S, v = y / S), float32, each (S, S)."""
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    return coords[None, :].repeat(size, 0), coords[:, None].repeat(size, 1)


def _ellipse(u, v, cx, cy, rx, ry, angle=0.0):
    """Normalised squared elliptic radius: < 1 inside."""
    du, dv = u - float(cx), v - float(cy)  # Python floats keep float32 arrays float32
    if angle:
        c, s = float(np.cos(angle)), float(np.sin(angle))
        du, dv = c * du + s * dv, c * dv - s * du
    du = du / (float(rx) if np.ndim(rx) == 0 else rx)
    dv = dv / (float(ry) if np.ndim(ry) == 0 else ry)
    return du * du + dv * dv


def _soft(d, edge=0.15):
    """Soft inside-indicator of an elliptic radius map `d`: 1 well inside, 0 outside, a ramp of width `edge`."""
    return np.clip((1.0 - d) / edge, 0.0, 1.0)


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in about [-1, 1]: a random `cells` x `cells` grid, bilinearly upsampled."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse, mode="F").resize((size, size), Image.BILINEAR))


def sample_labels(rng: np.random.Generator) -> np.ndarray:
    """14 multi-hot labels: normal with probability 0.4, else 1-4 findings with co-occurrence boosts."""
    labels = np.zeros(len(NIH_PATHOLOGIES), dtype=np.float32)
    if rng.random() < NORMAL_FRACTION:
        return labels
    count = 1 + int(rng.binomial(3, 0.22))
    weights = PREVALENCE.copy()
    for _ in range(count):
        probs = weights * (1 - labels)
        choice = int(rng.choice(len(probs), p=probs / probs.sum()))
        labels[choice] = 1.0
        weights = weights * BOOST[choice]
    return labels


@dataclass
class _Anatomy:
    lungs: list[tuple[float, float, float, float]]  # (cx, cy, rx, ry) of the image-left and image-right lung
    heart: tuple[float, float, float, float, float]  # cx, cy, rx, ry, angle
    lung_mask: np.ndarray
    markings: np.ndarray


def _sample_anatomy(rng: np.random.Generator, size: int) -> tuple[np.ndarray, _Anatomy]:
    u, v = _grid(size)
    shift = [float(x) for x in rng.uniform(-0.02, 0.02, size=2)]
    body = _soft(_ellipse(u, v, 0.5 + shift[0], 0.56 + shift[1], rng.uniform(0.42, 0.47), 0.58), 0.08)
    image = 0.06 + 0.34 * body
    lungs = []
    lung_soft = np.zeros_like(u)
    for side, cx in ((-1, 0.33), (1, 0.67)):
        lung = (
            cx + shift[0] + side * rng.uniform(-0.01, 0.01),
            0.47 + shift[1] + rng.uniform(-0.01, 0.01),
            rng.uniform(0.125, 0.145),
            rng.uniform(0.27, 0.3) - (0.015 if side > 0 else 0.0),
        )
        lungs.append(lung)
        lung_soft = np.maximum(lung_soft, _soft(_ellipse(u, v, *lung), 0.12))
    markings = 0.5 + 0.5 * _smooth_noise(rng, size, 24)
    image -= lung_soft * (0.24 - 0.06 * markings)
    # ribs: bright bands curving down laterally, visible over the lungs
    period, phase = rng.uniform(0.075, 0.09), rng.uniform(0, 1)
    curve = v + 0.9 * (u - 0.5 - shift[0]) ** 2
    ribs = np.cos((2 * np.pi / period) * curve + 2 * np.pi * phase)
    ribs *= ribs
    ribs *= ribs
    ribs *= ribs
    image += 0.07 * ribs * np.clip(body * 1.5 - 0.5, 0, 1) * (0.4 + 0.6 * lung_soft)
    # clavicles
    for side in (-1, 1):
        clav = _ellipse(
            u, v, 0.5 + shift[0] + side * 0.15, 0.2 + shift[1], 0.14, 0.012, side * rng.uniform(0.15, 0.3)
        )
        image += 0.12 * _soft(clav, 0.5)
    # mediastinum / spine
    spine = np.clip(1 - np.abs(u - 0.5 - shift[0]) / 0.055, 0, 1) * (v > 0.08) * body
    image += 0.16 * spine
    heart = (
        0.56 + shift[0] + rng.uniform(-0.015, 0.015),
        0.63 + shift[1] + rng.uniform(-0.015, 0.015),
        rng.uniform(0.11, 0.13),
        rng.uniform(0.085, 0.1),
        rng.uniform(-0.35, -0.15),
    )
    lung_mask = lung_soft > 0.5
    return image.astype(np.float32), _Anatomy(lungs, heart, lung_mask, markings)


def _heart_layer(u, v, heart, scale: float) -> np.ndarray:
    cx, cy, rx, ry, angle = heart
    return _soft(_ellipse(u, v, cx + 0.2 * (scale - 1) * rx, cy, rx * scale, ry * scale, angle), 0.1)


def _lung_point(rng, lung, zone: tuple[float, float], margin: float) -> tuple[float, float]:
    """A point inside `lung` (cx, cy, rx, ry), at vertical position t in `zone` (-1 top .. 1 base)."""
    cx, cy, rx, ry = lung
    t = rng.uniform(*zone)
    half = max(np.sqrt(max(1 - t * t, 0.0)) * rx - margin, 0.0)
    return cx + rng.uniform(-half, half), cy + t * (ry - margin)


def _lesion(name: str, rng, u, v, anatomy: _Anatomy) -> list[np.ndarray]:
    """Additive layers (one per instance) of a boxed finding, before clipping to the lungs."""
    lungs = anatomy.lungs
    layers = []
    if name == "Nodule":
        for _ in range(int(rng.choice([1, 1, 1, 2, 3]))):
            r = rng.uniform(0.014, 0.024)
            cx, cy = _lung_point(rng, lungs[rng.integers(2)], (-0.8, 0.8), r + 0.01)
            layers.append(rng.uniform(0.28, 0.4) * np.sqrt(_soft(_ellipse(u, v, cx, cy, r, r), 1.0)))
    elif name == "Mass":
        r = rng.uniform(0.04, 0.065)
        cx, cy = _lung_point(rng, lungs[rng.integers(2)], (-0.7, 0.6), r + 0.01)
        theta = np.arctan2(v - cy, u - cx)
        lobes = (
            1
            + 0.15 * np.sin(3 * theta + rng.uniform(0, 6.3))
            + 0.08 * np.sin(5 * theta + rng.uniform(0, 6.3))
        )
        d = ((u - cx) ** 2 + (v - cy) ** 2) / (r * lobes) ** 2
        layers.append(rng.uniform(0.3, 0.42) * _soft(d, 0.35))
    elif name == "Effusion":
        sides = [0, 1] if rng.random() < 0.3 else [int(rng.integers(2))]
        for side in sides:
            cx, cy, rx, ry = lungs[side]
            lateral = (u - cx) * (1 if side else -1) / rx
            level = cy + ry * (1 - rng.uniform(0.25, 0.5)) - 0.05 * np.clip(lateral, 0, 1)
            fluid = np.clip((v - level) / 0.015, 0, 1) * (np.abs(u - cx) < rx)
            layers.append(rng.uniform(0.32, 0.45) * fluid)
    elif name == "Pneumothorax":
        side = int(rng.integers(2))
        cx, cy, rx, ry = lungs[side]
        collapse = rng.uniform(0.72, 0.85)
        lateral = 1 if side else -1
        inner = _ellipse(
            u,
            v,
            cx - lateral * rx * (1 - collapse) * 0.5,
            cy + ry * (1 - collapse) * 0.6,
            rx * collapse,
            ry * collapse,
        )
        upper = (v < cy + rng.uniform(-0.1, 0.1) * ry) & (_ellipse(u, v, cx, cy, rx, ry) < 1.0)
        space = (inner > 1.0) & upper
        line = (np.abs(inner - 1.0) < 0.08) & upper
        layers.append(-(0.12 + 0.06 * anatomy.markings) * space + 0.16 * line)
    elif name == "Atelectasis":
        cx, cy = _lung_point(rng, lungs[rng.integers(2)], (-0.1, 0.7), 0.05)
        length, width = rng.uniform(0.06, 0.1), rng.uniform(0.012, 0.022)
        d = _ellipse(u, v, cx, cy, length, width, rng.uniform(-0.45, 0.45))
        layers.append(rng.uniform(0.3, 0.4) * _soft(d, 0.4))
    elif name == "Infiltration":
        cx, cy = _lung_point(rng, lungs[rng.integers(2)], (-0.7, 0.6), 0.06)
        patch = np.zeros_like(u)
        for _ in range(int(rng.integers(3, 7))):
            px, py, s = cx + rng.uniform(-0.04, 0.04), cy + rng.uniform(-0.04, 0.04), rng.uniform(0.018, 0.03)
            patch = np.maximum(patch, np.exp(-((u - px) ** 2 + (v - py) ** 2) / (2 * s * s)))
        texture = 0.6 + 0.4 * anatomy.markings
        layers.append(rng.uniform(0.2, 0.28) * patch * texture * (patch > 0.25))
    elif name == "Pneumonia":
        cx, cy = _lung_point(rng, lungs[rng.integers(2)], (-0.2, 0.6), 0.07)
        rx, ry = rng.uniform(0.055, 0.085), rng.uniform(0.045, 0.07)
        theta = np.arctan2(v - cy, u - cx)
        wobble = 1 + 0.12 * np.sin(4 * theta + rng.uniform(0, 6.3))
        d = _ellipse(u, v, cx, cy, rx * wobble, ry * wobble, rng.uniform(-0.5, 0.5))
        layers.append(rng.uniform(0.34, 0.46) * _soft(d, 0.5))
    return layers


def _diffuse(name: str, rng, u, v, anatomy: _Anatomy, lung_soft: np.ndarray) -> np.ndarray:
    """Additive layer of an unboxed, diffuse finding."""
    lungs = anatomy.lungs
    if name == "Consolidation":
        blobs = np.clip(_smooth_noise(rng, u.shape[0], 14), 0, None)
        lower = np.clip((v - lungs[0][1]) / 0.1 + 0.5, 0, 1)
        return 0.2 * blobs * lower * lung_soft
    if name == "Edema":
        haze = sum(
            np.exp(-_ellipse(u, v, lung[0] + (0.05 if i == 0 else -0.05), lung[1], 0.09, 0.12))
            for i, lung in enumerate(lungs)
        )
        return 0.2 * haze * lung_soft
    if name == "Emphysema":
        return -(0.07 + 0.05 * anatomy.markings) * lung_soft
    if name == "Fibrosis":
        angle = rng.uniform(0, np.pi)
        a = np.cos(2 * np.pi * (u * np.cos(angle) + v * np.sin(angle)) / 0.025)
        b = np.cos(2 * np.pi * (-u * np.sin(angle) + v * np.cos(angle)) / 0.03)
        net = (np.maximum(a, b) > 0.85).astype(np.float32)
        lower = np.clip((v - lungs[0][1] + 0.05) / 0.1, 0, 1)
        return 0.14 * net * lower * lung_soft
    if name == "Pleural_Thickening":
        band = np.zeros_like(u)
        for lung in lungs:
            d = _ellipse(u, v, *lung)
            band = np.maximum(band, ((d > 0.75) & (d < 1.0) & (v < lung[1] + 0.05)).astype(np.float32))
        return 0.22 * band
    if name == "Hernia":
        cx, cy = anatomy.heart[0] - 0.04, anatomy.heart[1] + 0.02
        d = _ellipse(u, v, cx, cy, 0.045, 0.04)
        inside = _soft(d, 0.3)
        gas = (v < cy - 0.005) & (d < 1)
        return 0.22 * inside - 0.3 * gas
    raise ValueError(f"no diffuse rendering for {name}")


def _distractors(rng, u, v, labels: np.ndarray, lung_mask: np.ndarray) -> tuple[np.ndarray, bool]:
    """Markers and wires outside the lungs; returns the layer and whether the 'portable' marker is present."""
    names = {NIH_PATHOLOGIES[i] for i in np.flatnonzero(labels)}
    layer = np.zeros_like(u)
    size = u.shape[0]
    # laterality marker: a bright square with a dark stroke, in a top corner (uncorrelated)
    mx, my = (
        (rng.uniform(0.03, 0.08) if rng.random() < 0.5 else rng.uniform(0.86, 0.91)),
        rng.uniform(0.03, 0.07),
    )
    square = (np.abs(u - mx - 0.025) < 0.025) & (np.abs(v - my - 0.025) < 0.025)
    stroke = (np.abs(u - mx - 0.018) < 0.005) & square
    layer += 0.55 * square - 0.35 * stroke
    if rng.random() < WIRE_PROBABILITY[bool(names & {"Pneumothorax", "Effusion"})]:
        x0 = rng.uniform(0.04, 0.1) if rng.random() < 0.5 else rng.uniform(0.9, 0.96)
        amp, freq, ph = rng.uniform(0.01, 0.025), rng.uniform(2, 5), rng.uniform(0, 6.3)
        centre = x0 + amp * np.sin(2 * np.pi * freq * v + ph)
        width = max(1.2 / size, 0.004)
        layer += (
            0.5 * (np.abs(u - centre) < width) * (v > rng.uniform(0.05, 0.3)) * (v < rng.uniform(0.7, 0.95))
        )
    portable = rng.random() < PORTABLE_PROBABILITY[bool(names & {"Edema", "Cardiomegaly", "Effusion"})]
    if portable:
        px = rng.uniform(0.04, 0.1) if rng.random() < 0.5 else rng.uniform(0.72, 0.78)
        block = (u > px) & (u < px + 0.2) & (v > 0.91) & (v < 0.96)
        bars = np.cos(2 * np.pi * u / 0.02) > 0.2
        layer += 0.6 * block * bars
    return layer * ~lung_mask, portable


def render_synthetic_cxr(
    seed: int,
    split: str,
    index: int,
    image_size: int = 256,
    findings: Collection[str] | None = None,
    distractors: bool = True,
    labels: np.ndarray | None = None,
    placed: Sequence[tuple[str, Sequence[float]]] = (),
) -> SyntheticSample:
    """Render image `index` of `split` for `seed`.

    `findings` restricts which of the image's findings are drawn (None: all; `()`: a lesion-free render of the same
    image, identical elsewhere); the labels and boxes always describe the full image, whatever is drawn.
    `distractors=False` leaves out the markers and wires. `labels` overrides the sampled labels.
    `placed` draws extra lesions at given places: (name, (x, y, w, h) as fractions of the side) each, the lesion of
    that class clipped to its box (a given NIH box, e.g.); their footprint is `attributes["placed_mask"]` (S, S) bool.
    They use their own random streams, so the rest of the image is the same with or without them.
    """
    if split not in SPLIT_CODES:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLIT_CODES)}")
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32, got {image_size}")
    streams = np.random.SeedSequence([int(seed), SPLIT_CODES[split], int(index)]).spawn(6)
    rng_labels, rng_anatomy, rng_findings, rng_distract, rng_noise, rng_meta = (
        np.random.default_rng(s) for s in streams
    )
    sampled = sample_labels(rng_labels)
    labels = sampled if labels is None else np.asarray(labels, dtype=np.float32)
    draw = set(NIH_PATHOLOGIES) if findings is None else set(findings)
    unknown = draw - set(NIH_PATHOLOGIES)
    if unknown:
        raise ValueError(f"unknown finding(s) {sorted(unknown)}; expected names from NIH_PATHOLOGIES")
    u, v = _grid(image_size)
    image, anatomy = _sample_anatomy(rng_anatomy, image_size)
    lung_soft = _soft(np.minimum(_ellipse(u, v, *anatomy.lungs[0]), _ellipse(u, v, *anatomy.lungs[1])), 0.12)
    present = [NIH_PATHOLOGIES[i] for i in np.flatnonzero(labels)]
    boxes: list[dict[str, Any]] = []
    heart_scale = rng_findings.uniform(1.28, 1.45)
    drawn_scale = heart_scale if ("Cardiomegaly" in present and "Cardiomegaly" in draw) else 1.0
    heart = _heart_layer(u, v, anatomy.heart, drawn_scale)
    image += 0.26 * heart * (1 - 0.3 * (1 - lung_soft))
    if "Cardiomegaly" in present:
        enlarged = _heart_layer(u, v, anatomy.heart, heart_scale) > 0.05
        box = _bbox(enlarged)
        if box is not None:
            boxes.append({"label": "Cardiomegaly", **dict(zip("xywh", box))})
    for name in NIH_PATHOLOGIES:  # fixed order keeps the random streams aligned across renders
        if name == "Cardiomegaly":
            continue
        rng = np.random.default_rng(rng_findings.integers(2**63))
        if name not in present:
            continue
        if name in NIH_BOXED_PATHOLOGIES:
            for layer in _lesion(name, rng, u, v, anatomy):
                layer = layer * (lung_soft > 0.5)
                footprint = np.abs(layer) > 0.02
                box = _bbox(footprint)
                if box is None:
                    continue
                boxes.append({"label": name, **dict(zip("xywh", box))})
                if name in draw:
                    image += layer
        elif name in draw:
            image += _diffuse(name, rng, u, v, anatomy, lung_soft)
    placed_mask = np.zeros(u.shape, dtype=bool)
    for number, (name, box) in enumerate(placed):
        for layer in _placed_lesion(name, number, (seed, SPLIT_CODES[split], index), u, v, anatomy, box):
            image += layer
            placed_mask |= np.abs(layer) > 0.02
    thorax = (lung_soft > 0.5) | (heart > 0.5)
    cx = 0.5 * (anatomy.lungs[0][0] + anatomy.lungs[1][0])
    top = min(lung[1] - lung[3] for lung in anatomy.lungs)
    bottom = anatomy.heart[1] + anatomy.heart[3]
    thorax |= (np.abs(u - cx) < 0.07) & (v > top + 0.03) & (v < bottom)
    distract, portable = _distractors(rng_distract, u, v, labels, thorax)
    if distractors:
        image += distract
    contrast, brightness = rng_noise.uniform(0.9, 1.1), rng_noise.uniform(-0.03, 0.03)
    image = image * contrast + brightness + 0.02 * rng_noise.standard_normal(image.shape, dtype=np.float32)
    pixels = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    attributes = {
        "age": int(rng_meta.integers(18, 91)),
        "sex": "M" if rng_meta.random() < 0.55 else "F",
        "view_position": "AP" if portable else ("PA" if rng_meta.random() < 0.9 else "AP"),
    }
    if placed:
        attributes["placed_mask"] = placed_mask
    return SyntheticSample(pixels, (thorax * 255).astype(np.uint8), labels, boxes, attributes)


def _placed_lesion(name, number, key, u, v, anatomy: _Anatomy, box: Sequence[float]) -> list[np.ndarray]:
    """Layers of one `name` lesion drawn inside `box` (x, y, w, h, fractions of the side), clipped to the box: the
    box's inscribed ellipse stands in for the lung the lesion would be placed in."""
    if name not in NIH_BOXED_PATHOLOGIES:
        raise ValueError(f"{name!r} has no localized rendering (boxed findings: {list(NIH_BOXED_PATHOLOGIES)})")
    x, y, w, h = (float(value) for value in box)
    inside = (u >= x) & (u < x + w) & (v >= y) & (v < y + h)
    region = (x + w / 2, y + h / 2, w / 2, h / 2)
    rng = np.random.default_rng(np.random.SeedSequence([*map(int, key), 1000 + number]))
    if name == "Cardiomegaly":  # an enlarged heart filling the box
        layers = [0.2 * _soft(_ellipse(u, v, *region, rng.uniform(-0.2, 0.0)), 0.1)]
    else:
        layers = _lesion(name, rng, u, v, _Anatomy([region, region], anatomy.heart, inside, anatomy.markings))
    return [layer * inside for layer in layers]


def _png(array: np.ndarray) -> dict[str, Any]:
    buffer = io.BytesIO()
    Image.fromarray(array, mode="L").save(buffer, format="PNG", compress_level=1)
    return {"bytes": buffer.getvalue(), "path": None}


def _render_rows(args: tuple[int, str, int, int, int]) -> dict[str, list[Any]]:
    seed, split, start, stop, image_size = args
    columns: dict[str, list[Any]] = {key: [] for key in clarity_features(14, with_anatomy_mask=True)}
    spacing = round(350.0 / image_size, 4)
    for index in range(start, stop):
        sample = render_synthetic_cxr(seed, split, index, image_size)
        columns["image"].append(_png(sample.image))
        columns["anatomy_mask"].append(_png(sample.anatomy_mask))
        columns["labels"].append(sample.labels.tolist())
        columns["image_id"].append(f"synthetic_{split}_{index:06d}.png")
        columns["patient_id"].append(f"synthetic-{split}-{index:06d}")
        columns["age"].append(sample.attributes["age"])
        columns["sex"].append(sample.attributes["sex"])
        columns["view_position"].append(sample.attributes["view_position"])
        columns["follow_up"].append(0)
        columns["original_size"].append([image_size, image_size])
        columns["pixel_spacing"].append([spacing, spacing])
        columns["boxes"].append(
            [
                {k: (float(b[k]) if k != "label" else b[k]) for k in ("label", "x", "y", "w", "h")}
                for b in sample.boxes
            ]
        )
        columns["box_split"].append("")
    return columns


def _render_split(seed: int, split: str, count: int, image_size: int, num_proc: int) -> dict[str, list[Any]]:
    chunk = max(1, min(256, -(-count // max(num_proc, 1))))
    jobs = [(seed, split, start, min(start + chunk, count), image_size) for start in range(0, count, chunk)]
    if num_proc > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=num_proc) as pool:
            parts = list(pool.map(_render_rows, jobs))
    else:
        parts = [_render_rows(job) for job in jobs]
    columns: dict[str, list[Any]] = {key: [] for key in clarity_features(14, with_anatomy_mask=True)}
    for part in parts:
        for key, values in part.items():
            columns[key].extend(values)
    return columns


def build_synthetic_cxr(
    num_train: int,
    num_validation: int,
    num_test: int,
    image_size: int = 256,
    seed: int = 0,
    num_proc: int | None = None,
    box_split_seed: int = 0,
) -> DatasetDict:
    """Render the synthetic benchmark as a `train` / `validation` / `test` DatasetDict.

    Args:
        num_train / num_validation / num_test: images per split (0 leaves the split empty).
        image_size: side of the square images (boxes and `original_size` are in this frame).
        seed: the benchmark's seed; the same seed always gives the same bytes.
        num_proc: worker processes (default: `os.cpu_count()`, at most 8); the result does not depend on it.
        box_split_seed: seed of the 50/50 tune / eval split of the boxed test images.

    Returns:
        A `DatasetDict` with `clarity_features(14, with_anatomy_mask=True)`; label names in the metadata.
    """
    for name, count in (("num_train", num_train), ("num_validation", num_validation), ("num_test", num_test)):
        if count < 0:
            raise ValueError(f"{name} must be >= 0, got {count}")
    num_proc = min(os.cpu_count() or 1, 8) if num_proc is None else max(1, int(num_proc))
    features = clarity_features(14, with_anatomy_mask=True)
    metadata = make_metadata(
        NIH_PATHOLOGIES,
        source=f"clarity_hf synthetic CXR (seed {seed}, {image_size}px)",
        box_frame="original_size",
        boxed_labels=list(NIH_BOXED_PATHOLOGIES),
        seed=seed,
    )
    result = DatasetDict()
    for split, count in (("train", num_train), ("validation", num_validation), ("test", num_test)):
        columns = _render_split(seed, split, count, image_size, num_proc)
        if split == "test":
            boxed = [i for i, boxes in enumerate(columns["boxes"]) if boxes]
            halves = stratified_group_split(
                [columns["patient_id"][i] for i in boxed],
                [[b["label"] for b in columns["boxes"][i]] for i in boxed],
                box_split_seed,
            )
            for i, half in zip(boxed, halves):
                columns["box_split"][i] = half
        result[split] = attach_metadata(dataset_from_columns(columns, features), metadata)
    return result


def render_examples(
    seed: int, split: str, indices: Sequence[int], image_size: int = 256
) -> list[SyntheticSample]:
    """Render a few samples (for inspection and tests)."""
    return [render_synthetic_cxr(seed, split, i, image_size) for i in indices]
