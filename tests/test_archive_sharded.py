# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""`clarity-predict` sharded over processes (`accelerate launch`, `torchrun`): two CPU processes over gloo split the
files by path, each writes its own parts, and the main process merges the same tables as one process; a rerun with
another process count resumes from the parts and tables without a duplicate."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from archive_testing import make_tree
from helpers import run_two_processes
from PIL import Image

from clarity_hf.configuration_clarity import NIH_PATHOLOGIES
from clarity_hf.inference import ArchiveOptions, run_archive
from clarity_hf.inference.archive import shard_of
from clarity_hf.inference.table import ResultStore

pytestmark = pytest.mark.slow  # each launch starts two Python processes with torch


def _launch(launcher: str, root, archive_model_dir, out) -> dict:
    arguments = ["predict", root, "--model", archive_model_dir, "--output-dir", out]
    arguments += ["--num-workers", "0", "--batch-size", "3", "--no-progress"]
    return json.loads(run_two_processes(launcher, arguments))  # one summary: the main process's


def _table(path):
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as handle:
        return list(csv.reader(handle))


def _assert_same_tables(out, reference):
    rows, expected = _table(out / "predictions.csv"), _table(reference / "predictions.csv")
    assert rows[0] == expected[0]
    assert [r[:3] for r in rows] == [
        r[:3] for r in expected
    ]  # the same paths once each, same sizes, same order
    probabilities = np.array([[float(v) for v in r[3 : 3 + len(NIH_PATHOLOGIES)]] for r in rows[1:]])
    wanted = np.array([[float(v) for v in r[3 : 3 + len(NIH_PATHOLOGIES)]] for r in expected[1:]])
    np.testing.assert_allclose(probabilities, wanted, atol=1e-5)
    assert _table(out / "errors.csv") == _table(reference / "errors.csv")


def _tree(root):
    make_tree(root)
    rng = np.random.default_rng(0)
    for index in range(6):
        Image.fromarray((rng.random((70, 60)) * 255).astype(np.uint8)).save(root / f"extra{index}.png")
    return root


def _options(out):
    return ArchiveOptions(output_dir=out, batch_size=4, num_workers=0, progress=False)


def _reference(archive_pipe, root, out):
    return run_archive([root], archive_pipe.model, archive_pipe.image_processor, _options(out))


def test_two_processes_with_accelerate_launch_give_the_rows_of_one(archive_pipe, archive_model_dir, tmp_path):
    root = _tree(tmp_path / "archive")
    reference = _reference(archive_pipe, root, tmp_path / "one")
    summary = _launch("accelerate", root, archive_model_dir, tmp_path / "two")
    _assert_same_tables(tmp_path / "two", tmp_path / "one")
    assert (summary["images"], summary["failed"]) == (reference.images, reference.failed)
    assert summary["extra"]["processes"] == 2
    run = json.loads((tmp_path / "two" / "run.json").read_text())
    total = reference.images + reference.failed
    assert run["processes"] == 2 and sum(run["shares"]) == total
    paths = [r[0] for r in _table(tmp_path / "one" / "predictions.csv")[1:]]
    paths += [r[0] for r in _table(tmp_path / "one" / "errors.csv")[1:]]
    assert run["shares"] == [sum(shard_of(p, 2) == rank for p in paths) for rank in (0, 1)]
    assert not (tmp_path / "two" / ".parts").exists()


def test_rerun_with_another_process_count_resumes_without_duplicates(
    archive_pipe, archive_model_dir, tmp_path, monkeypatch
):
    """One process dies before it merges (its parts stay); two processes under torchrun finish the run; one
    process then adds the new files only."""
    root = _tree(tmp_path / "archive")
    _reference(archive_pipe, root, tmp_path / "one")
    out = tmp_path / "resumed"

    def crash(self):
        raise KeyboardInterrupt("killed before the merge")

    images = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    first = images[: len(images) // 2]
    monkeypatch.setattr(ResultStore, "compact", crash)
    with pytest.raises(KeyboardInterrupt):
        run_archive(
            first,
            archive_pipe.model,
            archive_pipe.image_processor,
            _options(out),
            model_name=str(archive_model_dir),
        )
    monkeypatch.undo()
    assert len(list((out / ".parts").glob("part-*.jsonl"))) >= 1 and not (out / "predictions.csv").exists()

    summary = _launch("torchrun", root, archive_model_dir, out)
    assert summary["skipped"] == len(first)
    assert summary["new_rows"] + summary["new_errors"] == len(images) - len(first)
    _assert_same_tables(out, tmp_path / "one")

    Image.fromarray(np.full((50, 40), 77, np.uint8)).save(root / "late.png")
    _reference(archive_pipe, root, tmp_path / "one")
    again = run_archive(
        [root],
        archive_pipe.model,
        archive_pipe.image_processor,
        _options(out),
        model_name=str(archive_model_dir),
    )
    assert (again.new_rows, again.new_errors) == (1, 0)
    _assert_same_tables(out, tmp_path / "one")
    assert json.loads((out / "run.json").read_text())["processes"] == 1
