# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""A folder is a model anywhere: the folders users make (a plain `save_pretrained`, training's `best_model`,
`transformers.Trainer.save_model`, a converted DINO checkpoint, a 14-label model fine-tuned to 3 labels, single-label
and regression models) load in a fresh process that never imports clarity_hf, with AutoModel, AutoImageProcessor and
both pipelines (remote code), and every scoring path (processor, both pipelines, clarity-predict in both modes, the
Space, ONNX metadata) names and computes the scores from the model's config alone.

One fresh subprocess checks every folder (loading remote code is the slow part)."""

from __future__ import annotations

import csv
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from hub_testing import load_space_app, real_fixtures, run_without_clarity_hf
from PIL import Image
from transformers import ViTConfig, ViTModel

from clarity_hf import NIH_PATHOLOGIES, ClarityConfig, ClarityForMultiLabelLocalization, ClarityImageProcessor
from clarity_hf.commands.cli import predict_main
from clarity_hf.hub import HUB_CODE_FILES, load_for_inference
from clarity_hf.hub.reload_check import WITHOUT_CLARITY_HF
from clarity_hf.image_processing_clarity import scores_from_logits
from clarity_hf.training.preprocessing import run_processor

FIXTURES = real_fixtures()
THREE = {0: "Cardiomegaly", 1: "Effusion", 2: "Pneumothorax"}
# The starting folder's processor differs from the recipe in every field a run could silently replace.
CUSTOM_PREPROCESSING = {
    "size": 64,
    "resample": "bicubic",
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.25, 0.25, 0.25],
}
KINDS = (
    "save_pretrained",
    "best_model",
    "trainer_save_model",
    "dino",
    "three_labels",
    "single_label",
    "regression",
)
# Folders of a multi-output model of another problem type: the numbers every path gives must agree.
PROBLEM_KINDS = ("three_labels", "single_label", "regression")


def _tiny_model(seed: int = 0, **config) -> ClarityForMultiLabelLocalization:
    torch.manual_seed(seed)
    return ClarityForMultiLabelLocalization(ClarityConfig.from_preset("clarity-tiny", **config)).eval()


def _with_varied_heads(model):
    """Spread the head biases so that scores differ clearly between classes (a fresh head gives ~0.5 everywhere)."""
    with torch.no_grad():
        for head in (model.token_classifier, model.pooled_classifier):
            head.bias.copy_(torch.linspace(-1.5, 1.5, head.bias.shape[0]))
    return model


def _save(model, folder, processor=None):
    model.save_pretrained(folder)
    if processor is not None:
        processor.save_pretrained(folder)
    return folder


def _best_model(start, work):
    from training_helpers import tiny_config

    from clarity_hf.training import train

    config = tiny_config(
        work / "run",
        model_name_or_path=str(start),
        image_size=None,
        model_config_overrides=None,
        synthetic_image_size=64,
        synthetic_num_train=8,
        synthetic_num_validation=25,
        max_steps=1,
        report_to=["none"],
    )
    result = train(config)
    return Path(result.best_model_dir)


def _trainer_save_model(work):
    from transformers import Trainer, TrainingArguments

    model = _tiny_model(seed=2)
    generator = torch.Generator().manual_seed(0)
    rows = [
        {
            "pixel_values": torch.randn(3, 64, 64, generator=generator),
            "labels": torch.randint(0, 2, (14,)).float(),
        }
        for _ in range(4)
    ]
    arguments = TrainingArguments(
        output_dir=str(work / "hf_trainer"),
        max_steps=1,
        per_device_train_batch_size=2,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=arguments, train_dataset=rows)
    trainer.train()
    folder = work / "trainer_save_model"
    trainer.save_model(str(folder))  # no processing_class: the model's save_pretrained writes the default one
    return folder


def _dino(work):
    from clarity_hf.commands import convert_dino

    torch.manual_seed(3)
    tiny = ClarityConfig.from_preset("clarity-tiny")
    vit = ViTModel(
        ViTConfig(
            hidden_size=tiny.hidden_size,
            num_hidden_layers=tiny.num_hidden_layers,
            num_attention_heads=tiny.num_attention_heads,
            intermediate_size=tiny.intermediate_size,
            patch_size=tiny.patch_size,
            image_size=tiny.image_size,
            layer_norm_eps=1e-6,
        ),
        add_pooling_layer=False,
    )
    vit.save_pretrained(work / "dino_vit")
    folder = work / "dino"
    convert_dino.main(
        ["--checkpoint", str(work / "dino_vit"), "--preset", "clarity-tiny", "--output", str(folder)]
    )
    return folder


def _three_labels(work):
    """A 14-label folder fine-tuned to 3 labels the transformers way, saved (model + the folder's processor)."""
    fourteen = _save(_tiny_model(seed=4), work / "fourteen", ClarityImageProcessor(size=64))
    model = ClarityForMultiLabelLocalization.from_pretrained(
        fourteen, num_labels=3, id2label=THREE, ignore_mismatched_sizes=True
    )
    _with_varied_heads(model)
    return _save(model.eval(), work / "three_labels", ClarityImageProcessor.from_pretrained(fourteen))


@pytest.fixture(scope="module")
def sixteen_bit_png(tmp_path_factory):
    """A 12-bit X-ray stored in a 16-bit PNG (the NIH fixture times 16, plus noise): an 8-bit decode loses it."""
    rng = np.random.default_rng(0)
    gray = np.asarray(Image.open(FIXTURES["png"]).convert("L"), dtype=np.float64)
    values = np.clip(gray * 16 + rng.integers(0, 16, gray.shape), 0, 4095).astype(np.uint16)
    path = tmp_path_factory.mktemp("png16") / "xray_12bit.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I;16")
    return path


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    work = tmp_path_factory.mktemp("user_folders")
    start = _save(
        _with_varied_heads(_tiny_model(seed=1)),
        work / "save_pretrained",
        ClarityImageProcessor(**CUSTOM_PREPROCESSING),
    )
    return {
        "save_pretrained": start,
        "best_model": _best_model(start, work),  # trained from `start`: keeps its custom processor
        "trainer_save_model": _trainer_save_model(work),
        "dino": _dino(work),
        "three_labels": _three_labels(work),
        "single_label": _save(
            _with_varied_heads(
                _tiny_model(seed=5, num_labels=3, id2label=THREE, problem_type="single_label_classification")
            ),
            work / "single_label",
        ),
        "regression": _save(
            _with_varied_heads(
                _tiny_model(seed=6, id2label={0: "cardiothoracic_ratio", 1: "age"}, problem_type="regression")
            ),
            work / "regression",
        ),
    }


