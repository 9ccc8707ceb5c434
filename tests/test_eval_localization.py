# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Localization protocol on hand-made heatmaps and boxes; every expected number is worked out in the comments.

Conventions: boxes are xyxy with exclusive x1, y1; a ground-truth box (x, y, w, h) is (x, y, x + w, y + h). Unless a
test says otherwise the heatmaps are given at the original size (10 x 10), so the upsampling is the identity and the
boxes are the bounding boxes of the painted blobs.
"""

import math
import sys

import numpy as np
import pytest
import torch

from clarity_hf.configuration_clarity import NIH_BOXED_PATHOLOGIES, NIH_PATHOLOGIES
from clarity_hf.evaluation import metric_path
from clarity_hf.evaluation.localization import (
    IOBB_THRESHOLDS,
    IOU_THRESHOLDS,
    WANG2017_THRESHOLDS,
    LocalizationEvaluator,
    box_iobb,
    box_iou,
    heatmap_boxes_in_frame,
    xywh_to_xyxy,
)

CLASSES = ("A", "B", "C")  # heatmap channel order; A and B are the boxed classes, C is not evaluated
BOXED = ("A", "B")


def box(label, x, y, w, h):
    return {"label": label, "x": x, "y": y, "w": w, "h": h}


def blank():
    return np.zeros((len(CLASSES), 10, 10), dtype=np.float32)


def assert_nan_equal(actual, expected):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert (math.isnan(a) and math.isnan(e)) or a == pytest.approx(e, abs=1e-12), (actual, expected)


# ---------------------------------------------------------------------------------------------- boxes and overlaps
def test_component_boxes_and_peaks_by_hand():
    from clarity_hf.heatmaps import heatmap_to_boxes

    heat = np.zeros((6, 8), dtype=np.float32)
    heat[1, 1], heat[1, 2], heat[2, 2] = 0.7, 0.9, 0.6  # one 8-connected component, peak 0.9
    heat[4, 6] = 0.5  # a one-pixel component
    heat[5, 0] = 1.0  # the hottest one
    heat[0, 7] = 0.2  # under the threshold
    boxes, scores = heatmap_to_boxes(heat, 0.4, normalize=False)
    assert scores.tolist() == pytest.approx([1.0, 0.9, 0.5])  # sorted by peak
    assert boxes.tolist() == [[0, 5, 1, 6], [1, 1, 3, 3], [6, 4, 7, 5]]
    # min_area drops the one-pixel components; normalising first keeps the order and rescales the peaks.
    boxes, scores = heatmap_to_boxes(heat, 0.4, min_area=2)
    assert boxes.tolist() == [[1, 1, 3, 3]] and scores.tolist() == pytest.approx([0.9])
    # Negative heat (normalize=False) keeps its own peaks.
    boxes, scores = heatmap_to_boxes(heat - 2.0, -1.55, normalize=False)
    assert scores.tolist() == pytest.approx([-1.0, -1.1, -1.5])


@pytest.mark.parametrize("threshold, min_area", [(0.8, 1), (0.85, 1), (0.85, 4), (0.95, 2)])
def test_component_boxes_equal_a_whole_frame_scatter_max(threshold, min_area):
    """Areas and peaks read per component are those of a label-indexed bincount / scatter-max over the frame."""
    from scipy import ndimage

    from clarity_hf.heatmaps import heatmap_to_boxes

    heat = np.random.default_rng(0).random((96, 80)).astype(np.float32)
    heat[10:20, 10:30] = 1.0  # equal peaks in several components keep their order (stable sort)
    heat[40:42, 50:52] = 1.0
    labeled, count = ndimage.label(heat >= threshold, structure=np.ones((3, 3), dtype=bool))
    assert count > 20
    areas = np.bincount(labeled.ravel(), minlength=count + 1)[1:]
    peaks = np.full(count + 1, -np.inf)
    np.maximum.at(peaks, labeled.ravel(), heat.ravel())
    regions = ndimage.find_objects(labeled)
    kept = [k for k in range(count) if areas[k] >= min_area]
    order = np.argsort(-peaks[1:][kept], kind="stable")
    expected = [
        [regions[k][1].start, regions[k][0].start, regions[k][1].stop, regions[k][0].stop] for k in kept
    ]
    boxes, scores = heatmap_to_boxes(heat, threshold, normalize=False, min_area=min_area)
    assert boxes.tolist() == np.asarray(expected, dtype=np.float32)[order].tolist()
    assert scores.tolist() == peaks[1:][kept].astype(np.float32)[order].tolist()


def test_xywh_to_xyxy():
    np.testing.assert_array_equal(xywh_to_xyxy([[5, 6, 2, 3]]), [[5, 6, 7, 9]])


def test_iou_and_iobb_by_hand():
    pred = np.array([[0, 0, 2, 2], [5, 5, 9, 9]], dtype=float)  # areas 4 and 16
    gt = np.array([[0, 0, 4, 2], [5, 5, 7, 7], [20, 20, 21, 21]], dtype=float)  # areas 8, 4, 1
    # pred0 vs gt0: inter 2*2 = 4, union 4 + 8 - 4 = 8 -> IoU 0.5; IoBB 4 / 4 = 1.
    # pred1 vs gt1: inter 2*2 = 4, union 16 + 4 - 4 = 16 -> IoU 0.25; IoBB 4 / 16 = 0.25.
    # every other pair is disjoint -> 0.
    np.testing.assert_allclose(box_iou(pred, gt), [[0.5, 0, 0], [0, 0.25, 0]])
    np.testing.assert_allclose(box_iobb(pred, gt), [[1.0, 0, 0], [0, 0.25, 0]])
    # IoBB divides by the *predicted* box: a small prediction inside a big box has IoBB 1, IoU 1/16.
    np.testing.assert_allclose(box_iobb([[1, 1, 2, 2]], [[0, 0, 4, 4]]), [[1.0]])
    np.testing.assert_allclose(box_iou([[1, 1, 2, 2]], [[0, 0, 4, 4]]), [[1 / 16]])
    # touching boxes share no area
    np.testing.assert_allclose(box_iou([[0, 0, 2, 2]], [[2, 0, 4, 2]]), [[0.0]])
    assert box_iou(np.zeros((0, 4)), gt).shape == (0, 3)


def test_upsampling_to_the_box_frame_by_hand():
    # A 2x2 map [[1, 0], [0, 0]] upsampled bilinearly (align_corners=False) to 8x8: along each axis the weight of
    # the first cell is (1, 1, .875, .625, .375, .125, 0, 0) (source coordinate (i + .5) / 4 - .5, clamped at 0);
    # the value at (r, c) is the product of the row and column weights.
    heatmap = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    # >= 0.5: the 4x4 corner except (3, 3) (.625 * .625 = .39); one component, bounding box (0, 0, 4, 4).
    np.testing.assert_array_equal(heatmap_boxes_in_frame(heatmap, (8, 8), 0.5), [[0, 0, 4, 4]])
    # >= 0.7: weights >= .7 need both factors in {1, 1, .875} -> rows and columns 0..2 -> (0, 0, 3, 3).
    np.testing.assert_array_equal(heatmap_boxes_in_frame(heatmap, (8, 8), 0.7), [[0, 0, 3, 3]])
    # Non-square frame (height 8, width 4): the column weights become (1, .75, .25, 0) -> at 0.7, columns 0..1.
    np.testing.assert_array_equal(heatmap_boxes_in_frame(heatmap, (8, 4), 0.7), [[0, 0, 2, 3]])
    # The heatmap is min-max normalised after upsampling: scaling and offsetting it changes nothing.
    np.testing.assert_array_equal(heatmap_boxes_in_frame(heatmap * 0.2 + 0.3, (8, 8), 0.7), [[0, 0, 3, 3]])


# ---------------------------------------------------------------------------------------------- the main fixture
def hand_made_evaluator(fp_mode="present"):
    """Three 10x10 images.

    img1: two GT boxes of class A: G1 = (0, 0, 4, 2) (area 8) and G2 = (5, 5, 7, 7) (area 4).
          A's heatmap: 1.0 on rows 0-1 x cols 0-1 -> P1 = (0, 0, 2, 2); 0.6 on rows 5-8 x cols 5-8 -> P2 = (5, 5, 9, 9).
          IoU(P1, G1) = 4 / 8 = 0.5, IoBB = 4 / 4 = 1;  IoU(P2, G2) = 4 / 16 = 0.25, IoBB = 4 / 16 = 0.25.
          B's heatmap is empty (all zero).
    img2: one GT box of class B at the right image edge: (8, 0, 2, 10) -> (8, 0, 10, 10) (area 20).
          B's heatmap: 1.0 on cols 7-9 (all rows) -> P3 = (7, 0, 10, 10) (area 30): IoU = IoBB = 20 / 30 = 2/3;
          and 0.9 at the single pixel (0, 0) -> P4 = (0, 0, 1, 1), overlapping nothing: a false positive.
          A's heatmap (A is absent): 1.0 on rows 0-2 x cols 0-2 (one box, only thresholded with fp_mode="all").
    img3: one GT box of class B, (0, 0, 5, 5); B's heatmap is constant 0.3 -> normalised to all zeros -> no box.
    """
    evaluator = LocalizationEvaluator(class_names=CLASSES, boxed_classes=BOXED, fp_mode=fp_mode)
    h1 = blank()
    h1[0, 0:2, 0:2] = 1.0
    h1[0, 5:9, 5:9] = 0.6
    h1[2] = 0.7  # class C is never evaluated
    evaluator.add("img1", h1, [box("A", 0, 0, 4, 2), box("A", 5, 5, 2, 2)], (10, 10), "eval")
    h2 = blank()
    h2[1, :, 7:10] = 1.0
    h2[1, 0, 0] = 0.9
    h2[0, 0:3, 0:3] = 1.0
    evaluator.add("img2", torch.from_numpy(h2), [box("B", 8, 0, 2, 10)], [10, 10], "eval")
    h3 = blank()
    h3[1] = 0.3
    evaluator.add("img3", h3, [box("B", 0, 0, 5, 5)], (10, 10), "eval")
    return evaluator


def test_accuracy_per_class_and_macro_by_hand():
    result = hand_made_evaluator().compute(threshold=0.5)
    assert result["classes"] == ["A", "B"]
    assert result["n_images"] == 3
    assert result["n_gt_boxes"] == {"A": 2, "B": 2}
    assert result["n_predicted_boxes"] == 4  # P1, P2 on img1 (A); P3, P4 on img2 (B); none on img3
    assert result["iou"]["thresholds"] == list(IOU_THRESHOLDS)
    # A: G1 best IoU 0.5 -> found for T < 0.5 (strict ">"; IoU == T is not found); G2 best IoU 0.25 -> T 0.1, 0.2.
    assert result["iou"]["per_class"]["A"] == [1.0, 1.0, 0.5, 0.5, 0.0, 0.0, 0.0]
    # B: edge box IoU 2/3 -> found up to T = 0.6; img3's box (empty heatmap) never.
    assert result["iou"]["per_class"]["B"] == [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.0]
    assert result["iou"]["macro"] == pytest.approx([0.75, 0.75, 0.5, 0.5, 0.25, 0.25, 0.0])
    # IoBB at (0.1, 0.25, 0.5, 0.75, 0.9): A: G1 IoBB 1 always; G2 IoBB 0.25 only at 0.1 (0.25 is not > 0.25).
    assert result["iobb"]["thresholds"] == list(IOBB_THRESHOLDS)
    assert result["iobb"]["per_class"]["A"] == [1.0, 0.5, 0.5, 0.5, 0.5]
    # B: IoBB 2/3 -> found at 0.1, 0.25, 0.5; img3 never.
    assert result["iobb"]["per_class"]["B"] == [0.5, 0.5, 0.5, 0.0, 0.0]
    assert result["iobb"]["macro"] == pytest.approx([0.75, 0.5, 0.5, 0.25, 0.25])
    # False positives: only P4 (IoU 0 <= 0.1). 1 box / 3 images; per class A: 0 / 1 image, B: 1 / 2 images.
    fp = result["false_positives"]
    assert fp["total"] == 1
    assert fp["per_image"] == pytest.approx(1 / 3)
    assert fp["per_class"] == {"A": 0.0, "B": 0.5}
    assert "IoU <= 0.1" in fp["criterion"]


def test_higher_threshold_drops_the_weaker_component():
    # At 0.8: img1 keeps only P1 (0.6 < 0.8) -> G2 is never found; img2 keeps P3 and P4 (1.0 and 0.9).
    result = hand_made_evaluator().compute(threshold=0.8)
    assert result["iou"]["per_class"]["A"] == [0.5, 0.5, 0.5, 0.5, 0.0, 0.0, 0.0]
    assert result["iou"]["per_class"]["B"] == [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.0]
    assert result["n_predicted_boxes"] == 3


def test_fp_mode_all_thresholds_absent_classes():
    # fp_mode="all": also img2's A heatmap (one box, no A ground truth -> FP), img1's B (empty -> nothing) and
    # img3's A (all zero -> nothing). FPs: P4 and that A box = 2 over 3 images; per class 1/3 each.
    result = hand_made_evaluator(fp_mode="all").compute(threshold=0.5)
    assert result["false_positives"]["total"] == 2
    assert result["false_positives"]["per_image"] == pytest.approx(2 / 3)
    assert result["false_positives"]["per_class"] == pytest.approx({"A": 1 / 3, "B": 1 / 3})
    assert result["n_predicted_boxes"] == 5
    # accuracies do not depend on the FP mode
    assert result["iou"]["per_class"] == hand_made_evaluator().compute(threshold=0.5)["iou"]["per_class"]


def test_wang2017_two_levels_pool_boxes():
    # Levels 60/255 = 0.235 and 180/255 = 0.706: img1 gives P1, P2 at the low level and P1 at the high one (3
    # boxes); img2 gives P3, P4 at both (4 boxes). Pooled boxes match as at 0.5, so the accuracies are unchanged.
    evaluator = hand_made_evaluator()
    result = evaluator.compute(threshold="wang2017")
    assert result["heatmap_thresholds"]["A"] == pytest.approx([60 / 255, 180 / 255])
    assert list(WANG2017_THRESHOLDS) == pytest.approx([60 / 255, 180 / 255])
    assert result["n_predicted_boxes"] == 7
    assert result["iou"]["per_class"]["A"] == [1.0, 1.0, 0.5, 0.5, 0.0, 0.0, 0.0]
    assert result["false_positives"]["total"] == 2  # P4, once per level
    # the same as passing the levels explicitly
    assert evaluator.compute(threshold=WANG2017_THRESHOLDS) == result


def test_per_class_threshold_mapping_and_split_filter():
    evaluator = hand_made_evaluator()
    # A at 0.8 (drops P2), B at 0.5: A's accuracies as at 0.8, B's as at 0.5.
    result = evaluator.compute(threshold={"A": 0.8, "B": 0.5})
    assert result["iou"]["per_class"]["A"] == [0.5, 0.5, 0.5, 0.5, 0.0, 0.0, 0.0]
    assert result["heatmap_thresholds"] == {"A": [0.8], "B": [0.5]}
    with pytest.raises(ValueError):
        evaluator.compute(threshold={"A": 0.5})  # B missing
    # nothing is in the "tune" split: no images, classes undefined (NaN), macro NaN
    empty = evaluator.compute(threshold=0.5, split="tune")
    assert empty["n_images"] == 0
    assert_nan_equal(empty["iou"]["macro"], [float("nan")] * 7)


def test_labels_and_shapes_are_checked():
    evaluator = LocalizationEvaluator(class_names=CLASSES, boxed_classes=BOXED)
    with pytest.raises(ValueError):
        evaluator.add("x", np.zeros((2, 4, 4)), [], (4, 4))  # 2 channels for 3 classes
    with pytest.raises(ValueError):
        evaluator.add("x", np.zeros((3, 4, 4)), [box("C", 0, 0, 1, 1)], (4, 4))  # C is not boxed
    # NIH's "Infiltrate" spelling is mapped to "Infiltration"
    nih = LocalizationEvaluator()
    heat = np.zeros((len(NIH_PATHOLOGIES), 4, 4), dtype=np.float32)
    heat[NIH_PATHOLOGIES.index("Infiltration"), 1:3, 1:3] = 1.0
    nih.add("y", heat, [box("Infiltrate", 1, 1, 2, 2)], (4, 4))
    result = nih.compute(0.5)
    assert result["classes"] == list(NIH_BOXED_PATHOLOGIES)
    assert result["iou"]["per_class"]["Infiltration"] == [1.0] * 7
    assert result["iou"]["macro"] == [1.0] * 7  # the 7 classes without boxes are NaN and left out


# ---------------------------------------------------------------------------------------------- tuning
def tuning_evaluator():
    """Tune half: T1 (class A), T2 (class B); eval half: E1 (A), E2 (B). Grid (0.3, 0.5, 0.7).

    T1: GT G1 = (0, 0, 2, 2), G2 = (6, 6, 8, 8). A's heatmap: 1.0 on rows 0-1 x cols 0-1, 0.4 on rows 0-1 x cols 2-4
        (adjacent), 0.6 on rows 6-7 x cols 6-7.
        t=0.3: (0, 0, 5, 2) IoU 4/10 = 0.4 with G1 (found at T 0.1-0.3), G2 exact (all) -> per T (1,1,1,.5,.5,.5,.5),
               mean 5/7;  t=0.5: both exact -> mean 1;  t=0.7: G2 lost -> 0.5 at every T, mean 0.5.
    T2: GT (0, 0, 4, 2) (area 8). B's heatmap: 1.0 on rows 0-1 x cols 0-1, 0.35 on rows 0-1 x cols 2-3.
        t=0.3: (0, 0, 4, 2) exact -> mean 1;  t=0.5 and 0.7: (0, 0, 2, 2), IoU 4/8 = 0.5 -> found at T 0.1-0.4, 4/7.
    Per class: A -> 0.5, B -> 0.3. Global (macro): t=.3: (5/7 + 1)/2 = 6/7; t=.5: (1 + 4/7)/2 = 11/14;
        t=.7: (1/2 + 4/7)/2 = 15/28 -> 0.3.
    E1: GT (2, 2, 6, 6) (area 16). A's heatmap: 1.0 on rows 2-5 x cols 2-3, 0.45 on rows 2-5 x cols 4-5.
        t=0.3: (2, 2, 6, 6) exact -> all found;  t=0.5: (2, 2, 4, 6), IoU 8/16 = 0.5 -> found at T 0.1-0.4.
    E2: GT (0, 0, 2, 2); B's heatmap 1.0 exactly there -> found at every T for any threshold.
    """
    evaluator = LocalizationEvaluator(class_names=CLASSES, boxed_classes=BOXED)
    t1 = blank()
    t1[0, 0:2, 0:2] = 1.0
    t1[0, 0:2, 2:5] = 0.4
    t1[0, 6:8, 6:8] = 0.6
    t2 = blank()
    t2[1, 0:2, 0:2] = 1.0
    t2[1, 0:2, 2:4] = 0.35
    e1 = blank()
    e1[0, 2:6, 2:4] = 1.0
    e1[0, 2:6, 4:6] = 0.45
    e2 = blank()
    e2[1, 0:2, 0:2] = 1.0
    evaluator.add_batch(
        heatmaps=np.stack([t1, t2, e1, e2]),
        boxes=[
            [box("A", 0, 0, 2, 2), box("A", 6, 6, 2, 2)],
            [box("B", 0, 0, 4, 2)],
            [box("A", 2, 2, 4, 4)],
            [box("B", 0, 0, 2, 2)],
        ],
        original_size=[(10, 10)] * 4,
        image_id=["T1", "T2", "E1", "E2"],
        box_split=["tune", "tune", "eval", "eval"],
    )
    return evaluator


def test_global_tuning_picks_the_known_best_threshold_and_reports_on_eval():
    result = tuning_evaluator().tune_and_evaluate(grid=(0.3, 0.5, 0.7), per_class=False)
    assert result["objective_values"]["global"] == pytest.approx([6 / 7, 11 / 14, 15 / 28])
    assert result["thresholds"] == {"A": 0.3, "B": 0.3}
    assert result["tune"]["n_images"] == 2 and result["tune"]["split"] == "tune"
    assert result["eval"]["n_images"] == 2 and result["eval"]["split"] == "eval"
    # on eval at 0.3 both boxes are exact
    assert result["eval"]["iou"]["per_class"] == {"A": [1.0] * 7, "B": [1.0] * 7}


def test_per_class_tuning_and_eval_numbers():
    result = tuning_evaluator().tune_and_evaluate(grid=(0.3, 0.5, 0.7), per_class=True)
    assert result["thresholds"] == {"A": 0.5, "B": 0.3}
    assert result["objective_values"]["A"] == pytest.approx([5 / 7, 1.0, 0.5])
    assert result["objective_values"]["B"] == pytest.approx([1.0, 4 / 7, 4 / 7])
    assert result["tune"]["iou"]["macro"] == [1.0] * 7
    # eval: E1 at 0.5 -> IoU 0.5 -> found for T 0.1-0.4 only; E2 always.
    assert result["eval"]["iou"]["per_class"]["A"] == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    assert result["eval"]["iou"]["macro"] == pytest.approx([1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5])
    assert result["eval"]["heatmap_thresholds"] == {"A": [0.5], "B": [0.3]}


def test_tuning_ties_go_to_fewer_false_positives():
    # One image, GT (0, 0, 2, 2); 1.0 exactly there and a 0.4 pixel far away. At 0.3 and 0.5 the GT box is found
    # exactly (objective 1 both), but 0.3 also keeps the far pixel (1 FP) -> 0.5 wins.
    evaluator = LocalizationEvaluator(class_names=CLASSES, boxed_classes=BOXED)
    heat = blank()
    heat[0, 0:2, 0:2] = 1.0
    heat[0, 9, 9] = 0.4
    evaluator.add("t", heat, [box("A", 0, 0, 2, 2)], (10, 10), "tune")
    result = evaluator.tune(grid=(0.3, 0.5), split="tune")
    assert result["objective_values"]["global"] == [1.0, 1.0]
    assert result["thresholds"]["A"] == 0.5
    assert result["eval"] is None


# ---------------------------------------------------------------------------------------------- evaluate module
def test_evaluate_module_matches_python_api(monkeypatch):
    import evaluate

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    metric = evaluate.load(metric_path("clarity_localization"))
    module = sys.modules[type(metric).__module__]
    # evaluate copied only the script into its module cache; it runs clarity_hf's own evaluator.
    assert "evaluate_modules" in module.__file__
    assert module.LocalizationEvaluator is LocalizationEvaluator

    def inputs(evaluator):
        images = evaluator._images
        return {
            "heatmaps": [
                np.pad(i.heatmaps, ((0, 1), (0, 0), (0, 0))).tolist() for i in images
            ],  # add channel C
            "boxes": [
                [
                    box(BOXED[c], b[0], b[1], b[2] - b[0], b[3] - b[1])
                    for c, boxes in sorted(i.gt_boxes.items())
                    for b in boxes
                ]
                for i in images
            ],
            "original_size": [list(i.original_size) for i in images],
            "image_id": [i.image_id for i in images],
            "box_split": [i.split for i in images],
        }

    options = {"class_names": CLASSES, "boxed_classes": BOXED}
    fixed = metric.compute(**inputs(hand_made_evaluator()), threshold=0.5, **options)
    assert fixed == hand_made_evaluator().compute(threshold=0.5)
    assert fixed["iou"]["macro"] == pytest.approx([0.75, 0.75, 0.5, 0.5, 0.25, 0.25, 0.0])
    tuned = metric.compute(**inputs(tuning_evaluator()), tune_grid=[0.3, 0.5, 0.7], per_class=True, **options)
    assert tuned == tuning_evaluator().tune_and_evaluate(grid=(0.3, 0.5, 0.7), per_class=True)
    assert tuned["thresholds"] == {"A": 0.5, "B": 0.3}


def test_tuning_grid_is_sorted_and_deduplicated():
    # Same data as the global-tuning test, grid given out of order with a duplicate: the same choice (0.3).
    result = tuning_evaluator().tune(grid=(0.7, 0.3, 0.5, 0.3), per_class=False)
    assert result["grid"] == [0.3, 0.5, 0.7]
    assert result["objective_values"]["global"] == pytest.approx([6 / 7, 11 / 14, 15 / 28])
    assert result["thresholds"] == {"A": 0.3, "B": 0.3}


def test_macro_bootstrap_interval_brackets_the_macro_accuracy():
    from clarity_hf.evaluation.localization import LocalizationEvaluator

    classes = ["Atelectasis", "Cardiomegaly"]
    evaluator = LocalizationEvaluator(class_names=classes, boxed_classes=classes)
    heat = np.zeros((2, 8, 8), dtype=np.float32)
    heat[:, 2:6, 2:6] = 1.0  # one box at (16, 16, 32, 32) in a 64 x 64 frame, for both classes
    for i in range(20):
        # half of the Atelectasis boxes are hit, every Cardiomegaly box is hit
        x = 16 if i % 2 == 0 else 40
        boxes = [
            {
                "label": "Atelectasis",
                "x": x,
                "y": 16 if x == 16 else 40,
                "w": 32 if x == 16 else 20,
                "h": 32 if x == 16 else 20,
            },
            {"label": "Cardiomegaly", "x": 16, "y": 16, "w": 32, "h": 32},
        ]
        evaluator.add(str(i), heat, boxes, (64, 64), "eval")
    plain = evaluator.compute(0.5, split="eval")
    assert "macro_ci" not in plain["iou"]
    result = evaluator.compute(0.5, split="eval", n_bootstrap=300, seed=0)
    assert result["iou"]["macro"][2] == pytest.approx(0.75)  # (0.5 + 1.0) / 2 at T(IoU)=0.3
    low, high = result["iou"]["macro_ci"][2]
    assert low < 0.75 < high and high - low < 0.35
    assert (
        result["iou"]["macro_ci"][2]
        == evaluator.compute(0.5, split="eval", n_bootstrap=300, seed=0)["iou"]["macro_ci"][2]
    )
    # Only the varying class spreads the interval: with every box hit, the interval is a point.
    assert result["iou"]["per_class"]["Cardiomegaly"][2] == 1.0
