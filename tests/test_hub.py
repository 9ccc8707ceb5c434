# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Hub export: files, model card from the evaluation JSON, upload to a loopback Hub stand-in, the custom pipeline in
a fresh process without clarity_hf, and the refusal of pickle checkpoints."""

import ast
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from hub_testing import (
    REPO_ROOT,
    HubStandIn,
    make_results,
    make_tiny_export,
    real_fixtures,
    run_without_clarity_hf,
)
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results
from PIL import Image

from clarity_hf import NIH_BOXED_PATHOLOGIES, NIH_PATHOLOGIES
from clarity_hf.evaluation.report import PUBLISHED_RESULTS
from clarity_hf.hub import (
    HUB_CODE_FILES,
    UnsafeCheckpointError,
    check_safetensors_only,
    describe_folder,
    load_for_inference,
    push_to_hub,
    render_model_card,
)
from clarity_hf.hub.reload_check import WITHOUT_CLARITY_HF

FIXTURES = real_fixtures()
MODEL = "clarity-tiny-test"  # the report's first model entry, the one the card reads by default
PAPER = next(row for row in PUBLISHED_RESULTS["rows"] if row["model"] == "CLARiTy-S-16-512")


@pytest.fixture(scope="module")
def results():
    return make_results(seed=3, synthetic_only=True)


@pytest.fixture(scope="module")
def export(tmp_path_factory, results):
    folder = tmp_path_factory.mktemp("hub_export")
    files, model = make_tiny_export(folder, results, example_images=[FIXTURES["png"], FIXTURES["dicom"]])
    return folder, files, model


def test_export_writes_every_file(export):
    folder, files, _ = export
    names = {p.relative_to(folder).as_posix() for p in files}
    expected = {
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "README.md",
        "eval_results.json",
    }
    expected |= set(HUB_CODE_FILES) | {
        "examples/00_00000001_000.png",
        "examples/01_siim_pneumothorax_example.png",
    }
    assert expected <= names
    assert not any(name.endswith((".bin", ".pt", ".pth", ".pkl")) for name in names)
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_clarity.ClarityConfig",
        "AutoModel": "modeling_clarity.ClarityForMultiLabelLocalization",
        "AutoModelForImageClassification": "modeling_clarity.ClarityForMultiLabelLocalization",
        "AutoModelForObjectDetection": "modeling_clarity.ClarityForMultiLabelLocalization",
    }
    assert config["custom_pipelines"]["chest-xray-localization"] == {
        "impl": "pipeline_clarity.ClarityLocalizationPipeline",
        "pt": ["AutoModel"],
        "tf": [],
        "type": "image",
    }
    processor = json.loads((folder / "preprocessor_config.json").read_text())
    assert processor["auto_map"] == {"AutoImageProcessor": "image_processing_clarity.ClarityImageProcessor"}
    assert processor["image_processor_type"] == "ClarityImageProcessor"
    # Hub code files import only torch / transformers / numpy / PIL and siblings (relatively).
    for name in HUB_CODE_FILES:
        outside = _absolute_imports((folder / name).read_text()) - {
            "torch",
            "transformers",
            "numpy",
            "PIL",
            "dataclasses",
            "copy",
            "os",
            "math",
            "pathlib",
            "typing",
            "collections",
            "json",
            "io",
            "warnings",
            "__future__",
            "pydicom",
            "scipy",
        }
        assert not outside, f"{name} imports {outside}"
    dicom_example = Image.open(folder / "examples/01_siim_pneumothorax_example.png")
    assert dicom_example.mode == "L" and min(dicom_example.size) > 64


def _cli():
    """`clarity push` (its `main(argv)` runs in this process)."""
    from clarity_hf.commands import push

    return push


def _table_rows(text: str, first_cell: str) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        cells = [c.strip().strip("*").strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            rows.append(cells)
    return rows


def test_card_parses_and_metadata_validates(export, results):
    folder, _, _ = export
    card = ModelCard.load(folder / "README.md")
    data = card.data
    assert data.pipeline_tag == "image-classification"
    assert data.library_name == "transformers"
    assert {"medical-imaging", "chest-xray", "weakly-supervised-localization"} <= set(data.tags)
    assert data.license == "apache-2.0"
    assert data.metrics == ["roc_auc", "accuracy"]
    assert data.base_model is None  # the JSON says this model did not start from DINO
    # A synthetic-only model says so in the first line of the card.
    assert "trained only on synthetic data" in card.text.strip().splitlines()[0]
    # model-index parses and holds the JSON's numbers.
    name, eval_results = model_index_to_eval_results(data.to_dict()["model-index"])
    assert name == MODEL
    entry = results["models"][MODEL]
    by_name = {r.metric_name: r.metric_value for r in eval_results}
    assert by_name["Mean AUROC (14 classes)"] == round(entry["classification"]["mean_auroc"], 4)
    for pathology in NIH_PATHOLOGIES:
        assert by_name[f"AUROC {pathology}"] == round(
            entry["classification"]["per_class"][pathology]["auroc"], 4
        )
    for t, value in zip(entry["localization"]["iou"]["thresholds"], entry["localization"]["iou"]["macro"]):
        assert by_name[f"Localization accuracy T(IoU)={t:g} (macro)"] == round(value, 4)
    assert {r.task_type for r in eval_results} == {"image-classification", "object-detection"}
    # Widget: the example images with the model's own predictions as static outputs.
    pipe = load_for_inference(folder)
    widget = data.widget
    assert [w["src"] for w in widget] == [
        "https://huggingface.co/test-org/clarity-tiny/resolve/main/examples/00_00000001_000.png",
        "https://huggingface.co/test-org/clarity-tiny/resolve/main/examples/01_siim_pneumothorax_example.png",
    ]
    scores = pipe(str(FIXTURES["png"]), return_heatmaps=False)["scores"]
    top = sorted(scores.items(), key=lambda item: -item[1])[:5]
    assert [(d["label"], d["score"]) for d in widget[0]["output"]["data"]] == [
        (k, round(v, 4)) for k, v in top
    ]


def test_card_tables_hold_the_json_numbers(export, results):
    folder, _, _ = export
    text = ModelCard.load(folder / "README.md").text
    model_entry = results["models"][MODEL]
    classification = model_entry["classification"]
    for pathology in NIH_PATHOLOGIES:
        (row,) = _table_rows(text, pathology)[:1]
        entry = classification["per_class"][pathology]
        assert float(row[1]) == pytest.approx(entry["auroc"], abs=5e-4)
        low, high = (float(v) for v in row[2].split(" to "))
        assert (low, high) == pytest.approx((entry["ci_low"], entry["ci_high"]), abs=5e-4)
        assert (int(row[3]), int(row[4])) == (entry["n_positive"], entry["n_negative"])
    (mean_row,) = _table_rows(text, "Mean")
    assert float(mean_row[1]) == pytest.approx(classification["mean_auroc"], abs=5e-4)
    summary = _table_rows(text, "CLARiTy-S-16-512 (published)")
    assert float(summary[0][1]) == PAPER["mean_auroc"]
    # Localization: the eval half of the tuned result; IoU table (first occurrence of each boxed class after the
    # AUROC table), then IoBB.
    localization = model_entry["localization"]
    assert localization["split"] == "eval" and "(`eval` half)" in text and "tuned on the `tune` half" in text
    for pathology in NIH_BOXED_PATHOLOGIES:
        rows = _table_rows(text, pathology)
        assert len(rows) == 3  # AUROC, IoU, IoBB tables
        assert [float(v) for v in rows[1][1:]] == pytest.approx(
            localization["iou"]["per_class"][pathology], abs=5e-4
        )
        assert [float(v) for v in rows[2][1:]] == pytest.approx(
            localization["iobb"]["per_class"][pathology], abs=5e-4
        )
    macro_rows = _table_rows(text, "Macro (this checkpoint)")
    assert [float(v) for v in macro_rows[0][1:]] == pytest.approx(localization["iou"]["macro"], abs=5e-4)
    assert [float(v) for v in macro_rows[1][1:]] == pytest.approx(localization["iobb"]["macro"], abs=5e-4)
    (paper_row,) = _table_rows(text, "CLARiTy-S-16-512 (published)")[1:]
    assert PUBLISHED_RESULTS["iou_thresholds"] == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert [float(v) for v in paper_row[1:6]] == PAPER["iou_macro"]
    assert paper_row[6:] == ["", ""]  # the paper gives no figure at 0.6 / 0.7
    fp = re.search(r"False-positive boxes per image: \*\*([0-9.]+)\*\*", text)
    assert float(fp.group(1)) == pytest.approx(localization["false_positives"]["per_image"], abs=5e-4)
    # Every reconstructed config field is listed with this checkpoint's value.
    assert "`num_attention_map_layers` | `2`" in text and "`orthogonal_loss_weight` | `0.1`" in text
    assert "NOT for clinical use" in text


def test_card_for_real_data_and_without_results(export):
    _, _, model = export
    real = make_results(seed=5, synthetic_only=False)
    real["metadata"]["training"]["base_model"] = "facebook/dino-vits16"
    card = render_model_card(model.config, real, repo_id="test-org/clarity")
    first = card.text.strip().splitlines()[0]
    assert "synthetic" not in first and "Research use only" in first
    assert card.data.base_model == "facebook/dino-vits16"
    empty = render_model_card(model.config, None)
    assert empty.data.eval_results is None and "not been evaluated" in empty.text
    assert not re.search(r"\| \*\*Mean\*\*", empty.text)
    # model_name selects the report's entry; an unknown name or a JSON that is not a report is refused.
    other = render_model_card(model.config, real, model_name="other-model")
    (mean_row,) = _table_rows(other.text, "Mean")
    assert float(mean_row[1]) == pytest.approx(
        real["models"]["other-model"]["classification"]["mean_auroc"], abs=5e-4
    )
    assert other.data.model_name == "other-model"
    with pytest.raises(ValueError, match="'missing' is not in the evaluation report"):
        render_model_card(model.config, real, model_name="missing")
    with pytest.raises(ValueError, match="not a clarity_hf evaluation report"):
        render_model_card(model.config, real["models"]["other-model"])


def test_push_to_hub_against_loopback_standin(export, tmp_path):
    folder, _, _ = export
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_TELEMETRY": "1"}
    with HubStandIn() as hub:
        env["HF_ENDPOINT"] = hub.endpoint
        code = (
            "from clarity_hf.hub import push_to_hub; import sys; "
            "info = push_to_hub(sys.argv[1], 'test-org/clarity-tiny', revision='dev', private=True, "
            "token='hf_test_token', commit_message='Upload tiny CLARiTy'); print(info.commit_url)"
        )
        run = subprocess.run(
            [sys.executable, "-c", code, str(folder)], env=env, capture_output=True, text=True, timeout=120
        )
        assert run.returncode == 0, run.stderr[-3000:]
        assert run.stdout.strip().endswith("/test-org/clarity-tiny/commit/" + "0" * 40)
    paths = [path for _, path in hub.requests]
    assert paths == [
        "/api/repos/create",
        "/api/models/test-org/clarity-tiny/branch/dev",
        "/api/validate-yaml",
        "/api/models/test-org/clarity-tiny/preupload/dev",
        "/api/models/test-org/clarity-tiny/commit/dev",
    ]
    repo = hub.repos["test-org/clarity-tiny"]
    assert repo["visibility"] == "private" and repo["type"] == "model"
    assert repo["authorization"] == "Bearer hf_test_token"
    (commit,) = hub.commits
    assert commit["header"]["summary"] == "Upload tiny CLARiTy"
    uploaded = commit["files"]
    assert sorted(uploaded) == [path for path, _ in describe_folder(folder)]
    for path, content in uploaded.items():
        assert content == (folder / path).read_bytes(), path
    assert hub.validated_yaml[0]["content"] == (folder / "README.md").read_text()


def test_pipeline_loads_in_fresh_process_without_clarity_hf(export, tmp_path):
    folder, _, _ = export
    script = tmp_path / "run_pipeline.py"
    script.write_text(
        WITHOUT_CLARITY_HF + "import json\n"
        "from transformers import pipeline\n"
        "pipe = pipeline('chest-xray-localization', model=sys.argv[1], trust_remote_code=True)\n"
        "out = pipe(sys.argv[2], threshold=0.0, heatmap_threshold=0.6)\n"
        "print(json.dumps({'cls': type(pipe).__name__, 'scores': out['scores'], 'boxes': out['boxes'],\n"
        "                  'heatmaps': list(out['heatmaps'].shape), 'max': float(out['heatmaps'].max())}))\n"
    )
    run = run_without_clarity_hf(script, folder, FIXTURES["png"], timeout=120)
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["cls"] == "ClarityLocalizationPipeline"
    width, height = Image.open(FIXTURES["png"]).size
    assert out["heatmaps"] == [14, height, width]
    assert out["max"] == pytest.approx(1.0)
    assert list(out["scores"]) == list(NIH_PATHOLOGIES)
    # The same numbers as clarity_hf's own loader in this process.
    local = load_for_inference(folder)(str(FIXTURES["png"]), threshold=0.0, heatmap_threshold=0.6)
    assert list(out["scores"].values()) == pytest.approx(list(local["scores"].values()), abs=1e-5)
    assert len(out["boxes"]) == len(local["boxes"]) > 0
    for box in out["boxes"]:
        b = box["box"]
        assert 0 <= b["xmin"] < b["xmax"] <= width and 0 <= b["ymin"] < b["ymax"] <= height


def test_pickle_checkpoint_is_refused(export, tmp_path):
    folder, _, model = export
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((folder / "config.json").read_text())
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    message = r"refusing to load the pickle checkpoint\(s\) pytorch_model.bin: it has no \*.safetensors"
    with pytest.raises(UnsafeCheckpointError, match=message):
        check_safetensors_only(pickled)
    with pytest.raises(UnsafeCheckpointError, match=message):
        load_for_inference(pickled)
    with pytest.raises(UnsafeCheckpointError, match=message):
        push_to_hub(pickled, "test-org/never", endpoint="http://127.0.0.1:9")
    with pytest.raises(UnsafeCheckpointError, match=message):
        _cli().main(
            ["--model", str(pickled), "--repo-id", "a/b", "--dry-run", "--out", str(tmp_path / "out")]
        )
    # Safetensors next to a stray pickle: only the safetensors weights are read.
    both = tmp_path / "both"
    both.mkdir()
    for name in ("config.json", "model.safetensors", "preprocessor_config.json"):
        (both / name).write_bytes((folder / name).read_bytes())
    (both / "pytorch_model.bin").write_bytes(b"not a pickle at all")  # would fail loudly if it were read
    pipe = load_for_inference(both)
    assert torch.equal(pipe.model.token_classifier.weight, model.token_classifier.weight)
    with pytest.raises(UnsafeCheckpointError, match="refusing to upload pickle"):
        push_to_hub(both, "test-org/never", endpoint="http://127.0.0.1:9")


def test_dry_run_cli_lists_the_upload(export, tmp_path, capsys):
    folder, _, _ = export
    out = tmp_path / "cli_export"
    argv = ["--model", str(folder), "--repo-id", "test-org/clarity-tiny", "--results"]
    argv += [str(folder / "eval_results.json"), "--dry-run", "--out", str(out)]
    assert _cli().main(argv) == 0
    stdout = capsys.readouterr().out
    listed = {m.group(2): int(m.group(1)) for m in re.finditer(r"^\s+(\d+)\s+(\S+)$", stdout, flags=re.M)}
    assert listed == dict(describe_folder(out))
    assert "would upload" in stdout and "model.safetensors" in listed
    assert json.loads((out / "eval_results.json").read_text()) == json.loads(
        (folder / "eval_results.json").read_text()
    )
    np.testing.assert_array_equal(
        np.frombuffer((out / "model.safetensors").read_bytes()[-64:], np.uint8),
        np.frombuffer((folder / "model.safetensors").read_bytes()[-64:], np.uint8),
    )


def test_dataset_card_renders_the_given_facts(tmp_path):
    from huggingface_hub import DatasetCard

    from clarity_hf.hub import render_dataset_card

    rng = np.random.default_rng(7)
    sizes = {"train": int(rng.integers(1000, 5000)), "test": int(rng.integers(100, 900))}
    counts = {split: {name: int(rng.integers(0, 99)) for name in NIH_PATHOLOGIES} for split in sizes}
    card = render_dataset_card(split_sizes=sizes, label_counts=counts, features={"image": "Image()"})
    card.save(tmp_path / "README.md")
    loaded = DatasetCard.load(tmp_path / "README.md")
    assert loaded.data.license == "other" and "chest-xray" in loaded.data.tags
    assert loaded.data.size_categories == ["1K<n<10K"]
    for split, rows in sizes.items():
        assert f"| {split} | {rows} |" in loaded.text
    for name in NIH_PATHOLOGIES:
        (row,) = _table_rows(loaded.text, name)
        assert [int(v) for v in row[1:]] == [counts["train"][name], counts["test"][name]]
    assert "Wang" in loaded.text and "NLP" in loaded.text and "Not for clinical use" in loaded.text


def _absolute_imports(source: str) -> set[str]:
    """Top-level names of every absolute import statement of a module (parsed, so docstrings do not count)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names
