"""The error boundary of every `clarity` command: an expected failure (a path that cannot be written, a non-empty
export folder, a missing report, a bad repo id, a device this machine lacks) is ONE line on stderr naming the input
and the remedy, exit code 2, and nothing half-written at the target; a bug keeps its traceback. The tests run as
root too, so "unwritable" is a path below a regular file (chmod does not stop root)."""

import pytest
import torch

from clarity_hf import ClarityConfig, ClarityForMultiLabelLocalization
from clarity_hf.commands.cli import COMMANDS, main, run_command
from clarity_hf.commands.errors import CommandError, check_device, run_with_boundary
from clarity_hf.evaluation.run import build_processor


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("cli_errors") / "model"
    ClarityForMultiLabelLocalization(ClarityConfig.from_preset("clarity-tiny")).save_pretrained(folder)
    build_processor(64).save_pretrained(folder)
    return folder


@pytest.fixture
def blocker(tmp_path):
    """A regular file: any path below it cannot be created, whoever runs the test."""
    path = tmp_path / "a-file"
    path.write_text("not a folder")
    return path


def _one_error_line(capsys, *needles):
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if ": error: " in line]
    assert len(errors) == 1 and "Traceback" not in "\n".join(err), err
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def _push(model_dir, *extra):
    return run_command(
        "push", ["--model", str(model_dir), "--repo-id", "someone/clarity", "--dry-run", *extra]
    )


def test_push_to_an_unwritable_out(model_dir, blocker, capsys):
    assert _push(model_dir, "--out", str(blocker / "export")) == 2
    _one_error_line(capsys, "clarity push: error:", str(blocker / "export"), "not a folder")


def test_push_into_a_non_empty_folder_names_overwrite(model_dir, tmp_path, capsys):
    out = tmp_path / "export"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert _push(model_dir, "--out", str(out)) == 2
    _one_error_line(capsys, str(out), "notes.txt", "--overwrite")
    assert [p.name for p in out.iterdir()] == ["notes.txt"]  # nothing written, nothing removed


def test_push_with_missing_results_writes_nothing(model_dir, tmp_path, capsys):
    out = tmp_path / "export"
    assert _push(model_dir, "--results", str(tmp_path / "missing.json"), "--out", str(out)) == 2
    _one_error_line(capsys, "--results", "missing.json", "clarity evaluate")
    assert not out.exists()


def test_push_with_a_bad_repo_id_writes_nothing(model_dir, tmp_path, capsys):
    out = tmp_path / "export"
    assert (
        run_command("push", ["--model", str(model_dir), "--repo-id", "not a repo!", "--out", str(out)]) == 2
    )
    _one_error_line(capsys, "not a repo!")
    assert not out.exists()


def test_export_onnx_to_an_unwritable_path(model_dir, blocker, capsys):
    target = blocker / "model.onnx"
    assert run_command("export-onnx", [str(model_dir), "--output", str(target)]) == 2
    _one_error_line(capsys, "clarity export-onnx: error:", str(blocker))
    assert blocker.read_text() == "not a folder"


def test_train_to_an_unwritable_output_dir(blocker, capsys):
    argv = ["--config", "tiny_cpu.yaml", "--output_dir", str(blocker / "run"), "--max_steps", "1"]
    assert run_command("train", argv) == 2
    _one_error_line(capsys, "clarity train: error:", str(blocker / "run"))


@pytest.mark.parametrize(
    "device,needle",
    [("foo", "is not a device"), ("cuda" if not torch.cuda.is_available() else "cuda:99", "use")],
)
def test_predict_refuses_a_device_it_cannot_use(model_dir, tmp_path, capsys, device, needle):
    argv = [str(tmp_path / "x.png"), "--model", str(model_dir), "--device", device]
    assert run_command("predict", argv) == 2
    line = _one_error_line(capsys, "clarity predict: error:", f"--device {device!r}", needle)
    assert "cpu" in line  # the remedy lists a device that is there


def test_a_bug_keeps_its_traceback():
    def buggy(argv):
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        run_with_boundary("clarity x", buggy, [])


def test_check_device_accepts_the_cpu():
    assert check_device("cpu") == "cpu" and check_device(None) is None
    with pytest.raises(CommandError, match="--device 'gpu0'"):
        check_device("gpu0")


def test_help_lists_every_command_and_an_unknown_one_is_refused(capsys):
    assert main(["--help"]) == 0
    listed = capsys.readouterr().out
    assert all(f"\n  {name} " in listed for name in COMMANDS) and len(COMMANDS) == 12
    assert main(["trian"]) == 2
    assert "unknown command 'trian'" in capsys.readouterr().err


def test_prepare_without_metadata_names_the_folder(tmp_path, capsys):
    (tmp_path / "nih").mkdir()
    assert run_command("prepare", [str(tmp_path / "nih"), str(tmp_path / "cache")]) == 2
    _one_error_line(capsys, "clarity prepare: error:", "no metadata in", "Data_Entry_2017")
    assert not (tmp_path / "cache").exists()


def test_train_with_a_bad_option_value_names_it(tmp_path, capsys):
    argv = ["--config", "tiny_cpu.yaml", "--output_dir", str(tmp_path / "run"), "--learning_rate", "-1"]
    assert run_command("train", argv) == 2
    _one_error_line(capsys, "clarity train: error:", "learning_rate", "-1")
