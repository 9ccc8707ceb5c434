# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""The default post-processing computes boxes in a frame of longest side 512 and scales them; it must agree with
the exact computation at the original size (`box_resolution=None`) to within 1% of the image side, on heatmaps of
synthetic chest X-rays and of the real fixtures, and its heatmaps of chosen classes equal the exact ones."""

import numpy as np
import pytest
import torch
from archive_testing import FIXTURES, make_model_dir

from clarity_hf.data.synthetic import render_synthetic_cxr
from clarity_hf.heatmaps import box_frame_size
from clarity_hf.hub import load_for_inference

# (height, width) of a real CR chest DICOM, of the SIIM fixture, and a portrait detector size
TARGETS = [(1955, 1841), (1024, 1024), (1500, 1200)]


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return load_for_inference(make_model_dir(tmp_path_factory.mktemp("model")))


def _outputs(pipe, images):
    inputs = pipe.image_processor(images, return_tensors="pt")
    with torch.no_grad():
        out = pipe.model(**inputs)
    return {"logits": out.logits, "heatmaps": out.heatmaps}


def _blob_outputs(count=6, grid=32, seed=0):
    """Heatmaps of a few Gaussian blobs each on a 32 x 32 grid (the clarity-s-16-512 grid), confident logits."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:grid, 0:grid]
    maps = np.zeros((count, 14, grid, grid), np.float32)
    for index in range(count):
        for cls in range(14):
            for _ in range(rng.integers(1, 4)):
                cy, cx, sigma = rng.uniform(2, grid - 2), rng.uniform(2, grid - 2), rng.uniform(1, 5)
                maps[index, cls] += rng.uniform(0.3, 1) * np.exp(
                    -((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2)
                )
    return {"logits": torch.full((count, 14), 3.0), "heatmaps": torch.from_numpy(maps)}


def _boxes(processor, outputs, sizes, heatmap_threshold, box_resolution):
    found = processor.post_process_object_detection(
        outputs,
        threshold=0.0,
        target_sizes=sizes,
        heatmap_threshold=heatmap_threshold,
        box_resolution=box_resolution,
    )
    return [{label: d["boxes"][d["labels"] == label].numpy() for label in range(14)} for d in found]


def _twinned(box, candidates, tolerance) -> bool:
    return len(candidates) > 0 and bool((np.abs(candidates - box) <= tolerance).all(axis=1).any())


def assert_boxes_agree(processor, outputs, sizes, threshold=0.5, slack=0.01):
    """Every box of the fast path has an exact twin within 1% of the image side, and every exact box a fast twin,
    where the twin may come from a heatmap threshold up to `slack` away: a component whose peak or saddle lies
    within interpolation error of the threshold (a one-pixel sliver, two blobs joined by one pixel) is as unstable
    in the exact computation itself; a speck smaller than 1% of the side may have no twin. Returns (boxes compared, boxes twinned at the same threshold)."""
    thresholds = (threshold - slack, threshold, threshold + slack)
    exact = {t: _boxes(processor, outputs, sizes, t, None) for t in thresholds}
    fast = {t: _boxes(processor, outputs, sizes, t, 512) for t in thresholds}
    compared = same = 0
    for index, (height, width) in enumerate(sizes):
        tolerance = np.asarray([width, height, width, height]) * 0.01
        for label in range(14):
            for mine, theirs in ((fast, exact), (exact, fast)):
                for box in mine[threshold][index][label]:
                    compared += 1
                    if _twinned(box, theirs[threshold][index][label], tolerance):
                        same += 1
                        continue
                    if box[2] - box[0] <= tolerance[0] and box[3] - box[1] <= tolerance[1]:
                        continue  # a speck smaller than the tolerance: it may vanish within it
                    assert any(_twinned(box, theirs[t][index][label], tolerance) for t in thresholds), (
                        label,
                        box,
                        {t: theirs[t][index][label] for t in thresholds},
                        (height, width),
                    )
    return compared, same


@pytest.mark.slow
def test_fast_boxes_agree_with_exact_on_synthetic_heatmaps(pipe):
    images = [render_synthetic_cxr(0, "test", index, image_size=128).image for index in range(2)]
    outputs = _outputs(pipe, images)
    processor = pipe.image_processor
    sizes = TARGETS[: len(images)]
    assert all(max(box_frame_size(size, 512)) == 512 for size in sizes)
    compared, same = assert_boxes_agree(processor, outputs, sizes)
    assert compared > 40 and same >= 0.9 * compared
    compared, same = assert_boxes_agree(processor, _blob_outputs(count=2), sizes)
    assert compared > 40 and same >= 0.9 * compared


def test_fast_boxes_agree_with_exact_on_real_fixtures(pipe):
    dicom = FIXTURES / "siim_pneumothorax_example.dcm"
    pngs = [FIXTURES / "00000001_000.png", FIXTURES / "tbx11k_tb0005.png"]
    compared, same = assert_boxes_agree(pipe.image_processor, _outputs(pipe, [str(dicom)]), [(1024, 1024)])
    assert compared > 10 and same >= 0.9 * compared
    # 512 x 512 images fit the frame: the fast path is the exact computation, box for box.
    outputs = _outputs(pipe, [str(p) for p in pngs])
    exact = pipe.image_processor.post_process_object_detection(
        outputs, threshold=0.0, target_sizes=[(512, 512)] * 2, box_resolution=None
    )
    fast = pipe.image_processor.post_process_object_detection(
        outputs, threshold=0.0, target_sizes=[(512, 512)] * 2
    )
    for e, f in zip(exact, fast):
        for key in ("boxes", "labels", "scores"):
            assert torch.equal(e[key], f[key])


def test_heatmaps_of_chosen_classes_and_uint8(pipe):
    outputs = _blob_outputs(count=2)
    processor = pipe.image_processor
    full = processor.post_process_heatmaps(outputs, target_sizes=[(300, 200), (120, 90)])
    chosen = processor.post_process_heatmaps(outputs, target_sizes=[(300, 200), (120, 90)], classes=[5, 2])
    small = processor.post_process_heatmaps(
        outputs, target_sizes=[(300, 200), (120, 90)], classes=[5, 2], as_uint8=True
    )
    for index in range(2):
        assert torch.equal(chosen[index], full[index][[5, 2]])
        assert small[index].dtype == torch.uint8 and small[index].shape == chosen[index].shape
        assert (small[index].float() - chosen[index] * 255).abs().max() <= 0.5 + 1e-3
    with pytest.raises(ValueError, match="classes"):
        processor.post_process_heatmaps(outputs, classes=[14])
    assert processor.post_process_heatmaps(outputs, target_sizes=[(30, 20)] * 2, classes=[])[0].shape == (
        0,
        30,
        20,
    )
    # No class reaches the threshold: no box, no error.
    none = processor.post_process_object_detection(
        {"logits": torch.full((2, 14), -9.0), "heatmaps": outputs["heatmaps"]}, target_sizes=[(900, 800)] * 2
    )
    assert all(d["boxes"].shape == (0, 4) for d in none)


@pytest.mark.parametrize(
    "target_sizes, match",
    [
        ([(0, 0), (10, 10)], "positive integers"),
        ([(-5, 10), (10, 10)], "positive integers"),
        (512, "pairs"),
        ([512, 512], "pair"),
        ([(10, 10)], "2 images"),
        ([(10.5, 10), (10, 10)], "positive integers"),
        ([(float("nan"), 10), (10, 10)], "positive integers"),
    ],
)
def test_bad_target_sizes_are_refused(pipe, target_sizes, match):
    outputs = _blob_outputs(count=2)
    for method in (
        pipe.image_processor.post_process_object_detection,
        pipe.image_processor.post_process_heatmaps,
    ):
        with pytest.raises(ValueError, match="target_sizes") as info:
            method(outputs, target_sizes=target_sizes)
        assert match in str(info.value)


@pytest.mark.parametrize("name", ["threshold", "heatmap_threshold", "class_threshold"])
@pytest.mark.parametrize("value", [1.5, -0.1, float("nan"), float("inf"), "high"])
def test_bad_thresholds_are_refused(pipe, name, value):
    with pytest.raises(ValueError, match=name):
        pipe.image_processor.post_process_object_detection(_blob_outputs(count=1), **{name: value})
    if name == "heatmap_threshold":
        with pytest.raises(ValueError, match=name):
            pipe.image_processor.post_process_object_detection(
                _blob_outputs(count=1), heatmap_threshold=[0.5] * 13 + [value]
            )
