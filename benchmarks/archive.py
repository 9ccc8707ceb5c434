# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Archive inference benchmark: writes the `archive` section of BENCHMARKS.md.

    python -m benchmarks.archive [--num-images 96] [--loop-images 24] [--repeats 3] [--write BENCHMARKS.md]

In one run, with the clarity-s-16-512 preset and random weights (timings do not depend on them):
- images/s of `clarity-predict PATH --output-dir` (DataLoader workers, batches, fast post-processing, table writing)
  on a folder of 1024 x 1024 images, rendered synthetic PNGs mixed with copies of the real DICOM fixture, against a
  plain per-image loop (processor, model, exact post-processing) over the first `--loop-images` of the same files;
- the end-to-end cost of one image at batch 1 (decode -> forward -> 14 scores + boxes at the original size) as a
  ratio to the forward alone, with the fast and with the exact post-processing;
- onnxruntime against PyTorch for the forward (batch 1 and batch 8), when the onnx extra is installed.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from clarity_hf import ClarityConfig, ClarityForMultiLabelLocalization
from clarity_hf.data.synthetic import render_synthetic_cxr
from clarity_hf.evaluation.run import build_processor
from clarity_hf.inference import ArchiveOptions, run_archive

from .measure import load_average, time_interleaved

REPO_ROOT = Path(__file__).resolve().parents[1]

DICOM = REPO_ROOT / "tests" / "fixtures" / "siim_pneumothorax_example.dcm"
BEGIN, END = "<!-- BEGIN archive -->", "<!-- END archive -->"


