# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""A complete checkpoint whose files are damaged (a truncated or overwritten model.safetensors, a corrupt optimizer
archive) is passed over on `resume_from_checkpoint=latest` for the previous complete one, with a warning naming the
file; an explicit damaged checkpoint is an error naming the file."""

from __future__ import annotations

import logging

import pytest
from training_helpers import tiny_config

from clarity_hf.files import UnusableFileError
from clarity_hf.training import train
from clarity_hf.training.checkpointing import (
    checkpoint_problem,
    list_checkpoints,
    resolve_resume_path,
)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny run of 6 steps with a checkpoint every 2 (checkpoint-2, -4, -6)."""
    output = tmp_path_factory.mktemp("run")
    train(tiny_config(output, max_steps=6, checkpointing_steps=2, save_total_limit=3))
    assert [p.name for p in list_checkpoints(output)] == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    return output


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _overwrite_header(path):
    data = bytearray(path.read_bytes())
    data[8:40] = b"\x00" * 32
    path.write_bytes(bytes(data))


def _flip_zip_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF  # inside a stored entry: its CRC no longer matches
    path.write_bytes(bytes(data))


DAMAGE = {
    "truncated model.safetensors": ("model.safetensors", _truncate),
    "overwritten safetensors header": ("model.safetensors", _overwrite_header),
    "corrupt optimizer.bin": ("optimizer.bin", _flip_zip_byte),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_damaged_checkpoint_is_named(run_dir, tmp_path, kind):
    import shutil

    name, damage = DAMAGE[kind]
    copy = tmp_path / "checkpoint-6"
    shutil.copytree(run_dir / "checkpoints" / "checkpoint-6", copy)
    assert checkpoint_problem(copy) is None
    damage(copy / name)
    problem = checkpoint_problem(copy)
    assert problem is not None and str(copy / name) in problem
    with pytest.raises(UnusableFileError, match=str(copy / name)):
        resolve_resume_path(str(copy), tmp_path)


def test_resume_falls_back_to_the_previous_complete_checkpoint(run_dir, caplog, capsys):
    newest = run_dir / "checkpoints" / "checkpoint-6" / "model.safetensors"
    _truncate(newest)
    with caplog.at_level(logging.WARNING, logger="clarity_hf.training.checkpointing"):
        assert resolve_resume_path("latest", run_dir).name == "checkpoint-4"
    assert str(newest) in caplog.text and "previous complete checkpoint" in caplog.text
    # the same run resumes from step 4, ends at step 6 and writes checkpoint-6 again, whole
    capsys.readouterr()
    with caplog.at_level(logging.INFO, logger="clarity_hf.training.trainer"):
        result = train(
            tiny_config(
                run_dir,
                max_steps=6,
                checkpointing_steps=2,
                save_total_limit=3,
                resume_from_checkpoint="latest",
            )
        )
    assert "checkpoint-4: step 4" in caplog.text  # "resumed from ...": the trainer logs where
    assert capsys.readouterr().out == ""  # logged, not printed
    assert result.global_step == 6 and result.last_checkpoint.endswith("checkpoint-6")
    assert checkpoint_problem(run_dir / "checkpoints" / "checkpoint-6") is None
    # every complete checkpoint damaged: an error naming the newest's file, not a fresh start
    for checkpoint in list_checkpoints(run_dir):
        _truncate(checkpoint / "model.safetensors")
    with pytest.raises(UnusableFileError, match="every complete checkpoint .* is damaged"):
        resolve_resume_path("latest", run_dir)
