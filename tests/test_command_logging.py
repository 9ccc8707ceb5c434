"""Progress is logging, results are stdout: a `clarity` command logs its progress lines to stderr as
`[clarity <command>] message` and prints only its result on stdout; the package imported as a library prints
nothing and logs no INFO line unless the program configures logging."""

import json
import logging
import subprocess
import sys

from helpers import REPO_ROOT, subprocess_env

from clarity_hf.commands.cli import run_command
from clarity_hf.commands.logs import LOG_LEVEL_ENV, command_logging

TINY_TRAIN = [
    "--config", "tiny_cpu.yaml",
    "--image_size", "32",
    "--synthetic_image_size", "32",
    "--synthetic_num_train", "16",
    "--synthetic_num_validation", "16",
    "--model_config_overrides", '{"patch_size": 8, "num_hidden_layers": 2, "num_attention_map_layers": 1}',
    "--per_device_train_batch_size", "8",
    "--per_device_eval_batch_size", "8",
    "--num_train_epochs", "1",
    "--report_to", "jsonl",
    "--disable_tqdm", "true",
]  # fmt: skip


def test_train_command_logs_progress_to_stderr_and_prints_only_its_result(tmp_path, capsys):
    assert run_command("train", [*TINY_TRAIN, "--output_dir", str(tmp_path / "run")]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)  # the whole of stdout is the result
    assert result["global_step"] == 2 and result["best_model_dir"].startswith(str(tmp_path / "run"))
    progress = captured.err.splitlines()
    assert any(
        line.startswith("[clarity train] epoch 0 step 2: validation mean AUROC") for line in progress
    ), progress
    assert "validation mean AUROC" not in captured.out


def test_log_level_comes_from_the_environment_and_the_logger_is_restored_after_the_command(
    monkeypatch, capsys
):
    package = logging.getLogger("clarity_hf")
    before = (list(package.handlers), package.level)
    logger = logging.getLogger("clarity_hf.training.trainer")
    monkeypatch.setenv(LOG_LEVEL_ENV, "warning")
    with (
        command_logging("clarity outer"),
        command_logging("clarity inner"),
    ):  # nested: one handler, the outer's
        logger.info("hidden")
        logger.warning("shown")
    logger.info("after the command")  # the package is a library again: no handler of ours, its level restored
    assert capsys.readouterr().err.splitlines() == ["[clarity outer] WARNING: shown"]
    assert (list(package.handlers), package.level) == before

    monkeypatch.setenv(LOG_LEVEL_ENV, "info")
    monkeypatch.setenv("RANK", "1")  # a second process of `accelerate launch`: warnings only
    with command_logging("clarity rank1"):
        logger.info("hidden on rank 1")
        logger.warning("shown on rank 1")
    assert capsys.readouterr().err.splitlines() == ["[clarity rank1] WARNING: shown on rank 1"]

    monkeypatch.delenv("RANK")
    monkeypatch.setenv(LOG_LEVEL_ENV, "loud")
    with command_logging("clarity three"):
        logger.info("at INFO")
    assert capsys.readouterr().err.splitlines() == [
        f"[clarity three] WARNING: {LOG_LEVEL_ENV}=LOUD is not a level (DEBUG, INFO, WARNING, ERROR): using INFO",
        "[clarity three] at INFO",
    ]


LIBRARY_USE = """
import sys
sys.path.insert(0, sys.argv[2])
from training_helpers import tiny_config
from clarity_hf.data.cache import build_cache
from clarity_hf.training import train
from clarity_hf.training.data import build_synthetic

config = tiny_config(sys.argv[1] + "/run", synthetic_num_train=16, synthetic_num_validation=8)
data = build_synthetic(config)
build_cache(data, sys.argv[1] + "/cache", image_size=32)
train(config, datasets=data)
"""


def test_library_calls_print_nothing_and_log_no_progress(tmp_path):
    """A fresh process that builds a data cache and trains a tiny model through the library, configuring no
    logging: nothing on stdout, none of the progress lines a command shows."""
    completed = subprocess.run(
        [sys.executable, "-c", LIBRARY_USE, str(tmp_path), str(REPO_ROOT / "tests")],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout == ""
    assert "validation mean AUROC" not in completed.stderr and "preprocessing: " not in completed.stderr
    assert (tmp_path / "run" / "best_model" / "config.json").is_file()