FRESH_SCRIPT = WITHOUT_CLARITY_HF + textwrap.dedent(
    """
    import json
    import torch
    from transformers import AutoImageProcessor, AutoModel, pipeline

    jobs, out_path = json.loads(sys.argv[1]), sys.argv[2]
    results = {}
    for kind, (folder, images) in jobs.items():
        model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
        processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
        localize = pipeline("chest-xray-localization", model=folder, trust_remote_code=True)
        classify = pipeline("image-classification", model=folder, trust_remote_code=True)
        per_image = {}
        for image in images:
            with torch.no_grad():
                outputs = model(**processor(image, return_tensors="pt"))
            ranked = processor.post_process_image_classification(
                outputs, id2label=model.config.id2label, problem_type=model.config.problem_type
            )[0]
            located = localize(image, threshold=0.0, return_heatmaps=False)
            per_image[image] = {
                "logits": outputs.logits[0].tolist(),
                "processor": {entry["label"]: entry["score"] for entry in ranked},
                "localization": located["scores"],
                "boxes": len(located["boxes"]),
                "widget": {e["label"]: e["score"] for e in classify(image, top_k=model.config.num_labels)},
            }
        results[kind] = {
            "classes": [type(obj).__module__ + "." + type(obj).__name__ for obj in (model, processor, localize, classify)],
            "labels": [model.config.id2label[i] for i in range(model.config.num_labels)],
            "images": per_image,
        }
    json.dump(results, open(out_path, "w"))
    print("clarity_hf imported:", any(name.startswith("clarity_hf") for name in sys.modules if sys.modules[name]))
    """
)


