# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""`python -m benchmarks.run --quick` runs end to end and writes the Markdown page with every section and row, and
the page writer replaces only its own sections. No timing assertions: the figures depend on the machine."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.measure import CLARITY_SMOKE, PlainViT, count_forward_flops, measure_memory_case
from benchmarks.report import write_sections

ROOT = Path(__file__).resolve().parents[1]


def test_quick_benchmark_writes_report(tmp_path):
    report, raw = tmp_path / "BENCH.md", tmp_path / "bench.json"
    report.write_text(
        "# CLARiTy benchmarks\n\n<!-- BEGIN rehearsal -->\nkept as it is\n<!-- END rehearsal -->\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--quick",
            "--include-training",
            "--output",
            str(report),
            "--json",
            str(raw),
        ],
        check=True,
        env=env,
        cwd=ROOT,
        timeout=300,
        capture_output=True,
    )
    text = report.read_text()
    for heading in (
        "## Machine",
        "## CLARiTy (logits + 14 heatmaps) vs plain ViT-S/16",
        "## bf16 vs fp32",
        "## CLARiTy vs Grad-CAM on the ConvNeXtV2 teacher",
        "## Achieved FLOP rate",
        "## Peak memory of one forward pass",
        "## Training step and data loading",
    ):
        assert heading in text, heading
    assert "| torch | " + torch.__version__ in text
    assert "`python -m benchmarks.run --quick --include-training --output" in text
    assert "<!-- BEGIN rehearsal -->\nkept as it is\n<!-- END rehearsal -->" in text
    for mode in ("fp32", "bf16-autocast", "bf16"):
        for batch in (1, 2):
            assert f"| 64 | {batch} | {mode} |" in text
    for case in (
        "Grad-CAM 1 class, to activations",
        "Grad-CAM 14 classes, full backward",
        "teacher forward only",
    ):
        assert f"| 64 | {case} |" in text
    for case in ("plain ViT (sdpa)", "full attention in map layers (eager)", "output_attentions=True"):
        assert case in text
    # Every timed cell carries the load it was taken at (the pooled Grad-CAM reference too).
    assert "[load nan" not in text and text.count("[load ") > 20
    figures = json.loads(raw.read_text())
    assert len(figures["speed"]) == 6
    assert all(row["plain"]["median"] > 0 and row["clarity"]["median"] > 0 for row in figures["speed"])
    assert figures["matmul_gflops"]["fp32"] > 0 and len(figures["flops"]) == 3
    # --include-training: the training step and the data loading rows
    for mode in ("student alone", "student + online teacher", "student + cached teacher logits"):
        assert f"| {mode} | " in text
    assert "| original 256px PNG | " in text and "| cache 64px pgm | " in text
    assert [row["mode"] for row in figures["training"]][0] == "student alone"
    assert all(row["images_per_second"] > 0 for row in figures["training"] + figures["data_loading"])
    assert figures["data_loading"][0]["speedup"] == 1.0


def test_plain_vit_has_one_class_token_and_counts_fewer_flops():
    plain = PlainViT(64, CLARITY_SMOKE).eval()
    assert plain.model.clarity.embeddings.class_tokens.shape[1] == 1
    pixel_values = torch.randn(1, 3, 64, 64)
    assert plain(pixel_values).shape == (1, 14)
    flops = count_forward_flops(plain, pixel_values)
    # 4 blocks, 65 tokens, D=64, MLP 128: linear layers 2*65*(3*64*64 + 64*64 + 2*64*128) per block, plus SDPA
    # 4*65*65*64 per block, patch conv 2*64*(3*8*8*64) and the head.
    linear = 2 * 65 * (3 * 64 * 64 + 64 * 64 + 2 * 64 * 128)
    attention = 4 * 65 * 65 * 64
    expected = 4 * (linear + attention) + 2 * 64 * 3 * 64 * 64 + 2 * 64 * 14
    assert flops == expected


