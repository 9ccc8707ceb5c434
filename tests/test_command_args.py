"""The command lines of the `clarity` sub-commands parsed with `HfArgumentParser`: both spellings of an option,
positional arguments, defaults, and a refused value as a usage error (exit 2) naming the option."""

import pytest

from clarity_hf.commands import cache_teacher_logits, make_nih_rehearsal


def test_make_nih_rehearsal_spellings_and_the_positional_folder():
    dashes = make_nih_rehearsal.parse_args(
        ["out", "--num-images", "6", "--metadata-dir", "meta", "--num-proc", "2", "--seed", "3"]
    )
    underscores = make_nih_rehearsal.parse_args(
        ["--num_images", "6", "--metadata_dir", "meta", "--num_proc", "2", "--seed", "3", "out"]
    )
    assert (dashes.output, dashes.num_images, dashes.metadata_dir, dashes.num_proc, dashes.seed) == (
        "out",
        6,
        "meta",
        2,
        3,
    )
    assert vars(dashes) == vars(underscores)
    defaults = make_nih_rehearsal.parse_args(["out", "--metadata-dir", "meta"])
    assert (defaults.num_images, defaults.seed, defaults.num_proc) == (600, 0, None)


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["out", "--num-images", "1", "--metadata-dir", "meta"], "--num-images 1: must be at least 2"),
        (
            ["out", "--num-images", "six", "--metadata-dir", "meta"],
            "--num_images/--num-images: invalid int value",
        ),
        (["--metadata-dir", "meta"], "the following arguments are required: output"),
        (["out"], "the following arguments are required: --metadata_dir/--metadata-dir"),
    ],
)
def test_make_nih_rehearsal_refuses_bad_values_with_a_usage_error(argv, needle, capsys):
    with pytest.raises(SystemExit) as exit_info:
        make_nih_rehearsal.main(argv)
    assert exit_info.value.code == 2
    assert needle in capsys.readouterr().err


def test_cache_teacher_logits_takes_its_options_and_leaves_the_training_ones():
    argv = ["--config", "tiny.yaml", "--cache-output-dir", "out", "--splits", "train", "validation"]
    argv += ["--teacher_name_or_path", "teacher", "--cache_batch_size", "4", "--augment", "false"]
    known, rest = cache_teacher_logits.parse_args(argv)
    assert (known.cache_output_dir, known.splits, known.cache_batch_size) == (
        "out",
        ["train", "validation"],
        4,
    )
    assert rest == ["--config", "tiny.yaml", "--teacher_name_or_path", "teacher", "--augment", "false"]
    known, rest = cache_teacher_logits.parse_args(["--cache_output_dir", "out"])
    assert (known.splits, known.cache_batch_size, rest) == (None, 32, [])


@pytest.mark.parametrize(
    "argv, needle",
    [
        (
            ["--cache_output_dir", "out", "--cache-batch-size", "0"],
            "--cache_batch_size 0: must be at least 1",
        ),
        (["--teacher_name_or_path", "t"], "required: --cache_output_dir/--cache-output-dir"),
    ],
)
def test_cache_teacher_logits_refuses_bad_values_with_a_usage_error(argv, needle, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cache_teacher_logits.main(argv)
    assert exit_info.value.code == 2
    assert needle in capsys.readouterr().err
