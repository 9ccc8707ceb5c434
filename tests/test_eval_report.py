# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Report (JSON round trip, Markdown with the numbers and the published rows) and the overlay figure grid."""

import json

import numpy as np
import pytest
from PIL import Image

from clarity_hf.configuration_clarity import NIH_PATHOLOGIES
from clarity_hf.evaluation.classification import compute_auroc
from clarity_hf.evaluation.figures import (
    GT_COLOR,
    HEADER_HEIGHT,
    LABEL_WIDTH,
    PRED_COLOR,
    jet_colormap,
    overlay_grid,
    overlay_heatmap,
    save_overlay_grid,
)
from clarity_hf.evaluation.localization import LocalizationEvaluator
from clarity_hf.evaluation.report import (
    PUBLISHED_RESULTS,
    build_report,
    evaluation_metadata,
    is_nih_official_test,
    load_report,
    render_markdown,
    write_report,
)

# an NIH ChestX-ray14 official-test evaluation: the only one the published rows stand beside
NIH_TEST = {
    "evaluation": evaluation_metadata(
        "NIH ChestX-ray14", "test", 25596, NIH_PATHOLOGIES, "32 x 32", split_source="official lists"
    )
}


def box(label, x, y, w, h):
    return {"label": label, "x": x, "y": y, "w": w, "h": h}


def localization_results():
    """Classes A, B; one tune and one eval image (10x10).

    tune: A GT (0, 0, 2, 2), heatmap 1.0 there -> exact at any threshold; B GT (0, 0, 4, 2), heatmap 1.0 on cols 0-1
          and 0.35 on cols 2-3 of rows 0-1 -> exact at 0.3, IoU 0.5 at 0.5. Grid (0.3, 0.5): 0.3 wins.
    eval: A GT (2, 2, 6, 6) and heatmap 1.0 on rows 2-5 x cols 2-3 -> at 0.3 box (2, 2, 4, 6), IoU 8/16 = 0.5:
          found at T 0.1-0.4 -> A = (1, 1, 1, 1, 0, 0, 0); IoBB 1 -> all 1. No B box on eval -> B is n/a.
    """
    evaluator = LocalizationEvaluator(class_names=("A", "B"), boxed_classes=("A", "B"))
    tune = np.zeros((2, 10, 10), dtype=np.float32)
    tune[0, 0:2, 0:2] = 1.0
    tune[1, 0:2, 0:2] = 1.0
    tune[1, 0:2, 2:4] = 0.35
    evaluator.add("t", tune, [box("A", 0, 0, 2, 2), box("B", 0, 0, 4, 2)], (10, 10), "tune")
    ev = np.zeros((2, 10, 10), dtype=np.float32)
    ev[0, 2:6, 2:4] = 1.0
    evaluator.add("e", ev, [box("A", 2, 2, 4, 4)], (10, 10), "eval")
    tuned = evaluator.tune_and_evaluate(grid=(0.3, 0.5))
    fixed = evaluator.compute(0.5, split="eval")
    return tuned, fixed


def models():
    # AUROC: positives 0.8, 0.4 vs negatives 0.5, 0.1 -> 3 of 4 pairs ordered = 0.75 (class A); class B all 0 -> NaN.
    scores = np.array([[0.8, 0.1], [0.4, 0.2], [0.5, 0.3], [0.1, 0.4]])
    labels = np.array([[1, 0], [1, 0], [0, 0], [0, 0]])
    tuned, fixed = localization_results()
    return {
        "CLARiTy-test": {
            "classification": compute_auroc(scores, labels, class_names=["A", "B"], n_bootstrap=20),
            "localization": tuned,
            "notes": "synthetic",
        },
        "baseline-fixed-0.5": {"localization": fixed},
    }