@pytest.fixture(scope="module")
def fresh(folders, sixteen_bit_png, tmp_path_factory):
    """Every folder, loaded and run in ONE new Python process where `import clarity_hf` fails."""
    work = tmp_path_factory.mktemp("fresh")
    images = [str(FIXTURES["png"])]
    jobs = {kind: (str(folder), images) for kind, folder in folders.items()}
    jobs["save_pretrained"] = (
        jobs["save_pretrained"][0],
        images + [str(sixteen_bit_png), str(FIXTURES["dicom"])],
    )
    script = work / "fresh.py"
    script.write_text(FRESH_SCRIPT)
    run = run_without_clarity_hf(script, json.dumps(jobs), work / "out.json")
    assert run.stdout.strip().endswith("clarity_hf imported: False")
    return json.loads((work / "out.json").read_text())


def _local_scores(folder, image) -> tuple[list[float], dict[str, float]]:
    """The reference in this process: clarity_hf's classes, the folder's processor, the config's problem type."""
    model = ClarityForMultiLabelLocalization.from_pretrained(folder).eval()
    processor = ClarityImageProcessor.from_pretrained(folder)
    with torch.no_grad():
        logits = model(**processor(str(image), return_tensors="pt")).logits
    scores = scores_from_logits(logits, model.config.problem_type)[0].tolist()
    return logits[0].tolist(), dict(zip(model.pathologies, scores))


# --------------------------------------------------------------------------------------------- complete folders


@pytest.mark.parametrize("kind", KINDS)
def test_every_saved_folder_is_complete(folders, kind):
    folder = folders[kind]
    assert {*HUB_CODE_FILES, "config.json", "model.safetensors", "preprocessor_config.json"} <= {
        p.name for p in folder.iterdir()
    }
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_clarity.ClarityForMultiLabelLocalization"
    assert config["auto_map"]["AutoConfig"] == "configuration_clarity.ClarityConfig"
    assert config["custom_pipelines"]["chest-xray-localization"]["impl"] == (
        "pipeline_clarity.ClarityLocalizationPipeline"
    )
    assert config["custom_pipelines"]["image-classification"] == {
        "impl": "pipeline_clarity.ClarityImageClassificationPipeline",
        "pt": ["AutoModelForImageClassification"],
        "tf": [],
        "type": "image",
    }
    # One label set: id2label and label2id both written and mirror each other.
    assert {name: int(index) for index, name in config["id2label"].items()} == config["label2id"]
    processor = json.loads((folder / "preprocessor_config.json").read_text())
    assert processor["auto_map"] == {"AutoImageProcessor": "image_processing_clarity.ClarityImageProcessor"}
    assert "id2label" not in processor


@pytest.mark.parametrize("kind", KINDS)
def test_folders_load_in_a_fresh_process_and_every_path_agrees(folders, fresh, kind):
    result = fresh[kind]
    assert all(name.startswith("transformers_modules.") for name in result["classes"]), result["classes"]
    assert [name.rsplit(".", 1)[1] for name in result["classes"]] == [
        "ClarityForMultiLabelLocalization",
        "ClarityImageProcessor",
        "ClarityLocalizationPipeline",
        "ClarityImageClassificationPipeline",
    ]
    model = ClarityForMultiLabelLocalization.from_pretrained(folders[kind])
    assert result["labels"] == model.pathologies
    for image, out in result["images"].items():
        logits, scores = _local_scores(folders[kind], image)
        np.testing.assert_allclose(out["logits"], logits, atol=1e-5)
        for path in ("processor", "localization", "widget"):
            assert set(out[path]) == set(scores), path
            np.testing.assert_allclose([out[path][k] for k in scores], list(scores.values()), atol=1e-5)
        assert out["boxes"] > 0  # threshold 0: every class with a non-negative score has a box


