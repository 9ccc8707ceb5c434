"""Synthetic chest X-ray generator: determinism, boxes on the rendered lesions, schema, distractors."""

from collections import Counter

import numpy as np
import pytest

from clarity_hf.configuration_clarity import NIH_BOXED_PATHOLOGIES, NIH_PATHOLOGIES
from clarity_hf.data.features import clarity_features, get_label_names
from clarity_hf.data.synthetic import build_synthetic_cxr, render_synthetic_cxr


@pytest.fixture(scope="module")
def synthetic():
    return build_synthetic_cxr(120, 20, 60, image_size=128, seed=3, num_proc=2)


def test_schema_and_determinism(synthetic):
    assert synthetic["train"].features == clarity_features(NIH_PATHOLOGIES, with_anatomy_mask=True)
    assert get_label_names(synthetic) == list(NIH_PATHOLOGIES)
    assert [len(synthetic[s]) for s in ("train", "validation", "test")] == [120, 20, 60]
    again = build_synthetic_cxr(120, 20, 60, image_size=128, seed=3, num_proc=1)
    for split in synthetic:
        assert synthetic[split].data.table.equals(again[split].data.table), split
    other = build_synthetic_cxr(5, 0, 0, image_size=128, seed=4, num_proc=1)["train"]
    assert not np.array_equal(np.asarray(other[0]["image"]), np.asarray(synthetic["train"][0]["image"]))
    row = synthetic["train"][0]
    assert np.asarray(row["image"]).shape == (128, 128) and row["original_size"] == [128, 128]
    assert set(np.unique(np.asarray(row["anatomy_mask"]))) <= {0, 255}


def test_labels_cooccurrence_and_box_split(synthetic):
    labels = np.concatenate([np.asarray(list(synthetic[s]["labels"])) for s in synthetic])
    counts = labels.sum(0)
    assert (counts[:13] > 0).all()  # every class but the rarest (Hernia) occurs in 200 images
    normal = (labels.sum(1) == 0).mean()
    assert 0.25 < normal < 0.55
    assert (labels.sum(1) >= 2).sum() > 20  # several findings per image
    for row in (r for s in synthetic for r in synthetic[s]):
        box_labels = {b["label"] for b in row["boxes"]}
        positives = {NIH_PATHOLOGIES[i] for i, v in enumerate(row["labels"]) if v}
        assert box_labels == positives & set(NIH_BOXED_PATHOLOGIES)
    test = synthetic["test"]
    halves = Counter(v for v, b in zip(test["box_split"], test["boxes"]) if b)
    assert set(halves) == {"tune", "eval"} and abs(halves["tune"] - halves["eval"]) <= 4
    assert all(v == "" for v, b in zip(test["box_split"], test["boxes"]) if not b)
    assert all(v == "" for v in synthetic["train"]["box_split"])


def test_boxes_lie_on_rendered_lesions():
    seen = Counter()
    for index in range(60):
        full = render_synthetic_cxr(7, "test", index, 128, findings=NIH_BOXED_PATHOLOGIES)
        if not full.boxes:
            continue
        free = render_synthetic_cxr(7, "test", index, 128, findings=())
        assert full.boxes == free.boxes and np.array_equal(full.labels, free.labels)
        diff = np.abs(full.image.astype(int) - free.image.astype(int)) >= 6
        inside = np.zeros_like(diff)
        for box in full.boxes:
            seen[box["label"]] += 1
            x, y, w, h = box["x"], box["y"], box["w"], box["h"]
            assert 0 <= x and 0 <= y and x + w <= 128 and y + h <= 128
            region = diff[y : y + h, x : x + w]
            assert region.mean() > 0.15, (index, box, region.mean())
            inside[y : y + h, x : x + w] = True
        assert diff.sum() > 0 and (diff & ~inside).sum() <= 0.03 * diff.sum(), index
    assert set(seen) == set(NIH_BOXED_PATHOLOGIES), seen


def test_lesion_free_render_and_distractors_outside_lungs():
    sample = render_synthetic_cxr(1, "train", 2, 128)
    clean = render_synthetic_cxr(1, "train", 2, 128, distractors=False)
    diff = clean.image != sample.image
    assert diff.any() and not (diff & (sample.anatomy_mask > 0)).any()
    with pytest.raises(ValueError, match="unknown finding"):
        render_synthetic_cxr(1, "train", 2, 128, findings=("Tumour",))
    with pytest.raises(ValueError, match="unknown split"):
        render_synthetic_cxr(1, "dev", 2, 128)
    with pytest.raises(ValueError, match="num_test must be >= 0"):
        build_synthetic_cxr(1, 1, -1)


def test_class_specific_zones_and_sizes():
    sizes, tops = {}, {}
    for index in range(300):
        sample = render_synthetic_cxr(11, "train", index, 128, findings=())
        for box in sample.boxes:
            sizes.setdefault(box["label"], []).append(box["w"] * box["h"])
            tops.setdefault(box["label"], []).append(box["y"] + box["h"] / 2)
    assert np.median(sizes["Nodule"]) * 4 < np.median(sizes["Mass"])
    assert np.median(sizes["Mass"]) < np.median(sizes["Cardiomegaly"])
    assert np.median(tops["Pneumothorax"]) < np.median(tops["Effusion"]) - 20  # apex above base


def test_generation_speed_report():
    import time

    start = time.perf_counter()
    train = build_synthetic_cxr(200, 0, 0, image_size=128, seed=0, num_proc=1)["train"]
    elapsed = time.perf_counter() - start
    assert len(train) == 200 and np.asarray(train[199]["image"]).shape == (128, 128)
    # The speed is of real work: distinct, non-blank images, and positives of more than one class among them.
    first, last = np.asarray(train[0]["image"]), np.asarray(train[199]["image"])
    assert first.std() > 0 and not np.array_equal(first, last)
    assert (np.asarray(train["labels"]).sum(axis=0) > 0).sum() > 1
    print(f"\nsynthetic generation: {200 / elapsed:.0f} images/s at 128 px on one process")
