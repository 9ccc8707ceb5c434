# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Hostile model folders and careless exports: no code from a folder runs, an export never mixes with other files,
the upload sends only what the export wrote, and user strings in the cards render inert."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import yaml
from helpers import subprocess_env
from hub_testing import HubStandIn, make_results, make_tiny_export
from huggingface_hub import DatasetCard, ModelCard
from PIL import Image

from clarity_hf import NIH_PATHOLOGIES, ClarityConfig
from clarity_hf.evaluation.tables import escape_markdown
from clarity_hf.hub import (
    MANIFEST_NAME,
    ExportError,
    UntrustedModelFolderError,
    describe_folder,
    exported_files,
    load_for_inference,
    push_to_hub,
    render_dataset_card,
    render_model_card,
)

HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)> # heading | extra | column\n---\nlicense: mit\n---\n# Owned"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export") / "model"
    make_tiny_export(folder, results=None)
    return folder


def _copy(folder, target):
    target.mkdir()
    for name in exported_files(folder):
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        (target / name).write_bytes((folder / name).read_bytes())
    (target / MANIFEST_NAME).write_bytes((folder / MANIFEST_NAME).read_bytes())
    return target


def _edit_json(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def _plant_processor_code(folder, marker):
    """A processor module that would leave `marker` behind if it were ever imported."""
    (folder / "evil_processor.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(marker)!r}).write_text('code from the model folder ran')\n"
        "from transformers.image_processing_utils import BaseImageProcessor\n"
        "class EvilImageProcessor(BaseImageProcessor):\n"
        "    pass\n"
    )


# ------------------------------------------------------------------------------------------------ loading
def test_folder_naming_another_processor_class_is_refused_and_runs_nothing(exported, tmp_path):
    folder = _copy(exported, tmp_path / "hostile")
    marker = tmp_path / "ran.txt"
    _plant_processor_code(folder, marker)
    _edit_json(
        folder / "preprocessor_config.json",
        image_processor_type="EvilImageProcessor",
        auto_map={"AutoImageProcessor": "evil_processor.EvilImageProcessor"},
    )
    with pytest.raises(UntrustedModelFolderError, match="image_processor_type 'EvilImageProcessor'"):
        load_for_inference(folder)
    assert not marker.exists()

    # The command line, without a terminal (stdin closed): a clear error, no prompt, no code run.
    image = tmp_path / "xray.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 72), dtype=np.uint8)).save(image)
    env = {**subprocess_env(), "HF_MODULES_CACHE": str(tmp_path / "modules")}
    run = subprocess.run(
        [sys.executable, "-m", "clarity_hf", "predict", str(image), "--model", str(folder)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert run.returncode == 2, run.stderr[-2000:]
    assert "EvilImageProcessor" in run.stderr and "trust_remote_code" not in run.stdout
    assert not marker.exists() and not (tmp_path / "modules").exists()


def test_folder_naming_another_model_class_is_refused(exported, tmp_path):
    folder = _copy(exported, tmp_path / "hostile")
    _edit_json(
        folder / "config.json",
        architectures=["EvilModel"],
        auto_map={"AutoModel": "evil_processor.EvilModel"},
    )
    with pytest.raises(UntrustedModelFolderError, match=r"architectures \['EvilModel'\]"):
        load_for_inference(folder)


def test_auto_map_pointing_at_folder_code_is_not_followed(exported, tmp_path):
    # The declared classes are CLARiTy's but auto_map points at code in the folder: trust_remote_code=False keeps
    # clarity_hf's own classes and the folder's module is never imported.
    folder = _copy(exported, tmp_path / "hostile")
    marker = tmp_path / "ran.txt"
    _plant_processor_code(folder, marker)
    _edit_json(
        folder / "preprocessor_config.json",
        auto_map={"AutoImageProcessor": "evil_processor.EvilImageProcessor"},
    )
    pipe = load_for_inference(folder)
    assert type(pipe.image_processor).__module__ == "clarity_hf.image_processing_clarity"
    assert type(pipe.model).__module__ == "clarity_hf.modeling_clarity"
    assert not marker.exists()


# ------------------------------------------------------------------------------------------------ export
def test_export_into_a_non_empty_folder_is_refused(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match=r"not empty \(notes.txt\)"):
        make_tiny_export(folder, results=None)
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]

    # overwrite=True empties it first; the manifest lists exactly the files written.
    from clarity_hf import ClarityForMultiLabelLocalization, ClarityImageProcessor
    from clarity_hf.hub import save_for_hub

    model = ClarityForMultiLabelLocalization(ClarityConfig.from_preset("clarity-tiny"))
    files = save_for_hub(model, ClarityImageProcessor(size=64), folder, overwrite=True)
    assert not (folder / "notes.txt").exists()
    on_disk = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert exported_files(folder) == sorted(p.relative_to(folder).as_posix() for p in files)
    assert on_disk == sorted(exported_files(folder) + [MANIFEST_NAME])

    # A previous export of ours is replaced; a previous export plus a foreign file is refused.
    save_for_hub(model, ClarityImageProcessor(size=64), folder)
    (folder / ".env").write_text("HF_TOKEN=hf_secret")
    with pytest.raises(ExportError, match=r"not empty \(\.env\)"):
        save_for_hub(model, ClarityImageProcessor(size=64), folder)


def test_push_uploads_only_the_exported_files(exported, tmp_path):
    folder = _copy(exported, tmp_path / "export")
    (folder / ".env").write_text("HF_TOKEN=hf_secret_value")
    (folder / "passwd").symlink_to("/etc/passwd")
    (folder / "notes.txt").write_text("scratch")
    (folder / "examples").mkdir(exist_ok=True)
    (folder / "examples" / ".hidden").write_text("hf_secret_value")
    expected = exported_files(folder)
    assert not {".env", "passwd", "notes.txt", "examples/.hidden"} & set(expected)
    assert [name for name, _ in describe_folder(folder)] == expected
    with HubStandIn() as hub:
        _push(folder, hub, tmp_path)
    (commit,) = hub.commits
    assert sorted(commit["files"]) == expected
    for name, content in commit["files"].items():
        assert content == (folder / name).read_bytes() and b"hf_secret_value" not in content

    # A listed file replaced by a link to a system file: refused before anything is sent.
    (folder / "README.md").unlink()
    (folder / "README.md").symlink_to("/etc/passwd")
    with pytest.raises(ExportError, match="README.md: listed by the export but missing, not a regular file"):
        exported_files(folder)
    with HubStandIn() as hub:
        run = _push(folder, hub, tmp_path, check=False)
    assert run.returncode != 0 and "README.md" in run.stderr and hub.requests == []
    # A folder that no export wrote is never uploaded.
    (folder / MANIFEST_NAME).unlink()
    with pytest.raises(ExportError, match="no export manifest"):
        push_to_hub(folder, "test-org/never", endpoint="http://127.0.0.1:9")


def _push(folder, hub, tmp_path, check=True):
    env = {
        **subprocess_env(),
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_ENDPOINT": hub.endpoint,
    }
    env["HF_HOME"] = str(tmp_path / "hf_home")
    code = "from clarity_hf.hub import push_to_hub; import sys; push_to_hub(sys.argv[1], 'test-org/t', token='hf_x')"
    run = subprocess.run(
        [sys.executable, "-c", code, str(folder)], env=env, capture_output=True, text=True, timeout=120
    )
    if check:
        assert run.returncode == 0, run.stderr[-3000:]
    return run


# ------------------------------------------------------------------------------------------------ cards
def _structure(text):
    """Headings, the number of cells of every table row (unescaped pipes), and the lines that are exactly ---."""
    body = text.split("\n---\n", 1)[1]
    headings = [line for line in body.splitlines() if line.lstrip().startswith("#")]
    cells = [len(re.split(r"(?<!\\)\|", line)) for line in body.splitlines() if line.startswith("|")]
    fences = [i for i, line in enumerate(text.splitlines()) if line == "---"]
    return headings, cells, fences


def _hostile_results(label, text):
    results = make_results(seed=5, synthetic_only=False)
    entry = results["models"].pop("clarity-tiny-test")
    classification = entry["classification"]
    first = classification["class_names"][0]
    classification["class_names"][0] = label
    classification["per_class"] = {
        label if k == first else k: v for k, v in classification["per_class"].items()
    }
    localization = entry["localization"]
    boxed = localization["classes"][0]
    localization["classes"][0] = label
    for table in ("iou", "iobb"):
        localization[table]["per_class"][label] = localization[table]["per_class"].pop(boxed)
    entry["notes"] = text
    results["models"] = {text: entry, **results["models"]}
    training = results["metadata"]["training"]
    training.update(dataset_name=text, description=text, recipe={text: text, "epochs": 1})
    results["metadata"]["evaluation"].update(dataset_name=text, split=text)
    return results


def test_model_card_renders_user_strings_inert():
    config = ClarityConfig.from_preset("clarity-tiny")
    benign = render_model_card(config, _hostile_results("Benign label", "benign text"), repo_id="org/m")
    hostile = render_model_card(config, _hostile_results(HOSTILE, HOSTILE), repo_id="org/m")
    text = hostile.content
    for raw in ("<script", "<img", "\n# heading", "\n# Owned", "\nlicense: mit"):
        assert raw not in ModelCard(text).text, raw  # the Markdown body; the YAML holds it as a quoted string
    assert _structure(text)[1] == _structure(benign.content)[1]  # same table shapes
    assert len(_structure(text)[2]) == 2  # the front matter's two fences, no third
    assert len(_structure(text)[0]) == len(_structure(benign.content)[0])  # no extra heading
    # The metadata parses back unchanged: the hostile name is a plain YAML string, the licence is still ours.
    metadata = yaml.safe_load(text.split("\n---\n", 1)[0].removeprefix("---\n"))
    assert metadata["model-index"][0]["name"] == HOSTILE and metadata["license"] == "apache-2.0"
    assert {r["dataset"]["name"] for r in metadata["model-index"][0]["results"]} == {HOSTILE}
    assert ModelCard(text).data.model_name == HOSTILE
    assert "&lt;script&gt;" in text and "&#35; heading &#124; extra" in text


def test_dataset_card_renders_user_strings_inert():
    sizes = {"train": 12, HOSTILE: 3}
    labels = [HOSTILE, *NIH_PATHOLOGIES[1:]]
    counts = {split: {name: 1 for name in labels} for split in sizes}
    hostile = render_dataset_card(
        split_sizes=sizes,
        label_counts=counts,
        features={HOSTILE: HOSTILE},
        label_names=labels,
        pretty_name=HOSTILE,
        source=HOSTILE,
    )
    benign = render_dataset_card(
        split_sizes={"train": 12, "test": 3},
        label_counts={s: {name: 1 for name in NIH_PATHOLOGIES} for s in ("train", "test")},
        features={"x": "y"},
        pretty_name="benign",
        source="benign",
    )
    text = hostile.content
    for raw in ("<script", "<img", "\n# heading", "\n# Owned", "\nlicense: mit"):
        assert raw not in DatasetCard(text).text, raw
    assert _structure(text)[1] == _structure(benign.content)[1] and len(_structure(text)[2]) == 2
    assert len(_structure(text)[0]) == len(_structure(benign.content)[0])
    assert DatasetCard(text).data.pretty_name == HOSTILE and DatasetCard(text).data.license == "other"


def test_card_values_are_inserted_as_text_never_rendered_as_templates():
    """The templates go through jinja2: a user string holding template syntax is written as it is (escaped), not
    evaluated (it would put the repo id in the card) and not parsed (the lone `{% raw %}` would fail)."""
    syntax = "{{ repo_id }} {{ 7 * 7 }} {% raw %} {# comment #}"
    config = ClarityConfig.from_preset("clarity-tiny")
    benign = render_model_card(config, _hostile_results("Benign label", "benign text"), repo_id="org/m")
    card = render_model_card(config, _hostile_results(syntax, syntax), repo_id="org/m")
    assert card.text.count("org/m") == benign.text.count("org/m") > 0
    assert f"# {escape_markdown(syntax)}\n" in card.text
    assert ModelCard(card.content).data.model_name == syntax
    dataset = render_dataset_card(split_sizes={"train": 3}, pretty_name=syntax, source=syntax)
    assert DatasetCard(dataset.content).data.pretty_name == syntax and "{% raw %}" in dataset.text


def test_card_template_placeholder_without_a_value_is_an_error(tmp_path):
    template = tmp_path / "card.md"
    template.write_text("---\n{{ card_data }}\n---\n# {{ model_name }} at {{ image_size }}, {{ colour }}\n")
    config = ClarityConfig.from_preset("clarity-tiny")
    with pytest.raises(KeyError, match="colour"):
        render_model_card(config, repo_id="org/m", template_path=template)
    template.write_text(template.read_text().replace(", {{ colour }}", " ({{ license }})"))
    card = render_model_card(config, repo_id="org/m", template_path=template)
    assert card.text == f"# m at {config.image_size} (apache-2.0)\n" and card.data.license == "apache-2.0"