def test_training_from_a_folder_keeps_its_preprocessing(folders):
    start = json.loads((folders["save_pretrained"] / "preprocessor_config.json").read_text())
    best = json.loads((folders["best_model"] / "preprocessor_config.json").read_text())
    for key in ("size", "resample", "image_mean", "image_std", "intensity_scaling", "do_rescale"):
        assert best[key] == start[key], key
    assert start["resample"] == 3 and start["image_mean"] == [0.5, 0.5, 0.5]  # not the recipe's values
    # An option of the run overrides one field and keeps the rest, and says so.
    from training_helpers import tiny_config

    messages = []
    config = tiny_config(
        "unused", model_name_or_path=str(folders["save_pretrained"]), image_std=[0.3, 0.3, 0.3]
    )
    processor = run_processor(config, 64, report=messages.append)
    assert processor.image_std == [0.3, 0.3, 0.3] and processor.image_mean == [0.5, 0.5, 0.5]
    assert processor.resample == 3
    assert "kept from" in messages[0] and "overridden by the run's options: {'image_std'" in messages[0]
    # Without a starting folder (or a folder without a processor): the recipe, which is the processor's default.
    recipe = run_processor(tiny_config("unused"), 224, report=messages.append)
    assert recipe.to_dict() == ClarityImageProcessor().to_dict()
    assert "the recipe's" in messages[-1]
    assert ClarityImageProcessor().resample == int(Image.Resampling.BILINEAR)
    no_processor = folders["save_pretrained"].parent / "no_processor"
    _tiny_model().save_pretrained(no_processor)
    (no_processor / "preprocessor_config.json").unlink()
    fallback = load_for_inference(no_processor).image_processor
    assert fallback.to_dict() == ClarityImageProcessor(size=64).to_dict()


# ---------------------------------------------------------------------------------------------- labels and scores


