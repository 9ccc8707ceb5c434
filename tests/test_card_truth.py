"""The model card states what was measured, on what, and shows the paper's rows only where they compare."""

import numpy as np
from huggingface_hub import ModelCard

from clarity_hf import ClarityConfig
from clarity_hf.configuration_clarity import NIH_PATHOLOGIES
from clarity_hf.convert import DINO_HUB_IDS
from clarity_hf.evaluation.classification import compute_auroc
from clarity_hf.evaluation.report import PUBLISHED_RESULTS, build_report, evaluation_metadata
from clarity_hf.hub.cards import render_model_card

THREE = ["Effusion", "Mass", "Nodule"]


def _report(labels, evaluation, training=None):
    rng = np.random.default_rng(7)
    truth = rng.random((60, len(labels))) < 0.4
    scores = truth * 0.8 + rng.normal(size=truth.shape)
    classification = compute_auroc(scores, truth, class_names=list(labels), n_bootstrap=20, seed=0)
    metadata = {"evaluation": evaluation, "training": training or {}}
    return build_report({"mine": {"classification": classification}}, title="t", metadata=metadata)


def _config(labels, **extra):
    return ClarityConfig.from_preset(
        "clarity-tiny",
        id2label=dict(enumerate(labels)),
        label2id={n: i for i, n in enumerate(labels)},
        **extra,
    )


def test_card_of_a_3_class_validation_evaluation():
    evaluation = evaluation_metadata("CSV hospital.csv", "validation", 60, THREE, "4 x 4")
    card = render_model_card(_config(THREE), _report(THREE, evaluation), repo_id="me/clarity-mine")
    text = card.text
    assert "CSV hospital.csv, split `validation`, 60 images, 3 labels (Effusion, Mass, Nodule)" in text
    assert "(3 classes:\nEffusion, Mass, Nodule)" in text  # the model's own labels in the description
    assert "Mean AUROC (3 classes)" in text and "Mean AUROC (14 classes)" not in text
    assert "(published)" not in text and "0.818" not in text
    for row in PUBLISHED_RESULTS["rows"]:
        assert row["model"] not in text
    assert "No published figure is shown" in text
    # a randomly initialised model names no base model; the model-index says what was measured on
    assert card.data.base_model is None
    (result, *_) = card.data.eval_results
    assert (result.dataset_name, result.dataset_split) == ("CSV hospital.csv", "validation")
    assert ModelCard(str(card)).data.base_model is None


def test_card_of_an_nih_official_test_evaluation_shows_the_published_rows():
    evaluation = evaluation_metadata(
        "NIH ChestX-ray14", "test", 25596, NIH_PATHOLOGIES, "32 x 32", split_source="official lists"
    )
    config = _config(NIH_PATHOLOGIES, base_model_id=DINO_HUB_IDS[(384, 16)])
    card = render_model_card(config, _report(NIH_PATHOLOGIES, evaluation), repo_id="me/clarity-nih")
    assert "CLARiTy-S-16-512 (published)" in card.text and "Mean AUROC (14 classes)" in card.text
    assert "NIH ChestX-ray14, split `test`, 25596 images, 14 labels" in card.text
    assert card.data.base_model == "facebook/dino-vits16"  # recorded by the DINO conversion
    assert (
        "ViT-Ti/16" not in card.text and "a ViT (" in card.text
    )  # clarity-tiny is no ViT-S: its size is stated
