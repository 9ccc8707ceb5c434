# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""The GPU check's logic on CPU (`--dry-run`: tiny models, 64 px, the eager `torch.compile` backend): every phase
runs, `clarity_hf predict` writes one row per image, and the section has every row with median, range and load.
No timing assertions."""

from __future__ import annotations

import re

import pytest

from benchmarks.gpu_check import GpuCheckSettings, main, run_check, section
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
        r"`python -m clarity_hf predict` end to end, 4 PNGs, images/s",
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