def _every_local_path(folder, tmp_path, capsys) -> dict[str, dict[str, float]]:
    """Scores of the fixture PNG by every in-process path: processor, pipeline, Space, clarity-predict (one image,
    then the archive table)."""
    image = str(FIXTURES["png"])
    _, processor_scores = _local_scores(folder, image)
    pipe = load_for_inference(folder)
    space_scores, _, _ = load_space_app(folder, "clarity_space_app_folders").predict(
        image, next(iter(processor_scores)), 0.5
    )
    assert (
        predict_main([image, "--model", str(folder), "--output", str(tmp_path / "o.png"), "--device", "cpu"])
        == 0
    )
    one = json.loads(capsys.readouterr().out)
    out = tmp_path / "table"
    argv = [image, "--model", str(folder), "--output-dir", str(out), "--num-workers", "0", "--no-progress"]
    assert predict_main([*argv, "--device", "cpu"]) == 0
    capsys.readouterr()
    with open(out / "predictions.csv", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    return {
        "processor": processor_scores,
        "pipeline": pipe(image, return_heatmaps=False)["scores"],
        "space": space_scores,
        "predict": one["scores"],
        "archive": {name: float(row[name]) for name in processor_scores},
        "archive_boxes": {b["label"]: b["score"] for b in json.loads(row["boxes"])},
        "predict_boxes": {b["label"]: b["score"] for b in one["boxes"]},
    }


@pytest.mark.parametrize("kind", PROBLEM_KINDS)
def test_every_scoring_path_uses_the_config_labels_and_problem_type(folders, fresh, kind, tmp_path, capsys):
    folder = folders[kind]
    model = ClarityForMultiLabelLocalization.from_pretrained(folder)
    labels = model.pathologies
    paths = _every_local_path(folder, tmp_path, capsys)
    reference = paths["processor"]
    assert list(reference) == labels
    for name in ("pipeline", "space", "predict", "archive"):
        assert list(paths[name]) == labels, name
        np.testing.assert_allclose(
            [paths[name][k] for k in labels], [reference[k] for k in labels], atol=1e-5
        )
    widget = fresh[kind]["images"][str(FIXTURES["png"])]["widget"]
    np.testing.assert_allclose([widget[k] for k in labels], [reference[k] for k in labels], atol=1e-5)
    logits, _ = _local_scores(folder, FIXTURES["png"])
    values = np.array([reference[k] for k in labels])
    if kind == "three_labels":
        assert labels == list(THREE.values()) and model.config.label2id == {v: k for k, v in THREE.items()}
        np.testing.assert_allclose(values, 1 / (1 + np.exp(-np.array(logits))), atol=1e-6)
        assert not set(labels) & (set(NIH_PATHOLOGIES) - set(THREE.values()))
    elif kind == "single_label":
        assert values.sum() == pytest.approx(1.0, abs=1e-6)  # softmax
        np.testing.assert_allclose(values, np.exp(logits) / np.exp(logits).sum(), atol=1e-6)
    else:
        np.testing.assert_allclose(values, logits, atol=1e-5)  # identity
    # Box scores are p_c times the peak heat: they never exceed the class's score, in both clarity-predict modes.
    for name in ("archive_boxes", "predict_boxes"):
        assert set(paths[name]) <= set(labels)
        for label, score in paths[name].items():
            assert score <= reference[label] + 1e-5


def test_processor_refuses_labels_of_another_model(folders):
    model = ClarityForMultiLabelLocalization.from_pretrained(folders["three_labels"]).eval()
    processor = ClarityImageProcessor.from_pretrained(folders["three_labels"])
    with torch.no_grad():
        outputs = model(**processor(str(FIXTURES["png"]), return_tensors="pt"))
    with pytest.raises(ValueError, match="id2label names 14 labels but the model outputs 3 scores"):
        processor.post_process_image_classification(outputs, id2label=dict(enumerate(NIH_PATHOLOGIES)))
    named = processor.post_process_image_classification(outputs, id2label=model.config.id2label)[0]
    assert {entry["label"] for entry in named} == set(THREE.values())


@pytest.mark.parametrize("kind", ["three_labels", "single_label"])
def test_onnx_metadata_names_the_labels_and_the_score_function(folders, kind, tmp_path):
    onnx = pytest.importorskip("onnx", reason="needs the onnx extra")
    pytest.importorskip("onnxscript", reason="needs the onnx extra")
    from clarity_hf.inference.onnx import export_onnx

    path = export_onnx(folders[kind], tmp_path / "model.onnx")
    metadata = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(metadata["id2label"]) == {str(k): v for k, v in THREE.items()}
    expected = {"three_labels": "sigmoid", "single_label": "softmax"}[kind]
    assert metadata["score_function"] == expected
    assert metadata["problem_type"] == ClarityConfig.from_pretrained(folders[kind]).problem_type


# ------------------------------------------------------------------------------------------------- widget decoding


def test_widget_decodes_16_bit_png_and_dicom_like_the_processor(folders, fresh, sixteen_bit_png):
    from transformers import ImageClassificationPipeline

    folder = folders["save_pretrained"]
    for image in (sixteen_bit_png, FIXTURES["dicom"]):
        widget = fresh["save_pretrained"]["images"][str(image)]["widget"]
        _, scores = _local_scores(folder, image)
        np.testing.assert_allclose([widget[k] for k in scores], list(scores.values()), atol=1e-5)
    # transformers' own image-classification pipeline decodes to 8-bit RGB first: on this 12-bit PNG it differs,
    # so the agreement above is the widget path reading the file through xray_io, not a coincidence.
    model = ClarityForMultiLabelLocalization.from_pretrained(folder).eval()
    builtin = ImageClassificationPipeline(
        model=model, image_processor=ClarityImageProcessor.from_pretrained(folder)
    )
    eight_bit = {e["label"]: e["score"] for e in builtin(str(sixteen_bit_png), top_k=14)}
    _, scores = _local_scores(folder, sixteen_bit_png)
    assert max(abs(eight_bit[k] - scores[k]) for k in scores) > 1e-3


def test_wrong_input_size_is_refused_unless_interpolation_is_asked_for(folders):
    model = ClarityForMultiLabelLocalization.from_pretrained(folders["save_pretrained"]).eval()
    pixel_values = ClarityImageProcessor(size=128)(str(FIXTURES["png"]), return_tensors="pt")["pixel_values"]
    with pytest.raises(ValueError, match=r"Input image size \(128\*128\) doesn't match model \(64\*64\)"):
        model(pixel_values)
    with torch.no_grad():
        out = model(pixel_values, interpolate_pos_encoding=True)
    assert out.heatmaps.shape[-2:] == (16, 16) and torch.isfinite(out.logits).all()
