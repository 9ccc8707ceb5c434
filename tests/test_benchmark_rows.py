# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""How far a benchmark row can be trusted: every timed row is the median of at least 3 repeats after a warm-up,
printed with its range and the 1-minute load average at its start and end, and marked `noisy` when its range exceeds
25% of its median or the load average exceeded the core count. No timing assertions: the figures are faked."""

from __future__ import annotations

import re

import torch

import benchmarks.measure as measure
from benchmarks.loader import cache_split, loader_timings, section
from benchmarks.measure import MIN_REPEATS, Timing, time_interleaved

CELL = re.compile(r"^[\d,]+\.\d \([\d,]+\.\d-[\d,]+\.\d\) \[load \d+\.\d/\d+\.\d\]( noisy)?$")


def test_cell_is_median_range_and_load():
    quiet = Timing([0.010, 0.0105, 0.011], load=(0.52, 0.71), cores=2)
    assert quiet.cell() == "10.5 (10.0-11.0) [load 0.5/0.7]"
    assert not quiet.noisy and CELL.match(quiet.cell())
    # As a rate: 64 images per call; the slowest call gives the low end of the range.
    assert quiet.rate_cell(64) == "6,095.2 (5,818.2-6,400.0) [load 0.5/0.7]"
    assert CELL.match(quiet.rate_cell(64))


def test_noisy_when_the_range_exceeds_a_quarter_of_the_median():
    assert Timing([1.0, 1.1, 1.25], load=(0.1, 0.1), cores=2).cell().endswith("[load 0.1/0.1]")
    wide = Timing([1.0, 1.1, 1.3], load=(0.1, 0.1), cores=2)  # range 0.3 / median 1.1 = 27%
    assert wide.noisy and wide.cell() == "1100.0 (1000.0-1300.0) [load 0.1/0.1] noisy"


def test_noisy_when_the_load_exceeds_the_core_count():
    assert not Timing([1.0, 1.0, 1.0], load=(1.9, 2.0), cores=2).noisy
    assert Timing([1.0, 1.0, 1.0], load=(1.0, 2.1), cores=2).noisy
    assert Timing([1.0, 1.0, 1.0], load=(8.0, 1.0), cores=2).cell().endswith(" noisy")


def test_fewer_than_three_repeats_are_noisy_and_the_timer_never_takes_fewer(monkeypatch):
    assert Timing([1.0, 1.0], load=(0.0, 0.0), cores=2).noisy
    calls = {"a": 0, "b": 0}
    loads = iter([0.25, 0.75])
    monkeypatch.setattr(measure, "load_average", lambda: next(loads))

    def case(name):
        return lambda: calls.__setitem__(name, calls[name] + 1)

    timings = time_interleaved({"a": case("a"), "b": case("b")}, torch.device("cpu"), repeats=1, warmup=0)
    # One warm-up round at least, then MIN_REPEATS timed rounds, whatever was asked.
    assert calls == {"a": 1 + MIN_REPEATS, "b": 1 + MIN_REPEATS}
    assert [len(t.times) for t in timings.values()] == [MIN_REPEATS, MIN_REPEATS]
    assert timings["a"].load == (0.25, 0.75) == timings["b"].load


def test_loader_section_puts_both_paths_side_by_side(tmp_path):
    splits = {fmt: cache_split(4, 64, tmp_path, fmt) for fmt in ("png", "pgm")}
    timings = loader_timings(splits, 64, 4, batch_size=2)
    assert set(timings) == {"cpu/png", "device/png", "cpu/pgm", "device/pgm", "warp"}
    assert all(len(t.times) == MIN_REPEATS for t in timings.values())
    text = section(timings, 4, 64, "python -m benchmarks.loader", 1)
    rows = [line for line in text.splitlines() if line.startswith("| 64 px ")]
    assert [row.split(" | ")[0] for row in rows] == ["| 64 px PNG cache", "| 64 px PGM cache"]
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert CELL.match(cells[1]) and CELL.match(cells[2]), cells
        assert re.fullmatch(r"\d+\.\dx", cells[3])
    projection = [line for line in text.splitlines() if line.startswith(("| teacher", "| student"))]
    assert len(projection) == 2 and all(len(line.strip("|").split("|")) == 8 for line in projection)


def test_rehearsal_section_reports_both_loader_paths_and_workers_per_gpu(tmp_path):
    """The rehearsal section from a stage table and saved measurements (no rehearsal run): the loader rows carry
    median, range and load, and the projection gives workers per GPU for both paths from those medians."""
    import json

    from benchmarks import rehearsal

    run = tmp_path / "run"
    run.mkdir()
    config = dict(output_dir="/x", num_images=4, steps=1, train_batch_size=2, gradient_accumulation_steps=1)
    stages = {
        "stages": [{"name": "train_teacher", "seconds": 10.0, "images": 4}],
        "config": {**config, "num_processes": 1},
        "cpu_count": 2,
        "load_average": [1.0, 1.0, 1.0],
        "torch": torch.__version__,
        "total_seconds": 10.0,
    }
    (run / "stages.json").write_text(json.dumps(stages))
    # 16 images a round: cpu 0.2 s (80/s), device 0.02 s (800/s); the warp 0.1 s.
    rates = {
        f"{path}/{fmt}": {"times": [t, t * 1.1, t * 0.9], "load": [0.5, 0.6], "images": 16}
        for fmt in ("png", "pgm")
        for path, t in (("cpu", 0.2), ("device", 0.02))
    }
    rates["warp"] = {"times": [0.1, 0.1, 0.1], "load": [0.5, 0.6], "images": 16}
    cache = {f"{size}_{fmt}_mb_per_1000": 1.0 for size in (224, 512) for fmt in ("png", "pgm")}
    cache.update({"images": 16, "512_png_s_per_image": 0.2, "512_pgm_s_per_image": 0.1})
    flops = dict(teacher_train=3e11, teacher_train_used=4.8e11, teacher_forward=1.6e11)
    flops.update(student_train=1.37e11, student_train_used=1.37e11, student_forward=4.6e10)
    measurements = tmp_path / "measured.json"
    run_info = {"seconds": 42.0, "load_start": 0.3}  # the measuring run's, kept with its figures
    measurements.write_text(
        json.dumps({"cache": cache, "rates": rates, "flops": flops, "folder": "nih", "run": run_info})
    )
    page = tmp_path / "BENCH.md"
    argv = ["--rehearsal-dir", str(run), "--output", str(page), "--measurements", str(measurements)]
    assert rehearsal.main(argv) == 0
    text = page.read_text()
    assert (
        "`augment_on: cpu`: median (range) [load start/end] of 3 interleaved repeats after a warm-up | "
        in text
    )
    assert "| 80.0 (72.7-88.9) [load 0.5/0.6] |" in text and "| 800.0 (727.3-888.9) [load 0.5/0.6] |" in text
    assert "the device path's batched warp run on this CPU, ms per image | 6.25 |" in text
    # teacher: 989e12 * 0.4 / 4.8e11 = 824 images/s per GPU -> 10.3 cpu workers, 1.0 device worker
    assert "| 824 | 10.3 / 1.0 |" in text
    assert "(benchmark run 42 s; 1-min load average 0.3 at its start)" in text
    # The projection's cache table: both formats, PGM (prepare's default) first.
    assert "| projected wall time, PGM | 1.6 h |" in text and "| projected wall time, PNG | 3.1 h |" in text


def test_measured_gpu_rows_give_the_mfu_the_projection_assumes(tmp_path):
    import json

    from benchmarks import rehearsal

    # 16 x 5 images a repeat: teacher compiled 0.4 s -> 200 images/s; at 4.8e11 FLOPs each, 96 TFLOP/s = 9.7% of
    # 989; 77,872 images x 30 epochs / 200 = 3.2 h on one GPU.
    from benchmarks.gpu_check import GpuCheckSettings, results_to_json
    from benchmarks.measure import Timing

    def timing(median):
        return Timing([median] * 3, (0.5, 0.5), cores=16)

    results = {
        "device_name": "GPU X",
        "load": (0.5, 0.5),
        "training": {
            "teacher, eager": timing(0.8),
            "teacher, compiled": timing(0.4),
            "student + online teacher, eager": timing(0.5),
        },
    }
    # The figures as the GPU check saves them (`--json`).
    figures = tmp_path / "gpu.json"
    settings = GpuCheckSettings(train_batch_size=16, steps_per_repeat=5)
    figures.write_text(json.dumps(results_to_json(results, settings, "python -m benchmarks.gpu_check")))
    flops = dict(teacher_train_used=4.8e11, student_train_used=1.37e11, teacher_forward=1.6e11)
    lines = rehearsal.measured_on_gpu(flops, {"teacher": 30, "student": 30}, figures)
    assert lines[0].startswith("**Measured on one GPU X (GPU check section, batch 16")
    assert "| teacher | 200 | 96 | 9.7% | 3.2 h / 24 min |" in lines
    # student + its online teacher: 160 images/s x 2.97e11 = 48 TFLOP/s
    assert "| student | 160 | 48 | 4.8% | 4.1 h / 30 min |" in lines
    assert rehearsal.measured_on_gpu(flops, {}, tmp_path / "absent.json") == []


def test_training_flops_count_both_models_and_use_three_forwards_for_the_teacher():
    from benchmarks import rehearsal

    flops = rehearsal.training_flops(224)
    # ConvNeXtV2-B at 224: ~15.4 GMACs a forward (its published figure), counted as 2 FLOPs per MAC.
    assert 29e9 < flops["teacher_forward"] < 33e9
    assert flops["teacher_train_used"] == 3 * flops["teacher_forward"]
    # The ViT's backward is counted exactly: about twice its forward.
    assert 2.5 < flops["student_train"] / flops["student_forward"] < 3.5
    assert flops["student_train_used"] == flops["student_train"]
