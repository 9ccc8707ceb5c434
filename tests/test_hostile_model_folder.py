# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Hostile model folders: each case builds a broken or absurd folder from a tiny saved model and checks that
loading it for inference is refused with one error naming the folder and the problem, never a model that gives
valid-looking predictions and never a traceback from clarity-predict."""

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from archive_testing import make_model_dir
from PIL import Image
from safetensors.torch import load_file, save_file

from clarity_hf import ClarityConfig, ClarityForMultiLabelLocalization, loading
from clarity_hf.commands.cli import predict_main, run_command
from clarity_hf.evaluation.run import build_processor


@pytest.fixture(scope="module")
def good_folder(tmp_path_factory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("good"))


def copy_folder(good: Path, target: Path) -> Path:
    target.mkdir()
    for path in good.iterdir():
        if path.is_file():
            (target / path.name).write_bytes(path.read_bytes())
    return target


def refused(folder: Path, *problem: str) -> str:
    """load_for_inference(folder) raises InvalidModelFolderError naming the folder and every piece of `problem`."""
    with pytest.raises(ValueError) as info:
        loading.load_for_inference(folder)
    assert type(info.value).__name__ == "InvalidModelFolderError", repr(info.value)
    message = str(info.value)
    assert str(folder) in message
    for piece in problem:
        assert piece in message, message
    return message


def edit_weights(folder: Path, edit) -> None:
    path = folder / "model.safetensors"
    tensors = load_file(path)
    save_file(edit(tensors), path, metadata={"format": "pt"})


def edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_the_good_folder_loads(good_folder):
    pipe = loading.load_for_inference(good_folder)
    assert isinstance(pipe.model, ClarityForMultiLabelLocalization)


def test_safetensors_with_no_tensors_is_refused(good_folder, tmp_path):
    folder = copy_folder(good_folder, tmp_path / "empty-weights")
    edit_weights(folder, lambda tensors: {})
    refused(folder, "no tensors")


def test_safetensors_with_half_the_tensors_is_refused(good_folder, tmp_path):
    folder = copy_folder(good_folder, tmp_path / "half")
    kept = {}

    def half(tensors):
        names = sorted(tensors)
        kept.update({name: tensors[name] for name in names[::2]})
        return dict(kept)

    edit_weights(folder, half)
    total = len(load_file(good_folder / "model.safetensors"))
    refused(folder, f"{total - len(kept)} of the model's {total} tensors missing")


def test_nan_and_inf_weights_are_refused(good_folder, tmp_path):
    for value in (float("nan"), float("inf")):
        folder = copy_folder(good_folder, tmp_path / f"weights-{value}")

        def poison(tensors, value=value):
            name = sorted(tensors)[0]
            tensors[name] = tensors[name].clone()
            tensors[name].view(-1)[0] = value
            return tensors

        edit_weights(folder, poison)
        refused(folder, "NaN or infinite")


def test_integer_zero_weights_are_refused(good_folder, tmp_path):
    folder = copy_folder(good_folder, tmp_path / "int-zeros")
    edit_weights(
        folder, lambda tensors: {k: torch.zeros(v.shape, dtype=torch.int32) for k, v in tensors.items()}
    )
    refused(folder, "not floating point", "I32")


def test_mis_shaped_and_unexpected_tensors_are_refused(good_folder, tmp_path):
    folder = copy_folder(good_folder, tmp_path / "wrong-shape")
    name = sorted(load_file(good_folder / "model.safetensors"))[-1]

    def reshape(tensors):
        tensors[name] = torch.zeros(*tensors[name].shape[:-1], tensors[name].shape[-1] + 1)
        return tensors

    edit_weights(folder, reshape)
    refused(folder, "mis-shaped", name)

    folder = copy_folder(good_folder, tmp_path / "extra")
    edit_weights(folder, lambda tensors: {**tensors, "planted.weight": torch.zeros(3)})
    refused(folder, "unexpected tensors", "planted.weight")


@pytest.mark.parametrize(
    ("case", "problem"),
    [
        ("zero-byte", "is empty (0 bytes)"),
        ("truncated", "not a readable safetensors file"),
        ("huge-header", "header of"),
        ("garbage", "safetensors"),
    ],
)
def test_damaged_safetensors_files_are_refused(good_folder, tmp_path, case, problem):
    folder = copy_folder(good_folder, tmp_path / case)
    path = folder / "model.safetensors"
    data = path.read_bytes()
    damaged = {
        "zero-byte": b"",
        "truncated": data[: len(data) // 2],
        "huge-header": struct.pack("<Q", 2**40) + b"{}",
        "garbage": b"\xff" * 64,
    }[case]
    path.write_bytes(damaged)
    refused(folder, "model.safetensors", problem)


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"num_hidden_layers": 100000}, "num_hidden_layers 100000"),
        ({"hidden_size": 1_000_000, "num_attention_heads": 1}, "hidden_size 1000000"),
        ({"intermediate_size": 10**9}, "intermediate_size"),
        ({"image_size": 100000, "patch_size": 16}, "image_size 100000"),
        ({"num_hidden_layers": "12"}, "num_hidden_layers '12'"),
        ({"image_size": 256, "patch_size": 1}, "patch_size 1 for image_size 256"),
        ({"id2label": {"0": "A", "5": "B"}}, "id2label keys"),
        ({"id2label": {"0": "A", "1": "A"}}, "id2label repeats names ['A']"),
        ({"id2label": {}}, "id2label with 0 entries"),
    ],
)
def test_absurd_config_sizes_are_refused_before_the_model_is_built(
    good_folder, tmp_path, monkeypatch, changes, problem
):
    folder = copy_folder(good_folder, tmp_path / "config")
    edit_json(folder / "config.json", **changes)

    def never(*args, **kwargs):
        raise AssertionError("the model must not be built")

    monkeypatch.setattr(ClarityForMultiLabelLocalization, "__init__", never)
    refused(folder, "config.json", problem)


@pytest.mark.parametrize(
    "size", [100000, {"height": 100000, "width": 100000}, {"height": 0, "width": 64}, -3]
)
def test_absurd_preprocessor_size_is_refused(good_folder, tmp_path, size):
    folder = copy_folder(good_folder, tmp_path / "processor")
    edit_json(folder / "preprocessor_config.json", size=size)
    refused(folder, "preprocessor_config.json", "size")


def test_clarity_predict_on_nan_weights_exits_2_and_writes_no_table(good_folder, tmp_path, capsys):
    folder = copy_folder(good_folder, tmp_path / "nan")
    edit_weights(folder, lambda tensors: {k: torch.full_like(v, float("nan")) for k, v in tensors.items()})
    image = tmp_path / "x.png"
    Image.fromarray((np.arange(64 * 64) % 251).reshape(64, 64).astype(np.uint8)).save(image)
    out = tmp_path / "out"
    code = predict_main([str(image), "--model", str(folder), "--output-dir", str(out), "--no-progress"])
    error = capsys.readouterr().err
    assert code == 2 and "NaN or infinite" in error and str(folder) in error and "Traceback" not in error
    assert not (out / "predictions.csv").exists()


def test_fine_tuning_keeps_ignore_mismatched_sizes_for_a_new_head(good_folder, tmp_path):
    """The strict check is for inference only: training's explicit head replacement still starts from a folder
    with other labels (the label-sized tensors re-initialised, every other tensor kept)."""
    from training_helpers import tiny_config

    from clarity_hf.training.models import build_model

    config = tiny_config(
        tmp_path, model_name_or_path=str(good_folder), image_size=None, model_config_overrides=None
    )
    model = build_model(config, ["A", "B", "C"])
    saved = load_file(good_folder / "model.safetensors")
    state = model.state_dict()
    same = [n for n, t in state.items() if saved[n].shape == t.shape]
    assert model.config.num_labels == 3 and len(same) < len(state)
    assert all(torch.equal(state[n], saved[n]) for n in same)


HOSTILE_LABELS = ["../../../../x", "a/b", "line\nbreak", "..", "/abs", "Mass"]


def test_hostile_label_names_write_heatmaps_only_inside_the_output_dir(good_folder, tmp_path, capsys):
    """id2label "../../../../x", "a/b", a newline, "..", "/abs": --heatmaps png / npz and --overlays write every
    file inside --output-dir under sanitised names, and the table keeps the labels themselves."""
    import csv

    folder = copy_folder(good_folder, tmp_path / "labels")
    id2label = {str(i): name for i, name in enumerate(HOSTILE_LABELS)}
    config = json.loads((folder / "config.json").read_text())
    config.update(id2label=id2label, label2id={name: i for i, name in enumerate(HOSTILE_LABELS)})
    (folder / "config.json").write_text(json.dumps(config))
    with torch.no_grad():  # the classifier heads must match the new label count
        model = ClarityForMultiLabelLocalization.from_pretrained(
            good_folder, config=ClarityConfig.from_pretrained(folder), ignore_mismatched_sizes=True
        )
    model.save_pretrained(folder)
    edit_json(folder / "preprocessor_config.json", id2label=id2label)
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray((np.arange(64 * 64) % 251).reshape(64, 64).astype(np.uint8)).save(images / "x.png")
    out = tmp_path / "deep" / "a" / "b" / "c" / "out"
    before = {p for p in tmp_path.rglob("*")}
    for heatmaps in ("png", "npz"):
        code = predict_main(
            [str(images), "--model", str(folder), "--output-dir", str(out), "--no-progress", "--overwrite"]
            + ["--heatmaps", heatmaps, "--overlays", "--num-workers", "0"]
        )
        assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    written = {p for p in tmp_path.rglob("*")} - before
    outside = [p for p in written if out not in p.parents and p != out and p not in out.parents]
    assert outside == []
    pngs = sorted(p.name for p in (out / "heatmaps").rglob("*.png"))
    assert len(pngs) == len(HOSTILE_LABELS) and "Mass.png" in pngs
    assert all("/" not in name and "\n" not in name and not name.startswith(".") for name in pngs)
    with open(out / "predictions.csv", newline="") as handle:
        header = next(csv.reader(handle))
    assert header[3 : 3 + len(HOSTILE_LABELS)] == HOSTILE_LABELS
    npz = np.load(next((out / "heatmaps").glob("*.npz")))
    assert list(npz["labels"]) == HOSTILE_LABELS


def test_sharded_weights_load_and_a_shard_named_out_of_the_folder_is_refused(good_folder, tmp_path):
    folder = tmp_path / "sharded"
    model = ClarityForMultiLabelLocalization.from_pretrained(good_folder)
    model.save_pretrained(folder, max_shard_size="100KB")
    build_processor(64).save_pretrained(folder)
    assert len(list(folder.glob("model-*.safetensors"))) > 1
    loading.load_for_inference(folder)

    index = folder / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    first = next(iter(data["weight_map"]))
    data["weight_map"][first] = "../outside.safetensors"
    index.write_text(json.dumps(data))
    refused(folder, "../outside.safetensors", "not plain file names")


def _half_the_tensors(tensors):
    names = sorted(tensors)
    return {name: tensors[name] for name in names[: len(names) // 2]}


@pytest.mark.parametrize(
    "case, edit, problem",
    [
        ("half_tensors", _half_the_tensors, "missing"),
        ("nan", lambda tensors: {k: torch.full_like(v, float("nan")) for k, v in tensors.items()}, "NaN"),
    ],
)
def test_push_to_hub_refuses_a_broken_folder_and_writes_no_export(
    good_folder, tmp_path, capsys, case, edit, problem
):
    """A folder with half its tensors (randomly initialised otherwise) or NaN weights is never exported for the Hub."""
    folder = copy_folder(good_folder, tmp_path / case)
    edit_weights(folder, edit)
    out = tmp_path / "export"
    code = run_command(
        "push", ["--model", str(folder), "--repo-id", "user/x", "--dry-run", "--out", str(out)]
    )
    error = capsys.readouterr().err
    assert code == 2 and problem in error and str(folder) in error, error
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("case", ["half_tensors", "nan"])
def test_evaluation_refuses_a_broken_clarity_folder(good_folder, tmp_path, case):
    from clarity_hf.evaluation.run import load_model_for_evaluation

    folder = copy_folder(good_folder, tmp_path / case)
    edit_weights(
        folder,
        _half_the_tensors
        if case == "half_tensors"
        else lambda tensors: {k: torch.full_like(v, float("nan")) for k, v in tensors.items()},
    )
    with pytest.raises(ValueError, match="missing|NaN") as info:
        load_model_for_evaluation(folder)
    assert str(folder) in str(info.value)


def test_evaluation_refuses_a_baseline_folder_with_missing_tensors(tmp_path):
    from clarity_hf.baselines.vit import PlainViTForMultiLabelClassification
    from clarity_hf.evaluation.run import load_model_for_evaluation

    plain = _plain_vit()
    plain.save_pretrained(tmp_path / "vit")
    edit_weights(tmp_path / "vit", _half_the_tensors)
    assert isinstance(plain, PlainViTForMultiLabelClassification)
    with pytest.raises(ValueError, match="missing") as info:
        load_model_for_evaluation(tmp_path / "vit")
    assert str(tmp_path / "vit") in str(info.value)


def _plain_vit():
    from clarity_hf.baselines import plain_vit_config
    from clarity_hf.baselines.vit import PlainViTForMultiLabelClassification

    torch.manual_seed(0)
    return PlainViTForMultiLabelClassification(plain_vit_config(ClarityConfig.from_preset("clarity-tiny")))


@pytest.mark.parametrize("case", ["out_under_a_file", "non_empty_out", "bad_repo_id", "missing_results"])
def test_push_error_paths_print_one_line_and_exit_2(good_folder, tmp_path, capsys, case):
    """Expected failures of `clarity push`: one line naming the input, exit 2, nothing written anywhere."""
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    out, repo_id, extra, named = str(tmp_path / "out"), "user/x", [], None
    if case == "out_under_a_file":
        out = named = str(tmp_path / "a_file" / "export")
    elif case == "non_empty_out":
        out = named = str(tmp_path / "busy")
    elif case == "bad_repo_id":
        repo_id = named = "bad repo//x"
    else:
        named = str(tmp_path / "missing.json")
        extra = ["--results", named]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code = run_command(
        "push", ["--model", str(good_folder), "--repo-id", repo_id, "--dry-run", "--out", out, *extra]
    )
    error = capsys.readouterr().err
    lines = [line for line in error.splitlines() if line.startswith("clarity push:")]
    assert code == 2 and "Traceback" not in error and len(lines) == 1 and named in lines[0], error
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"