def make_folder(folder: Path, count: int) -> list[Path]:
    """`count` 1024 x 1024 images: 4 in 5 rendered synthetic PNGs, 1 in 5 copies of the real DICOM (every other
    one without extension), in nested folders."""
    paths = []
    for index in range(count):
        sub = folder / f"series{index % 7}"
        sub.mkdir(parents=True, exist_ok=True)
        if index % 5 == 4:
            path = sub / (f"IM{index:04d}" + (".dcm" if index % 10 == 4 else ""))
            shutil.copyfile(DICOM, path)
        else:
            path = sub / f"cxr{index:04d}.png"
            image = render_synthetic_cxr(0, "test", index, image_size=256).image
            Image.fromarray(image).resize((1024, 1024), Image.BICUBIC).save(path)
        paths.append(path)
    return paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--num-images", type=int, default=96)
    parser.add_argument("--loop-images", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write", default=None, help="BENCHMARKS.md to update (its archive section only)")
    args = parser.parse_args(argv)
    load_start = load_average()
    torch.manual_seed(0)
    model = ClarityForMultiLabelLocalization(ClarityConfig.from_preset("clarity-s-16-512")).eval()
    processor = build_processor(512)
    work = Path(tempfile.mkdtemp(prefix="clarity_archive_bench_"))
    cpu = torch.device("cpu")
    rows = {}
    try:
        paths = make_folder(work / "archive", args.num_images)

        # 1. clarity-predict over the folder (a fresh output folder each round) against a plain per-image loop over
        # its first files: processor, model, exact post-processing.
        def archive_run() -> None:
            output_dir = work / "out"
            shutil.rmtree(output_dir, ignore_errors=True)
            options = ArchiveOptions(
                output_dir=output_dir,
                batch_size=args.batch_size,
                num_workers=args.num_workers,
                progress=False,
            )
            summary = run_archive([work / "archive"], model, processor, options)
            assert summary.images == args.num_images and summary.failed == 0, summary

        def one_image(path: Path, box_resolution: int | None) -> None:
            inputs = processor(str(path), return_tensors="pt", return_original_sizes=True)
            sizes = inputs.pop("original_sizes")
            with torch.no_grad():
                result = model(pixel_values=inputs["pixel_values"])
            torch.sigmoid(result.logits)
            processor.post_process_object_detection(
                result, threshold=0.5, target_sizes=sizes, box_resolution=box_resolution
            )

        loop_paths = sorted(paths, key=str)[: args.loop_images]

        def loop_run() -> None:
            for path in loop_paths:
                one_image(path, None)

        throughput = time_interleaved({"archive": archive_run, "loop": loop_run}, cpu, args.repeats)
        rows["throughput"] = (throughput["archive"], throughput["loop"])

        # 2. one image end to end at batch 1 against the forward alone (the real 1024 x 1024 DICOM)
        pixel_values = processor(str(DICOM), return_tensors="pt")["pixel_values"]

        def forward():
            with torch.no_grad():
                return model(pixel_values=pixel_values)

        out = forward()

        def post(box_resolution):
            return lambda: processor.post_process_object_detection(
                out, threshold=0.5, target_sizes=[(1024, 1024)], box_resolution=box_resolution
            )

        cases = {
            "forward": forward,
            "fast": lambda: one_image(DICOM, 512),
            "exact": lambda: one_image(DICOM, None),
            "decode": lambda: processor(str(DICOM), return_tensors="pt"),
            "post_fast": post(512),
            "post_exact": post(None),
        }
        rows["batch1"] = time_interleaved(cases, cpu, args.repeats)
        probabilities = torch.sigmoid(out.logits)[0]
        rows["classes_boxed"] = int((probabilities >= 0.5).sum())

        # 3. ONNX against PyTorch
        try:
            from clarity_hf.inference.onnx import export_onnx, onnx_session, run_onnx

            onnx_path = export_onnx(model, work / "clarity.onnx")
            session = onnx_session(onnx_path)
            onnx_rows = []
            for batch in (1, args.batch_size):
                x = pixel_values.repeat(batch, 1, 1, 1)

                def torch_forward(x=x):
                    with torch.no_grad():
                        return model(pixel_values=x)

                timings = time_interleaved(
                    {"torch": torch_forward, "onnx": lambda x=x: run_onnx(session, x.numpy())},
                    cpu,
                    args.repeats,
                )
                got, ref = run_onnx(session, x.numpy()), torch_forward()
                diff = max(
                    float(np.abs(got["logits"] - ref.logits.numpy()).max()),
                    float(np.abs(got["heatmaps"] - ref.heatmaps.numpy()).max()),
                )
                onnx_rows.append((batch, timings["torch"], timings["onnx"], diff))
            rows["onnx"] = onnx_rows
        except ImportError as err:
            rows["onnx"] = str(err)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_end = load_average()
    section = render(rows, args, load_start, load_end)
    print(section)
    if args.write:
        write_section(Path(args.write), section)
    return 0


def render(rows, args, load_start, load_end) -> str:
    """The section; every timed row is median (range) [load start/end] of `args.repeats` interleaved rounds after a
    warm-up, `noisy` where `Timing` says so; ratios are of medians."""
    archive, loop = rows["throughput"]
    archive_rate, loop_rate = args.num_images / archive.median, args.loop_images / loop.median
    b = rows["batch1"]
    ms = {name: timing.median * 1e3 for name, timing in b.items()}
    lines = [
        BEGIN,
        "## Archive inference (`clarity-predict PATH --output-dir`, `benchmarks/archive.py`)",
        "",
        f"clarity-s-16-512, random weights, float32, CPU ({torch.get_num_threads()} torch threads); "
        f"1-min load average {load_start:.1f} at the start and {load_end:.1f} at the end ("
        + (
            "no other job ran"
            if max(load_start, load_end) < torch.get_num_threads() + 1
            else "the machine was shared with other jobs: absolute times are inflated, the ratios were measured "
            "side by side in one run"
        )
        + f"). Command: `python -m benchmarks.archive --num-images {args.num_images} --loop-images "
        f"{args.loop_images} --repeats {args.repeats}`. Every timed row: median (slowest-fastest) [1-min load at "
        f"the start/end of its rounds] of {args.repeats} rounds after a warm-up, the rows of one table interleaved "
        "round by round; `noisy` when the range exceeds 25% of the median or the load exceeded the core count.",
        "",
        f"### Throughput on a folder of {args.num_images} images (1024 x 1024: 4/5 rendered synthetic PNGs, 1/5 "
        "copies of the real DICOM fixture, some without extension)",
        "",
        "| | images/s | ratio |",
        "|---|---:|---:|",
        f"| `clarity-predict` (batch {args.batch_size}, {args.num_workers} decoding workers, 14 scores + boxes at "
        f"the original size, table written) | {archive.rate_cell(args.num_images, 2)} | "
        f"{archive_rate / loop_rate:.2f}x |",
        f"| plain per-image loop: processor -> model -> exact post-processing (first {args.loop_images} files) | "
        f"{loop.rate_cell(args.loop_images, 2)} | 1.00x |",
        "",
        "### One image end to end, batch 1 (the real 1024 x 1024 DICOM)",
        "",
        f"Decode -> forward at 512 -> 14 scores + boxes of the {rows['classes_boxed']} classes scoring >= 0.5 at "
        "the original size.",
        "",
        "| | ms | ratio to the forward |",
        "|---|---:|---:|",
        f"| forward alone (512, batch 1) | {b['forward'].cell()} | 1.00x |",
        f"| end to end, fast post-processing (default, `box_resolution=512`) | {b['fast'].cell()} | "
        f"{ms['fast'] / ms['forward']:.2f}x |",
        f"| end to end, exact post-processing (`box_resolution=None`) | {b['exact'].cell()} | "
        f"{ms['exact'] / ms['forward']:.2f}x |",
        f"| decode + preprocess alone | {b['decode'].cell()} | {ms['decode'] / ms['forward']:.2f}x |",
        f"| boxes alone, fast | {b['post_fast'].cell()} | {ms['post_fast'] / ms['forward']:.2f}x |",
        f"| boxes alone, exact | {b['post_exact'].cell()} | {ms['post_exact'] / ms['forward']:.2f}x |",
        "",
        f"Reading these numbers: one image costs the forward plus {ms['fast'] / ms['forward'] - 1:+.2f}x of it with "
        f"the fast boxes ({ms['exact'] / ms['forward'] - 1:+.2f}x with the exact ones); the fast boxes are "
        f"{ms['post_exact'] / ms['post_fast']:.1f}x cheaper than the exact ones; `clarity-predict` answers "
        f"{archive_rate / loop_rate:.1f} times as many images per second as the per-image loop.",
        "",
    ]
    if isinstance(rows["onnx"], str):
        lines += [f"ONNX: not measured ({rows['onnx']}).", ""]
    else:
        lines += [
            "### ONNX (onnxruntime, CPU) vs PyTorch, forward only",
            "",
            "| batch | PyTorch ms | onnxruntime ms | onnxruntime speed-up | max abs difference |",
            "|---|---:|---:|---:|---:|",
        ]
        for batch, torch_timing, onnx_timing, diff in rows["onnx"]:
            lines.append(
                f"| {batch} | {torch_timing.cell()} | {onnx_timing.cell()} | "
                f"{torch_timing.median / onnx_timing.median:.2f}x | {diff:.1e} |"
            )
        lines.append("")
    lines.append(END)
    return "\n".join(lines)


def write_section(path: Path, section: str) -> None:
    text = path.read_text() if path.exists() else ""
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