def test_report_json_round_trips(tmp_path):
    paths = write_report(tmp_path, models(), title="Test report", metadata=NIH_TEST)
    assert paths["json"].name == "report.json" and paths["markdown"].name == "report.md"
    loaded = load_report(paths["json"])
    assert loaded == build_report(models(), title="Test report", metadata=NIH_TEST)
    assert json.loads(json.dumps(loaded, allow_nan=False)) == loaded  # strictly valid JSON, no NaN
    model = loaded["models"]["CLARiTy-test"]
    assert model["classification"]["per_class"]["A"]["auroc"] == 0.75
    assert model["classification"]["per_class"]["B"]["auroc"] is None  # NaN -> null
    assert model["tuning"]["thresholds"] == {"A": 0.3, "B": 0.3}
    assert model["localization"]["split"] == "eval"
    assert model["localization"]["iou"]["per_class"]["A"] == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    assert model["localization"]["iou"]["per_class"]["B"] == [None] * 7
    assert loaded["models"]["baseline-fixed-0.5"]["tuning"] is None
    assert loaded["published"] == PUBLISHED_RESULTS


def test_markdown_contains_the_numbers_and_published_rows():
    markdown = render_markdown(build_report(models(), title="Test report", metadata=NIH_TEST))
    assert markdown.startswith("# Test report")
    # summary row of the tuned model: AUROC 0.750 (only class A defined), macro T(IoU) = A's row
    summary = next(line for line in markdown.splitlines() if line.startswith("| CLARiTy-test |"))
    cells = [c.strip() for c in summary.strip("|").split("|")]
    assert cells[1].startswith("0.750")
    assert cells[2:9] == ["1.000", "1.000", "1.000", "1.000", "0.000", "0.000", "0.000"]
    assert cells[9] == "0.00"  # FP / image
    assert cells[10] == "0.30 (tuned)"
    # the published rows, as given, side by side
    clarity = next(
        line for line in markdown.splitlines() if line.startswith("| CLARiTy-S-16-512 (published)")
    )
    assert [c.strip() for c in clarity.strip("|").split("|")][1:7] == [
        "0.818",
        "0.81",
        "0.69",
        "0.59",
        "0.47",
        "0.32",
    ]
    wang = next(line for line in markdown.splitlines() if line.startswith("| Wang et al. 2017"))
    assert "0.568" in wang and "0.062" in wang and "0.745" in wang
    assert "second-hand" in markdown
    # per-class AUROC table and the NaN class
    assert "## Per-class AUROC" in markdown
    assert "excluded from the mean (one label value): B" in markdown
    # per-model localization tables at every T(IoU) and T(IoBB)
    assert "## Localization: CLARiTy-test" in markdown and "## Localization: baseline-fixed-0.5" in markdown
    assert "T(IoU)=0.7" in markdown and "T(IoBB)=0.9" in markdown and "T(IoBB)=0.25" in markdown
    assert "Tuned on split `tune` (global" in markdown


def test_jet_colormap_endpoints():
    np.testing.assert_array_equal(
        jet_colormap(np.array([0.0, 0.5, 1.0])), [[0, 0, 128], [128, 255, 128], [128, 0, 0]]
    )


def test_overlay_heatmap_blends():
    image = np.full((4, 4), 100, dtype=np.uint8)
    heat = np.zeros((2, 2), dtype=np.float32)  # 0 -> jet(0) = (0, 0, 128), blended at constant opacity
    out = np.asarray(overlay_heatmap(image, heat, alpha=0.5, weighted_alpha=False))
    assert out.shape == (4, 4, 3)
    np.testing.assert_array_equal(out[0, 0], [50, 50, 114])  # 0.5 * 100 + 0.5 * (0, 0, 128)


