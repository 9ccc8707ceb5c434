"""The command lines of the `clarity` sub-commands parsed with `HfArgumentParser`: both spellings of an option,
positional arguments, defaults, and a refused value as a usage error (exit 2) naming the option."""

import pytest

from clarity_hf.checks import check_positive_integers
from clarity_hf.commands import (
    cache_teacher_logits,
    convert_dino,
    demo,
    evaluate,
    export_onnx,
    make_nih_rehearsal,
    prepare,
    push,
    rehearse,
)


def assert_usage_error(main, argv, needle, capsys):
    """`main(argv)` stops as argparse does for a usage error: exit status 2, `needle` on stderr."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert needle in capsys.readouterr().err


def parsed_both_ways(parse_args, dashed: str):
    """`parse_args` of `dashed` (options spelt with dashes), checked equal to the same line spelt with underscores."""
    argv = dashed.split()
    underscored = ["--" + arg[2:].replace("-", "_") if arg.startswith("--") else arg for arg in argv]
    args = parse_args(argv)
    assert vars(args) == vars(parse_args(underscored))
    return args


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
    assert_usage_error(make_nih_rehearsal.main, argv, needle, capsys)


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
    assert_usage_error(cache_teacher_logits.main, argv, needle, capsys)


def test_export_onnx_positional_model_and_zero_or_more_check_images():
    args = export_onnx.parse_args(
        ["model_dir", "--output", "m.onnx", "--check", "a.png", "b.png", "--opset", "17"]
    )
    assert (args.model, args.output, args.opset, args.check) == (
        "model_dir",
        "m.onnx",
        17,
        ["a.png", "b.png"],
    )
    # `--check` with no image stays accepted (no check), as before the dataclass.
    args = export_onnx.parse_args(["--check", "--output", "m.onnx", "model_dir"])
    assert (args.model, args.opset, args.check) == ("model_dir", 18, [])
    assert export_onnx.parse_args(["model_dir", "--output", "m.onnx"]).check == []


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["model_dir"], "the following arguments are required: --output"),
        (["--output", "m.onnx"], "the following arguments are required: model"),
        (["model_dir", "--output", "m.onnx", "--opset", "x"], "argument --opset: invalid int value: 'x'"),
        (["model_dir", "--output", "m.onnx", "--bogus"], "error: unrecognized arguments: --bogus"),
    ],
)
def test_export_onnx_usage_errors(argv, needle, capsys):
    assert_usage_error(export_onnx.main, argv, needle, capsys)


def test_export_onnx_help_is_argparse_plain(capsys):
    with pytest.raises(SystemExit) as exit_info:
        export_onnx.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: clarity export-onnx [-h] --output OUTPUT [--opset OPSET]")
    assert "--check [IMAGE ...]" in out and "ONNX opset (18)" in out and "(default:" not in out


def test_prepare_positionals_flags_before_them_and_both_spellings():
    # A flag before the positionals must not swallow ROOT (a bool field of HfArgumentParser would).
    args = prepare.parse_args("--skip-missing --overwrite nih cache --image-size 512".split())
    assert (args.root, args.output, args.skip_missing, args.overwrite, args.public, args.image_size) == (
        "nih", "cache", True, True, False, 512,
    )  # fmt: skip
    args = parsed_both_ways(
        prepare.parse_args,
        "nih cache --num-proc 8 --shard-size 4 --validation-fraction 0.25 --train-val-list a.txt --test-list b.txt "
        "--push-to-hub u/r --public --resample lanczos --image-format png --seed 3",
    )
    assert (args.num_proc, args.validation_fraction, args.push_to_hub, args.resample, args.public, args.image_format) == (
        8, 0.25, "u/r", "lanczos", True, "png",
    )  # fmt: skip
    args = prepare.parse_args(["nih", "cache"])
    assert (args.image_size, args.num_proc, args.shard_size, args.resample, args.image_format) == (
        224, 1, 1000, "bilinear", "pgm",
    )  # fmt: skip
    assert (args.validation_fraction, args.seed, args.skip_missing, args.push_to_hub) == (0.1, 0, False, None)


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["nih", "cache", "--image-size", "0"], "--image-size must be a positive integer, got 0"),
        (["nih", "cache", "--num-proc", "-1"], "--num-proc must be a positive integer, got -1"),
        (["nih", "cache", "--validation-fraction", "1"], "--validation-fraction 1.0: must be in [0, 1)"),
        (["nih", "cache", "--resample", "nearest"], "argument --resample: invalid choice: 'nearest'"),
        (["nih"], "the following arguments are required: output"),
        (["nih", "cache", "extra"], "error: unrecognized arguments: extra"),
    ],
)
def test_prepare_usage_errors(argv, needle, capsys):
    assert_usage_error(prepare.main, argv, needle, capsys)


def test_evaluate_repeated_model_both_spellings_and_defaults():
    args = evaluate.parse_args(
        "--model student=runs/s --model runs/t --dataset d --output-dir out --split val".split()
    )
    assert (args.model, args.dataset, args.synthetic, args.output_dir, args.split) == (
        ["student=runs/s", "runs/t"], "d", False, "out", "val",
    )  # fmt: skip
    defaults = (args.seed, args.validation_fraction, args.n_bootstrap, args.batch_size, args.device)
    assert defaults == (42, 0.2, 1000, 32, "cpu")
    args = parsed_both_ways(
        evaluate.parse_args,
        "--model m --synthetic --synthetic-num-test 8 --synthetic-image-size 32 --synthetic-seed 1 "
        "--per-class-thresholds --n-bootstrap 10 --batch-size 4 --validation-fraction 0.5 --output-dir out",
    )
    assert (args.synthetic, args.per_class_thresholds, args.synthetic_num_test, args.dataset) == (
        True,
        True,
        8,
        None,
    )


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--model", "m", "--output-dir", "o"], "one of the arguments --dataset --synthetic is required"),
        (
            ["--model", "m", "--output-dir", "o", "--dataset", "d", "--synthetic"],
            "not allowed with argument --dataset",
        ),
        (["--dataset", "d", "--output-dir", "o"], "the following arguments are required: --model"),
        (
            ["--model", "m", "--dataset", "d"],
            "the following arguments are required: --output_dir/--output-dir",
        ),
        (
            ["--model", "m", "--synthetic", "--output-dir", "o", "--batch-size", "0"],
            "--batch-size 0: must be at least 1",
        ),
    ],
)
def test_evaluate_usage_errors(argv, needle, capsys):
    assert_usage_error(evaluate.main, argv, needle, capsys)


@pytest.mark.parametrize(
    "main, argv, needle",
    [
        (push.main, ["--model", "m", "--repo-id", "u/r", "--nope", "1"], "unrecognized arguments: --nope 1"),
        (
            convert_dino.main,
            ["--checkpoint", "c.pth", "--output", "o", "--nope"],
            "unrecognized arguments: --nope",
        ),
        (
            rehearse.main,
            ["--output-dir", "o", "--metadata-dir", "m", "--dicom", "d.dcm", "--nope"],
            "unrecognized arguments: --nope",
        ),
        (demo.main, ["--quick", "--teacher-steps", "0"], "--teacher-steps must be a positive integer, got 0"),
        (demo.main, ["--nope"], "unrecognized arguments: --nope"),
    ],
)
def test_every_dataclass_command_answers_a_bad_line_as_argparse_does(main, argv, needle, capsys):
    """One parse for all of them: an unknown option or a refused value is exit 2 with the usage, not a traceback."""
    assert_usage_error(main, argv, needle, capsys)


@pytest.mark.parametrize("value", [0, -3, True, 2.0, "4"])
def test_positive_integer_check_refuses_what_is_not_an_integer_of_at_least_one(value):
    with pytest.raises(ValueError, match=rf"^--batch-size must be a positive integer, got {value!r}$"):
        check_positive_integers(
            {"epochs": 2, "batch_size": value}, lambda name: "--" + name.replace("_", "-")
        )


def test_positive_integer_check_passes_integers_and_unset_values():
    check_positive_integers({"a": 1, "b": 10**9, "c": None})
    with pytest.raises(ValueError, match="^steps must be a positive integer, got 0$"):
        check_positive_integers({"steps": 0})
