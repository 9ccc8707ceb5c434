# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""The main job: `python -m clarity_hf demo --quick` writes the report, the figures and a Hub-ready model folder that
reloads with trust_remote_code in a fresh process; the verdict and ablation helpers compute from the numbers."""

import json
import subprocess
import sys

import pytest
from helpers import REPO_ROOT, subprocess_env
from PIL import Image

from clarity_hf.commands.cli import demo_main
from clarity_hf.commands.demo import ABLATIONS, QUICK_VALUES, DemoConfig, parse_ablations, parse_demo_args
from clarity_hf.evaluation.figures import HEADER_HEIGHT, LABEL_WIDTH
from clarity_hf.evaluation.report import verdict, verdict_markdown


def entry(auroc, iou):
    """A report entry with mean AUROC `auroc` and eval-half macro accuracies `iou` at T(IoU) 0.1 ... 0.7."""
    return {
        "classification": {"mean_auroc": auroc},
        "localization": {"eval": {"iou": {"thresholds": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7], "macro": iou}}},
    }


def test_verdict_from_the_numbers():
    baseline = entry(0.8, [0.5, 0.4, 0.3, 0.2, 0.1, 0.0, 0.0])
    good = entry(0.95, [0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0])
    result = verdict({"CLARiTy": good, "teacher Grad-CAM": baseline, "teacher CAM": baseline})
    assert result["passed"] and len(result["checks"]) == 5  # AUROC + 2 baselines x (0.3, 0.5)
    assert "**Met**" in verdict_markdown(result, "synthetic data")
    # Equal at 0.5 is not better; AUROC 0.899 fails.
    tied = entry(0.899, [0.6, 0.5, 0.4, 0.3, 0.1, 0.1, 0.0])
    result = verdict({"CLARiTy": tied, "teacher Grad-CAM": baseline})
    failed = [c["check"] for c in result["checks"] if not c["passed"]]
    assert failed == ["CLARiTy mean AUROC >= 0.9", "CLARiTy > teacher Grad-CAM at T(IoU)=0.5"]
    text = verdict_markdown(result, "synthetic data")
    assert "**NOT met**" in text and "| 0.100 | 0.100 | FAIL |" in text and "0.899" in text


def test_parse_ablations():
    assert (
        parse_ablations("all")
        == list(ABLATIONS)
        == [
            "segment_cam",
            "anatomical_prior",
            "orthogonal_loss",
            "attention_pooling",
            "distillation",
        ]
    )
    assert parse_ablations("none") == [] and parse_ablations(None) == []
    assert parse_ablations("distillation, segment_cam") == ["distillation", "segment_cam"]
    with pytest.raises(ValueError, match="unknown ablation"):
        parse_ablations("dino")


@pytest.mark.parametrize(
    "argv",
    [
        ["--batch-size", "0"],
        ["--batch-size", "-4"],
        ["--student-steps", "0"],
        ["--image-size", "-64"],
        ["--num-test", "0"],
        ["--seed", "-1"],
        ["--learning-rate", "-1e-3"],
        ["--learning-rate", "nan"],
        ["--ablations", "dino"],
        ["--ablations", "distillation,dino"],
        ["--ablation-seeds", "0", "-1"],
        ["--preset", "clarity-huge"],
    ],
)
def test_demo_parser_refuses_invalid_values(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        demo_main(argv)
    assert exit_info.value.code == 2
    assert argv[0] in capsys.readouterr().err


def test_demo_parser_defaults():
    config = parse_demo_args([])
    assert config == DemoConfig()
    assert (
        config.output_dir == "./clarity-demo-output"
        and config.data_dir is None
        and config.preset == "clarity-tiny"
    )
    assert config.reload_check is True and config.quick is False and config.ablations == []
    assert DemoConfig().ablations == [] and DemoConfig().ablation_seeds == [0, 1]
    assert DemoConfig(student_steps=7).resolved().ablation_steps == 7  # the full student schedule
    assert DemoConfig.quick_config().ablations == [] and DemoConfig.quick_config().image_size == 64


def test_demo_flags_in_both_spellings():
    config = parse_demo_args(
        ["--output-dir", "out", "--data_dir", "nih", "--preset", "clarity-s-16-224", "--num-train", "40"]
        + [
            "--learning-rate",
            "2e-4",
            "--ablations",
            "distillation,segment_cam",
            "--ablation-seeds",
            "3",
            "1",
            "3",
        ]
        + ["--no-reload-check", "--per-class-thresholds", "--seed", "5", "--n_bootstrap", "30"]
    )
    assert (config.output_dir, config.data_dir, config.preset) == ("out", "nih", "clarity-s-16-224")
    assert (
        config.num_train == 40
        and config.learning_rate == 2e-4
        and config.seed == 5
        and config.n_bootstrap == 30
    )
    assert config.ablations == ["distillation", "segment_cam"] and config.ablation_seeds == [3, 1]
    assert config.reload_check is False and config.per_class_thresholds is True and config.quick is False
    assert parse_demo_args(["--ablations", "all"]).ablations == list(ABLATIONS)
    assert parse_demo_args(["--ablations", "none"]).ablations == []


def test_quick_sets_defaults_that_explicit_flags_override():
    assert parse_demo_args(["--quick"]) == DemoConfig.quick_config()
    config = parse_demo_args(
        ["--num-test", "40", "--quick", "--image-size", "48", "--ablations", "distillation"]
    )
    expected = {**QUICK_VALUES, "num_test": 40, "image_size": 48, "ablations": ["distillation"]}
    assert {name: getattr(config, name) for name in expected} == expected
    # Without --quick, the same flags leave every other option at the full run's default.
    full = parse_demo_args(["--num-test", "40"])
    assert full.num_test == 40 and full.image_size is None and full.student_steps is None and not full.quick


def test_demo_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        demo_main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--output-dir", "--data-dir", "--preset", "--quick", "--ablations", "--ablation-seeds"):
        assert option in text, option
    for option in (
        "--image-size",
        "--no-reload-check",
        "--per-class-thresholds",
        "examples:",
        "clarity-demo --quick",
    ):
        assert option in text, option


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "clarity_hf",
            "demo",
            "--quick",
            "--output-dir",
            str(out),
            "--ablations",
            "distillation",
            "--ablation-seeds",
            "0",
            "1",
        ],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        cwd=tmp_path,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    summary = json.loads(completed.stdout)  # stdout is the summary only; the progress is logged to stderr
    assert summary["reload_ok"] is True
    assert "[clarity demo] fresh-process reload: OK" in completed.stderr
    report = json.loads((out / "report.json").read_text())
    models = report["models"]
    # Ablation students are not rows of their own: they enter through the table aggregated over seeds.
    assert set(models) == {"CLARiTy", "teacher Grad-CAM", "teacher CAM", "plain ViT (CLS attention)"}
    # Every row states its map grid; the teacher's Grad-CAM stage was chosen on the tune half.
    assert models["CLARiTy"]["map"]["grid"] == models["plain ViT (CLS attention)"]["map"]["grid"] == "8 x 8"
    selection = models["teacher Grad-CAM"]["map"]["stage_selection"]
    assert selection["selected_on"] == "tune" and len(selection["candidates"]) == 4
    stage = models["teacher Grad-CAM"]["map"]["stage"]
    assert models["teacher Grad-CAM"]["map"]["grid"] == selection["candidates"][str(stage)]["grid"]
    assert models["teacher CAM"]["map"] == {"grid": "2 x 2", "stage": 3}
    for name, model in models.items():
        assert model["localization"]["split"] == "eval" and model["tuning"]["tune_split"] == "tune", name
        assert len(model["classification"]["per_class"]) == 14
    # synthetic test images: the paper's NIH official-test rows are not put beside them
    assert report["published"] is None
    evaluated = report["metadata"]["evaluation"]
    assert (
        evaluated["split"] == "test"
        and evaluated["synthetic"] is True
        and len(evaluated["label_names"]) == 14
    )
    assert evaluated["num_images"] > 0 and evaluated["map_grid"] == "8 x 8"
    assert report["reload"]["ok"] is True and report["reload"]["clarity_hf_imported"] is False
    assert [row["variant"] for row in report["ablation"]] == ["full CLARiTy", "w/o distillation"]
    assert [row["seeds"] for row in report["ablation"]] == [2, 2]
    auroc = report["ablation"][1]["metrics"]["mean_auroc"]
    assert len(auroc["values"]) == 2 and auroc["min"] <= auroc["mean"] <= auroc["max"]
    assert isinstance(auroc["flagged"], bool)
    assert report["verdict"]["passed"] in (True, False) and len(report["verdict"]["checks"]) == 7
    markdown = (out / "report.md").read_text()
    for heading in ("## Summary", "## Verdict", "## Ablation", "## Run"):
        assert heading in markdown
    assert "(published)" not in markdown and "No published row is shown" in markdown
    assert markdown.index("## In short") < markdown.index("## Summary")
    assert "synthetic" in markdown[: markdown.index("## Summary")]
    assert set(report["operating_thresholds"]) == {"CLARiTy", "teacher Grad-CAM", "plain ViT (CLS attention)"}
    assert (out / "figures" / "predictions_clarity.png").is_file()
    assert ("**Met**" in markdown) == report["verdict"]["passed"]
    # Figures: 8 boxed-class rows, one column per chosen image (160 px tiles).
    figure = out / "figures" / "overlays_clarity.png"
    with Image.open(figure) as image:
        width, height = image.size
    assert height == HEADER_HEIGHT + 8 * 160 and (width - LABEL_WIDTH) % 160 == 0 and width > LABEL_WIDTH
    # The Hub-ready folder.
    names = {p.name for p in (out / "model").iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "modeling_clarity.py",
        "configuration_clarity.py",
        "preprocessor_config.json",
        "README.md",
    } <= names
    assert not any(name.endswith((".bin", ".pt", ".pth")) for name in names)
    processor = json.loads((out / "model" / "preprocessor_config.json").read_text())
    tuned = models["CLARiTy"]["tuning"]["thresholds"]
    assert processor["heatmap_threshold"][:8] == [tuned[name] for name in list(tuned)]
    assert str(out / "model") in completed.stdout and str(out / "report.md") in completed.stdout


def test_entry_points_are_declared():
    text = (REPO_ROOT / "pyproject.toml").read_text()
    assert 'clarity = "clarity_hf.commands.cli:main"' in text
    assert 'clarity-demo = "clarity_hf.commands.cli:demo_main"' in text
    assert 'clarity-predict = "clarity_hf.commands.cli:predict_main"' in text


def test_evaluate_script_writes_a_report_folder(tmp_path, capsys):
    import torch

    from clarity_hf import ClarityConfig, ClarityForMultiLabelLocalization
    from clarity_hf.evaluation.run import build_processor

    torch.manual_seed(0)
    folder = tmp_path / "model"
    ClarityForMultiLabelLocalization(ClarityConfig.from_preset("clarity-tiny")).save_pretrained(folder)
    build_processor(64).save_pretrained(folder)
    from clarity_hf.baselines import build_teacher

    teacher_folder = tmp_path / "teacher"
    build_teacher("convnextv2-test", image_size=64).save_pretrained(teacher_folder)
    build_processor(64).save_pretrained(teacher_folder)
    from clarity_hf.commands import evaluate as script

    out = tmp_path / "report"
    argv = [
        "--model",
        f"tiny={folder}",
        "--model",
        str(teacher_folder),
        "--synthetic",
        "--synthetic-num-test",
        "40",
        "--synthetic-image-size",
        "64",
        "--n-bootstrap",
        "10",
        "--output-dir",
        str(out),
    ]
    assert script.main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    report = json.loads((out / "report.json").read_text())
    models = report["models"]
    assert list(models) == ["tiny", "teacher Grad-CAM", "teacher CAM"]
    assert models["tiny"]["localization"]["split"] == "eval" and models["tiny"]["map"] == {"grid": "8 x 8"}
    # Grad-CAM is read from the stage chosen on the tune half among the teacher's four (16 x 16 ... 2 x 2 at 64 px).
    gradcam = models["teacher Grad-CAM"]["map"]
    selection = gradcam["stage_selection"]
    candidates = selection["candidates"]  # JSON keys: the stage numbers as text
    assert selection["selected_on"] == "tune" and sorted(candidates) == ["0", "1", "2", "3"]
    assert [candidates[str(s)]["grid"] for s in range(4)] == ["16 x 16", "8 x 8", "4 x 4", "2 x 2"]
    assert gradcam["grid"] == candidates[str(gradcam["stage"])]["grid"]
    assert (
        printed["report_markdown"] == str(out / "report.md")
        and (out / "figures" / "overlays_02.png").is_file()
    )
    from clarity_hf.commands.cli import run_command

    assert run_command("evaluate", argv[:-2] + ["--split", "nope", "--output-dir", str(out)]) == 2
    assert "has no split 'nope'" in capsys.readouterr().err
    # a model naming the classes in another order than the data is refused before any prediction
    config = json.loads((folder / "config.json").read_text())
    config["id2label"]["0"], config["id2label"]["1"] = config["id2label"]["1"], config["id2label"]["0"]
    (folder / "config.json").write_text(json.dumps(config))
    assert run_command("evaluate", argv[:-2] + ["--output-dir", str(tmp_path / "refused")]) == 2
    assert "the data has labels" in capsys.readouterr().err and not (tmp_path / "refused").exists()