def test_overlay_grid_size_and_box_colours(tmp_path):
    # Two 100x100 images, rows A and B, tile 100 -> scale 1, no offset.
    # Image 0, class A: GT (10, 10, 30, 30) -> xyxy (10, 10, 40, 40); heatmap 1.0 on rows/cols 60-89 -> pred
    # (60, 60, 90, 90). The outlines pass through (10, 25) in GT colour and (60, 75) in the predicted colour.
    images = [np.full((100, 100), 90, dtype=np.uint8), Image.new("L", (100, 100), 40)]
    heat0 = np.zeros((2, 100, 100), dtype=np.float32)
    heat0[0, 60:90, 60:90] = 1.0
    heat1 = np.zeros((2, 7, 7), dtype=np.float32)  # low-resolution heatmaps are fine too
    boxes = [[box("A", 10, 10, 30, 30)], []]
    grid = overlay_grid(
        images, [heat0, heat1], boxes, class_names=("A", "B"), classes=("A", "B"), tile_size=100
    )
    assert grid.size == (LABEL_WIDTH + 2 * 100, HEADER_HEIGHT + 2 * 100)
    assert grid.getpixel((LABEL_WIDTH + 10, HEADER_HEIGHT + 25)) == GT_COLOR
    assert grid.getpixel((LABEL_WIDTH + 60, HEADER_HEIGHT + 75)) == PRED_COLOR
    assert grid.getpixel((LABEL_WIDTH + 89, HEADER_HEIGHT + 75)) == PRED_COLOR  # right edge x1 - 1 = 89
    path = save_overlay_grid(
        tmp_path / "fig" / "grid.png", images, [heat0, heat1], boxes, ("A", "B"), ("A", "B"), tile_size=64
    )
    with Image.open(path) as saved:
        assert saved.format == "PNG"
        assert saved.size == (LABEL_WIDTH + 2 * 64, HEADER_HEIGHT + 2 * 64)


def test_overlay_grid_scales_non_square_images():
    # A 200 (high) x 100 (wide) image in a 100 tile: scale 0.5, 50 wide, x offset 25. GT (0, 0, 100, 200) fills
    # the scaled image: its left edge lands at x = 25, its top at y = 0.
    grid = overlay_grid(
        [np.zeros((200, 100), dtype=np.uint8)],
        [np.zeros((1, 4, 2), dtype=np.float32)],
        [[box("A", 0, 0, 100, 200)]],
        class_names=("A",),
        classes=("A",),
        tile_size=100,
    )
    assert grid.size == (LABEL_WIDTH + 100, HEADER_HEIGHT + 100)
    assert grid.getpixel((LABEL_WIDTH + 25, HEADER_HEIGHT + 50)) == GT_COLOR
    assert grid.getpixel((LABEL_WIDTH + 10, HEADER_HEIGHT + 50)) == (0, 0, 0)  # padding


@pytest.mark.parametrize("bad", [{"A": 0.5}, "otsu"])
def test_overlay_grid_rejects_bad_thresholds(bad):
    with pytest.raises(ValueError):
        overlay_grid([np.zeros((8, 8))], [np.zeros((2, 2, 2))], None, ("A", "B"), ("A", "B"), threshold=bad)


def test_published_numbers_keep_their_precision():
    markdown = render_markdown(build_report({}, include_published=True, metadata=NIH_TEST))
    li = next(line for line in markdown.splitlines() if line.startswith("| Li et al. 2022"))
    assert "| 0.40 |" in li  # given as 0.40, not 0.4
    pcan = next(line for line in markdown.splitlines() if line.startswith("| PCAN"))
    assert "| 0.10 |" in pcan
    assert "(published)" not in render_markdown(build_report({}, include_published=False, metadata=NIH_TEST))