def test_memory_case_sees_the_full_attention():
    common = {
        "device": "cpu",
        "resolution": 128,
        "batch_size": 2,
        "model_overrides": CLARITY_SMOKE,
        "threads": None,
    }
    sdpa = measure_memory_case({**common, "model": "clarity", "maps": "sdpa"})["peak_bytes"]
    full = measure_memory_case({**common, "model": "clarity", "maps": "eager", "output_attentions": True})[
        "peak_bytes"
    ]
    eager = measure_memory_case({**common, "model": "clarity", "maps": "eager"})["peak_bytes"]
    # torch's allocator peak, not the resident set size: the same in every process, whatever malloc kept from the
    # cases before (the RSS growth of a second case in one process is often 0).
    assert sdpa == measure_memory_case({**common, "model": "clarity", "maps": "sdpa"})["peak_bytes"]
    # output_attentions keeps all 4 layers of (2, 4, 16 * 16 + 14, 270) float32 attention alive at once.
    assert full - sdpa >= 4 * (2 * 4 * 270 * 270) * 4
    # The eager map path holds one layer's full attention (and its scores) at a time: more than the class-row path,
    # less than keeping all of them.
    assert 2 * 4 * 270 * 270 * 4 <= eager - sdpa < full - sdpa


def test_write_sections_replaces_only_its_own(tmp_path):
    page = tmp_path / "BENCHMARKS.md"
    page.write_text(
        "# CLARiTy benchmarks\n\nintro\n\n<!-- BEGIN speed -->\nold speed\n<!-- END speed -->\n\n"
        "<!-- BEGIN other -->\n| other | table |\n<!-- END other -->\n\ntrailing note\n"
    )
    write_sections(page, {"speed": "new speed\n", "memory": "memory table"})
    assert page.read_text() == (
        "# CLARiTy benchmarks\n\nintro\n\n<!-- BEGIN speed -->\nnew speed\n<!-- END speed -->\n\n"
        "<!-- BEGIN other -->\n| other | table |\n<!-- END other -->\n\ntrailing note\n\n"
        "<!-- BEGIN memory -->\nmemory table\n<!-- END memory -->\n"
    )
    write_sections(page, {"memory": "memory again"})
    assert page.read_text().count("<!-- BEGIN memory -->") == 1 and "memory again" in page.read_text()
    page.write_text(page.read_text() + "<!-- BEGIN memory -->\nx\n<!-- END memory -->\n")
    with pytest.raises(ValueError, match="appears 2 times"):
        write_sections(page, {"memory": "y"})


def test_archive_section_reads_its_own_numbers():
    import argparse

    from benchmarks.archive import BEGIN, END, render
    from benchmarks.measure import Timing

    def timing(median, spread=0.0):
        return Timing([median * (1 - spread), median, median * (1 + spread)], (0.2, 0.4), cores=2)

    rows = {
        "throughput": (timing(200 / 0.6), timing(20 / 0.2, spread=0.2)),
        "batch1": {
            "forward": timing(1.0),
            "fast": timing(1.1),
            "exact": timing(1.5),
            "decode": timing(0.05),
            "post_fast": timing(0.08),
            "post_exact": timing(0.4),
        },
        "classes_boxed": 3,
        "onnx": "onnxruntime is not installed",
    }
    args = argparse.Namespace(num_images=200, loop_images=20, batch_size=8, num_workers=2, repeats=3)
    threads = torch.get_num_threads()
    idle = render(rows, args, 0.2, 0.4)
    assert idle.startswith(BEGIN) and idle.endswith(END)
    assert "no other job ran" in idle and "shared with other jobs" not in idle
    # Every timed row is median (slowest-fastest) [load]; a range over 25% of the median is marked noisy.
    assert (
        "| end to end, exact post-processing (`box_resolution=None`) | 1500.0 (1500.0-1500.0) [load 0.2/0.4] |"
        in idle
    )
    assert "| 0.60 (0.60-0.60) [load 0.2/0.4] | 3.00x |" in idle
    assert "| 0.20 (0.17-0.25) [load 0.2/0.4] noisy | 1.00x |" in idle
    assert "the forward plus +0.10x of it with the fast boxes (+0.50x with the exact ones)" in idle
    assert "5.0x cheaper than the exact ones" in idle and "3.0 times as many images per second" in idle
    assert "ONNX: not measured (onnxruntime is not installed)." in idle
    loaded = render(rows, args, threads + 5.0, threads + 6.0)
    assert "shared with other jobs" in loaded and "no other job ran" not in loaded
    rows["onnx"] = [(1, timing(0.3), timing(0.2), 1e-6)]
    assert (
        "| 1 | 300.0 (300.0-300.0) [load 0.2/0.4] | 200.0 (200.0-200.0) [load 0.2/0.4] | 1.50x | 1.0e-06 |"
        in (render(rows, args, 0.2, 0.4))
    )
