# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Peak memory at the pixel limit (README's figure): one 8192 x 8192 16-bit PNG and one 8000 x 8000 RGB JPEG
decoded through `clarity_hf.xray_io` and through the image processor, and `clarity-predict` with its default
workers over a folder of such images.

    python -m benchmarks.pixel_limit_memory [--images 16] [--workdir DIR]

Each decode runs in a fresh process and reports its peak resident memory (`ru_maxrss`) and its increment over the
same process before the call (Python, numpy, torch and clarity_hf imported). `clarity-predict` is sampled every
20 ms as a process tree (psutil): the peak of the summed proportional set size (PSS: pages a forked worker shares
with the main process counted once, the machine's real use) and of the summed RSS (shared pages counted in every
process, an upper bound), and each process's own RSS peak. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]

DECODE = r"""
import json, resource, sys
import numpy as np
from clarity_hf import ClarityImageProcessor
from clarity_hf.xray_io import load_unit_gray
path, how = sys.argv[1], sys.argv[2]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if how == "xray_io":
    out = load_unit_gray(path)
else:
    out = ClarityImageProcessor(size=512)(path, return_tensors="np")["pixel_values"]
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_mb": round(peak / 1024), "increment_mb": round((peak - before) / 1024),
                  "dtype": str(out.dtype), "shape": list(out.shape)}))
"""


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["HF_HUB_OFFLINE"] = "1"
    return env


def make_images(folder: Path) -> tuple[Path, Path]:
    """A smooth 8192^2 16-bit PNG (12 bits used, like a detector) and an 8000^2 RGB JPEG."""
    folder.mkdir(parents=True, exist_ok=True)
    png, jpeg = folder / "limit16.png", folder / "limit_rgb.jpg"
    if not png.exists():
        ramp = np.linspace(0, 4095, 8192, dtype=np.float32)
        array = (ramp[None, :] * np.linspace(0.3, 1.0, 8192, dtype=np.float32)[:, None]).astype(np.uint16)
        Image.fromarray(array).save(png, compress_level=1)
    if not jpeg.exists():
        ramp = np.linspace(0, 255, 8000, dtype=np.float32).astype(np.uint8)
        rgb = np.stack(
            [
                np.broadcast_to(ramp[None, :], (8000, 8000)),
                np.broadcast_to(ramp[:, None], (8000, 8000)),
                np.full((8000, 8000), 90, np.uint8),
            ],
            axis=-1,
        )
        Image.fromarray(rgb, "RGB").save(jpeg, quality=90)
    return png, jpeg


def decode_peak(path: Path, how: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", DECODE, str(path), how], env=_env(), capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def predict_peak(image: Path, count: int, workdir: Path) -> dict:
    """clarity-predict with its default batch size and workers over `count` links to `image` (a run that keeps
    both workers decoding at once), sampled as a process tree."""
    import psutil

    from clarity_hf import ClarityConfig, ClarityForMultiLabelLocalization, ClarityImageProcessor

    model_dir = workdir / "model"
    if not model_dir.exists():
        ClarityForMultiLabelLocalization(ClarityConfig.from_preset("clarity-tiny")).save_pretrained(model_dir)
        ClarityImageProcessor(size=ClarityConfig.from_preset("clarity-tiny").image_size).save_pretrained(
            model_dir
        )
    tree = workdir / f"tree-{image.stem}"
    tree.mkdir(exist_ok=True)
    for index in range(count):
        link = tree / f"{index:03d}{image.suffix}"
        if not link.exists():
            link.symlink_to(image)
    out = workdir / f"out-{image.stem}"
    command = [
        sys.executable,
        "-m",
        "clarity_hf",
        "predict",
        str(tree),
        "--model",
        str(model_dir),
        "--output-dir",
        str(out),
        "--overwrite",
        "--no-progress",
    ]
    process = psutil.Popen(command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak_total, peak_pss, peaks = 0, 0, {}
    while process.poll() is None:
        try:
            members = [process, *process.children(recursive=True)]
            total = pss = 0
            for member in members:
                info = member.memory_full_info()
                total += info.rss
                pss += info.pss
                peaks[member.pid] = max(peaks.get(member.pid, 0), info.rss)
            peak_total, peak_pss = max(peak_total, total), max(peak_pss, pss)
        except psutil.Error:
            pass
        time.sleep(0.02)
    stdout, stderr = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(stderr.decode()[-2000:])
    summary = json.loads(stdout)
    main_peak = peaks.pop(process.pid, 0)
    return {
        "images": summary["images"],
        "failed": summary["failed"],
        "peak_total_pss_mb": round(peak_pss / 2**20),
        "peak_total_rss_mb": round(peak_total / 2**20),
        "main_process_peak_mb": round(main_peak / 2**20),
        "worker_peaks_mb": sorted((round(v / 2**20) for v in peaks.values()), reverse=True),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=16, help="images for clarity-predict (16: two batches)")
    parser.add_argument(
        "--workdir", default=None, help="where the images are kept (default: a temporary folder)"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as temporary:
        workdir = Path(args.workdir or temporary)
        png, jpeg = make_images(workdir / "images")
        report = {
            "png_16bit_8192": {how: decode_peak(png, how) for how in ("xray_io", "processor")},
            "jpeg_rgb_8000": {how: decode_peak(jpeg, how) for how in ("xray_io", "processor")},
            "clarity_predict_png_16bit_8192": predict_peak(png, args.images, workdir),
            "clarity_predict_jpeg_rgb_8000": predict_peak(jpeg, args.images, workdir),
        }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