def test_ablation_flags_only_deltas_beyond_seed_spread_and_bootstrap_interval():
    from clarity_hf.evaluation.ablation import ablation_markdown, aggregate_ablation

    def run(auroc, low, high, iou):
        return {"mean_auroc": (auroc, low, high), "iou_0.3": (iou, None, None)}

    runs = {
        # reference: AUROC 0.80 / 0.82 (range [0.80, 0.82]), interval bounds averaging [0.78, 0.84]
        "full": [run(0.80, 0.77, 0.83, 0.50), run(0.82, 0.79, 0.85, 0.60)],
        # beyond both: ranges disjoint and 0.70 < 0.78
        "w/o A": [run(0.69, 0.66, 0.72, 0.52), run(0.71, 0.68, 0.74, 0.58)],
        # ranges disjoint (0.835 > 0.82) but the mean 0.8375 lies inside [0.78, 0.84]
        "w/o B": [run(0.835, 0.80, 0.87, 0.55), run(0.84, 0.81, 0.87, 0.55)],
        # outside the interval on the mean (0.765) but its seeds overlap the reference's range
        "w/o C": [run(0.72, 0.69, 0.75, 0.55), run(0.81, 0.78, 0.84, 0.55)],
        # a single seed is never flagged
        "w/o D": [run(0.50, 0.47, 0.53, 0.10)],
    }
    rows = aggregate_ablation(runs, "full", switches={"w/o A": "a=False"}, metrics=("mean_auroc", "iou_0.3"))
    by = {row["variant"]: row["metrics"] for row in rows}
    assert [row["variant"] for row in rows] == ["full", "w/o A", "w/o B", "w/o C", "w/o D"]
    full = by["full"]["mean_auroc"]
    assert full["mean"] == pytest.approx(0.81) and full["min"] == 0.80 and full["max"] == 0.82
    assert full["std"] == pytest.approx(np.std([0.80, 0.82], ddof=1))
    assert full["ci"] == pytest.approx((0.78, 0.84))
    a = by["w/o A"]["mean_auroc"]
    assert a["delta"] == pytest.approx(-0.11)
    assert a["beyond_seed_spread"] and a["beyond_ci"] and a["flagged"]
    b = by["w/o B"]["mean_auroc"]
    assert b["beyond_seed_spread"] and not b["beyond_ci"] and not b["flagged"]
    c = by["w/o C"]["mean_auroc"]
    assert not c["beyond_seed_spread"] and c["beyond_ci"] and not c["flagged"]
    d = by["w/o D"]["mean_auroc"]
    assert d["beyond_seed_spread"] is None and not d["flagged"]
    # No interval for the localization metric here: never flagged, however large the delta.
    assert by["w/o D"]["iou_0.3"]["beyond_ci"] is None and not by["w/o D"]["iou_0.3"]["flagged"]

    text = ablation_markdown(rows, steps=600, seeds=[0, 1])
    assert "0.810 ± 0.014 [0.800, 0.820]" in text
    assert "**-0.110** ✓" in text and text.count("✓") == 2  # the legend and the one flagged cell
    assert "seeds 0, 1" in text and "600 optimizer steps" in text
    assert text.rstrip().endswith("w/o A (mean AUROC).")
    assert "`a=False`" in text
    # What two seeds are worth is said: disjoint ranges by chance with probability 2 / C(4, 2).
    assert "probability 0.33 when nothing changes (2 / C(4, 2))" in text
    assert "probability 0.1 when nothing changes (2 / C(6, 3))" in ablation_markdown(rows, 600, [0, 1, 2])


def test_prediction_figure_boxes_only_the_classes_the_model_claims(monkeypatch):
    from clarity_hf.evaluation import figures

    classes = ["Atelectasis", "Cardiomegaly", "Nodule"]
    heat = np.zeros((3, 8, 8), dtype=np.float32)
    heat[:, 2:5, 2:5] = 1.0  # every class's heatmap would give a box
    probabilities = np.array([0.9, 0.2, 0.6])
    thresholds = {"Atelectasis": 0.5, "Cardiomegaly": 0.3, "Nodule": 0.7}  # only Atelectasis is claimed
    truth = [{"label": "Cardiomegaly", "x": 10, "y": 10, "w": 20, "h": 20}]
    image = Image.fromarray(np.zeros((64, 64), dtype=np.uint8))
    calls = []
    real = figures.draw_boxes
    monkeypatch.setattr(
        figures,
        "draw_boxes",
        lambda tile, b, color, label=None, **kw: (
            calls.append((color, label, len(b))) or real(tile, b, color, label, **kw)
        ),
    )
    figure = figures.prediction_figure(
        [image],
        [probabilities],
        [heat],
        [truth],
        thresholds,
        class_names=classes,
        classes=classes,
        tile_size=64,
    )
    colors = dict(zip(classes, figures.CLASS_COLORS))
    predicted = [c for c in calls if c[1] and c[1] != "Card"]
    assert [(c[0], c[1]) for c in predicted] == [(colors["Atelectasis"], "Atel 0.90")] and predicted[0][
        2
    ] == 1
    assert [(c[0], c[1]) for c in calls if c[1] == "Card"] == [
        (colors["Cardiomegaly"], "Card")
    ]  # ground truth
    assert {c[0] for c in calls} == {colors["Atelectasis"], colors["Cardiomegaly"]}  # no other class drawn
    # Pixels: the model panel (left tile) holds the claimed class's colour and none of the others'.
    panel = np.asarray(figure)[figures.HEADER_HEIGHT : figures.HEADER_HEIGHT + 64, :64].reshape(-1, 3)
    present = {name for name, color in colors.items() if (panel == color).all(axis=1).any()}
    assert present == {"Atelectasis"}
    gt_panel = np.asarray(figure)[figures.HEADER_HEIGHT : figures.HEADER_HEIGHT + 64, 64:128].reshape(-1, 3)
    assert (gt_panel == colors["Cardiomegaly"]).all(axis=1).any()
    with pytest.raises(ValueError, match="operating threshold"):
        figures.prediction_figure(
            [image],
            [probabilities],
            [heat],
            [truth],
            {"Atelectasis": 0.5},
            class_names=classes,
            classes=classes,
        )


