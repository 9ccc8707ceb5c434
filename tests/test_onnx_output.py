# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""`export-onnx` refuses what it cannot do before the long export (an opset the exporter does not write, an output
that cannot be written) and never leaves a truncated .onnx: a full disk keeps the earlier file whole."""

import errno
import os

import pytest
from archive_testing import make_model_dir

pytest.importorskip("onnx", reason="needs the onnx extra")
pytest.importorskip("onnxscript", reason="needs the onnx extra")

from clarity_hf.commands.cli import main as cli_main  # noqa: E402
from clarity_hf.inference.onnx import MIN_OPSET, OnnxExportError, export_onnx  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("model"))


@pytest.mark.parametrize("opset", ["3", str(MIN_OPSET - 1), "1000"])
def test_unsupported_opset_is_an_error_not_ignored(model_dir, tmp_path, capsys, opset):
    target = tmp_path / "m.onnx"
    assert cli_main(["export-onnx", str(model_dir), "--output", str(target), "--opset", opset]) == 2
    err = capsys.readouterr().err
    assert f"--opset {opset} is not supported" in err and "Traceback" not in err
    assert not target.exists()


def test_unwritable_output_is_named_before_the_export(model_dir, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    for target in (blocker / "m.onnx", tmp_path):  # a folder under a file; a folder as the output
        assert cli_main(["export-onnx", str(model_dir), "--output", str(target)]) == 2
        err = capsys.readouterr().err
        assert str(target.parent if target != tmp_path else target) in err and "Traceback" not in err


def test_full_disk_leaves_the_earlier_file_whole_and_no_temporary(model_dir, tmp_path, monkeypatch):
    target = tmp_path / "m.onnx"
    target.write_bytes(b"an earlier export")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OnnxExportError, match=f"cannot write {target}.*No space left"):
        export_onnx(model_dir, target)
    monkeypatch.undo()
    assert target.read_bytes() == b"an earlier export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
