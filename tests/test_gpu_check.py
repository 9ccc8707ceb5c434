# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""The GPU check's logic on CPU (`--dry-run`: tiny models, 64 px, the eager `torch.compile` backend): every phase
runs, `clarity_hf predict` writes one row per image, and the section has every row with median, range and load.
No timing assertions."""

from __future__ import annotations

import json
import re

import pytest

from benchmarks.gpu_check import (
    GpuCheckSettings,
    main,
    results_from_json,
    results_to_json,
    run_check,
    section,
    workers_per_gpu,
)
from benchmarks.measure import Timing
from benchmarks.report import write_sections

CELL = r"[\d,]+\.\d \([\d,]+\.\d-[\d,]+\.\d\) \[load \d+\.\d/\d+\.\d\]( noisy)?"


@pytest.mark.slow
def test_dry_run_measures_every_phase_and_writes_its_section(tmp_path):
    settings = GpuCheckSettings.dry()
    results = run_check(settings, log=lambda message: None)
    assert results["skipped"] == []
    assert set(results["training"]) == {
        f"{stage}, {kind}"
        for stage in ("teacher", "student + online teacher")
        for kind in ("eager", "compiled")
    }
    text = section(results, settings, "python -m benchmarks.gpu_check --dry-run")
    assert text.startswith("## GPU check (CPU") and "Dry run on CPU" in text
    for row in (
        r"training images/s, teacher, eager, batch 2",
        r"training images/s, student \+ online teacher, compiled, batch 2",
        r"device augmentation images/s \(batch 2\)",
        r"loader images/s per worker \(1 thread\), PGM, `augment_on: device`",
        r"loader images/s per worker \(1 thread\), PNG, `augment_on: cpu`",
        r"inference images/s, batch 4 \(logits \+ heatmaps\)",
        r"`python -m clarity_hf predict` end to end, 4 PNGs, 2 decoding workers, images/s",
    ):
        assert re.search(rf"^\| {row} \| {CELL} \|$", text, flags=re.M), row
    assert re.search(r"^\| device augmentation's share of a student step \(eager\) \| \d+\.\d%", text, re.M)
    # The section goes beside the projection, replacing only itself.
    page = tmp_path / "BENCH.md"
    page.write_text("# b\n\n<!-- BEGIN rehearsal -->\nprojection\n<!-- END rehearsal -->\n")
    write_sections(page, {"gpu-check": text})
    assert page.read_text().index("projection") < page.read_text().index("## GPU check")


def test_refuses_to_run_without_a_gpu_unless_dry(monkeypatch, capsys):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(SystemExit):
        main(["--output", "-"])
    assert "--dry-run" in capsys.readouterr().err


def test_budget_skips_the_phases_it_cannot_start(monkeypatch):
    settings = GpuCheckSettings.dry()
    settings.budget_seconds = -1.0  # already spent: nothing starts
    results = run_check(settings, log=lambda message: None)
    assert results["skipped"] == ["training", "augmentation", "loader", "inference", "predict"]
    assert "Not measured (time budget" in section(results, settings, "x")


def _measured_results() -> dict:
    """A GPU check's results as `run_check` returns them, with made-up seconds (16 cores, light load)."""

    def timing(*times):
        return Timing(times=list(times), load=(0.5, 0.7), cores=16)

    return {
        "skipped": [],
        "failed": [],
        "device_name": "NVIDIA H200",
        "seconds": 271.0,
        "load": (0.5, 4.6),
        "training": {
            "teacher, eager": timing(0.8, 0.8, 0.9),
            "student + online teacher, eager": timing(0.4, 0.4, 0.4),
            "teacher, compiled": timing(0.4, 0.4, 0.4),
            "student + online teacher, compiled": timing(0.5, 0.5, 0.5),
        },
        "augmentation": timing(0.01, 0.01, 0.01),
        "loader": (
            {
                "cpu/png": timing(0.8, 0.8, 0.8),
                "device/png": timing(0.4, 0.4, 0.4),
                "cpu/pgm": timing(0.5, 0.5, 0.5),
                "device/pgm": timing(0.04, 0.04, 0.04),
                "warp": timing(0.8, 0.8, 0.8),
            },
            48,
        ),
        "inference": timing(0.1, 0.1, 0.1),
        "predict": timing(20.0, 21.0, 22.0),
    }


def test_workers_per_gpu_divide_the_faster_training_rate_by_each_loader_rate():
    settings = GpuCheckSettings()  # batch 16, 5 steps a repeat: 80 images a training repeat
    table = workers_per_gpu(_measured_results(), settings)
    # teacher: compiled 0.4 s -> 200 images/s; student: eager 0.4 s -> 200 images/s. A worker at 48 / 0.8 = 60
    # images/s (cpu, PNG) -> 3.33 workers; device PGM 1,200 images/s -> 0.17; with the host warp (0.04 + 0.8 s per
    # 48 images) -> 200 * 0.84 / 48 = 3.50.
    assert "| teacher | 200.0 | 3.33 | 2.08 | 1.67 | 0.17 | 3.50 |" in table
    assert "| student + online teacher | 200.0 | 3.33 | 2.08 | 1.67 | 0.17 | 3.50 |" in table
    assert workers_per_gpu({"training": {}}, settings) == ""


def test_the_saved_figures_write_the_same_section_with_the_measuring_machines_cores(tmp_path, monkeypatch):
    settings = GpuCheckSettings(train_batch_size=8)
    results = _measured_results()
    raw = json.loads(json.dumps(results_to_json(results, settings, "python -m benchmarks.gpu_check")))
    monkeypatch.setattr(
        "os.cpu_count", lambda: 2
    )  # rendered on a 2-core machine: load 4.6 is not noisy on 16
    again, again_settings, command = results_from_json(raw, GpuCheckSettings())
    assert again_settings == settings and command == "python -m benchmarks.gpu_check"
    assert section(again, again_settings, command) == section(results, settings, command)
    assert "noisy" not in section(again, again_settings, command)
    saved = tmp_path / "figures.json"
    saved.write_text(json.dumps(raw))
    page = tmp_path / "BENCH.md"
    page.write_text("# b\n")
    assert main(["--from-json", str(saved), "--output", str(page), "--section", "gpu-check-h200"]) == 0
    text = page.read_text()
    assert "<!-- BEGIN gpu-check-h200 -->" in text and "| teacher | 100.0 |" in text
    assert f"--from-json {saved}" in text


def test_options_are_the_settings_fields_and_unknown_phases_are_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--dry-run", "--phases", "training,nope", "--output", "-"])
    assert exit_info.value.code == 2 and "unknown ['nope']" in capsys.readouterr().err


def test_dry_run_phases_and_options_change_only_what_is_given(capsys):
    assert main(["--dry-run", "--phases", "inference", "--inference-batch-size", "3", "--output", "-"]) == 0
    out = capsys.readouterr().out
    assert "inference images/s, batch 3 (logits + heatmaps)" in out and "training images/s" not in out
    assert "Dry run on CPU" in out and "64 px" in out