def test_youden_thresholds_at_the_best_tpr_minus_fpr():
    from clarity_hf.evaluation.classification import youden_thresholds

    scores = np.array([[0.1, 0.5], [0.6, 0.5], [0.35, 0.5], [0.8, 0.5], [0.7, 0.5]])
    labels = np.array([[0, 0], [0, 0], [1, 0], [1, 0], [1, 0]])
    chosen = youden_thresholds(scores, labels, ["a", "b"])
    # Cuts: 0.8 -> J 1/3, 0.7 -> 2/3, 0.6 -> 2/3 - 1/2, 0.35 -> 1 - 1/2; the Youden point is 0.7.
    assert chosen["a"] == pytest.approx(0.7)
    assert chosen["b"] == 0.5  # one label value: the default


def test_every_row_states_its_map_grid_and_the_overview_comes_first():
    entries = models()
    name = next(iter(entries))
    entries[name]["map"] = {"grid": "12 x 12"}
    other = list(entries)[1]
    entries[other]["map"] = {"grid": "24 x 24", "stage": 0}
    markdown = render_markdown(build_report(entries, title="T", overview="## In short\n\nWhat was compared."))
    assert markdown.startswith("# T\n\n## In short\n\nWhat was compared.\n")
    header = next(line for line in markdown.splitlines() if line.startswith("| model |"))
    assert header.rstrip().endswith("| map grid |")
    row = next(line for line in markdown.splitlines() if line.startswith(f"| {name} |"))
    assert row.rstrip().endswith("| 12 x 12 |")
    row = next(line for line in markdown.splitlines() if line.startswith(f"| {other} |"))
    assert row.rstrip().endswith("| 24 x 24, stage 0 |")
    assert "map grid: 24 x 24, stage 0." in markdown


def test_published_rows_only_beside_an_nih_official_test_evaluation():
    three = evaluation_metadata("CSV hospital.csv", "validation", 37, ["Effusion", "Mass", "Nodule"], "4 x 4")
    report = build_report(models(), title="T", metadata={"evaluation": three})
    assert report["published"] is None and report["metadata"]["evaluation"]["num_images"] == 37
    markdown = render_markdown(report)
    assert "(published)" not in markdown and "0.818" not in markdown
    assert (
        "- evaluated on: CSV hospital.csv, split `validation`, 37 images, 3 labels (Effusion, Mass, Nodule), "
        "map grid 4 x 4" in markdown
    )
    assert "No published row is shown" in markdown
    # an NIH evaluation that is not the official test split with its 14 labels does not qualify either
    for change in (
        {"split": "validation"},
        {"split_source": "fallback"},
        {"label_names": NIH_PATHOLOGIES[:3]},
        {"dataset_name": "NIH-like"},
        {"synthetic": True},
    ):
        assert not is_nih_official_test({"evaluation": {**NIH_TEST["evaluation"], **change}}), change
    assert is_nih_official_test(NIH_TEST)
    shown = render_markdown(build_report(models(), title="T", metadata=NIH_TEST))
    assert "CLARiTy-S-16-512 (published)" in shown and "25596 images, 14 labels" in shown
