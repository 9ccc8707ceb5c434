# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""The README's real NIH path, rehearsed end to end at the paper's shapes on an NIH-shaped folder.

Every stage is the installed command a user types (`python -m clarity_hf <command>`, `torchrun -m clarity_hf train`),
run as a subprocess of this Python with no path of a source tree, with only schedule overrides (steps, batch, workers, subset sizes); each prints its wall time, its figure
and the peak memory of its largest process, and a failure names the stage and shows the end of its log:

    make-nih-rehearsal -> prepare (512) -> train-teacher teacher_512.yaml -> teacher logits cache (only where the
    recipe uses it) -> torchrun x2 train clarity_s16_512.yaml --init_from_dino <official DINO .pth layout, random
    weights> -> evaluate (test split, tune/eval box halves, CLARiTy + teacher Grad-CAM/CAM) -> push --dry-run ->
    fresh-process reload (AutoModel / AutoImageProcessor, trust_remote_code) -> predict on a DICOM (overlay)

    clarity rehearse --output-dir /tmp/rehearsal --metadata-dir ../shared/nih --dicom xray.dcm
    clarity rehearse --output-dir /tmp/rehearsal --metadata-dir ../shared/nih --dicom xray.dcm --num-images 48 \\
        --steps 2                                                                              # a smoke run

`stages.json` in the output folder holds the table (benchmarks/rehearsal.py turns it into BENCHMARKS.md rows).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from PIL import Image

from ..hub.reload_check import fresh_process_env, reload_command
from .arguments import parse_into_dataclass

logger = logging.getLogger(__name__)

TEACHER_CONFIG = "teacher_512.yaml"
STUDENT_CONFIG = "clarity_s16_512.yaml"
DINO_EMBED, DINO_DEPTH, DINO_HEADS, DINO_PATCH = 384, 12, 6, 16  # DINO ViT-S/16


@dataclass
class RehearsalConfig:
    """Sizes of one rehearsal; everything else comes from the shipped paper configs."""

    output_dir: str = field(metadata={"help": "where the folder, cache, runs, report and export go"})
    num_images: int = 64
    steps: int = 2
    train_batch_size: int = 2  # per process; the configs' 16 do not fit a shared 2-core machine
    gradient_accumulation_steps: int = 2
    eval_samples: int = 32  # validation images per training stage
    eval_batch_size: int = 32  # evaluate.py's default, the configs' per_device_eval_batch_size
    num_workers: int = 2
    num_processes: int = 2  # the student stage's torchrun processes (gloo on CPU)
    n_bootstrap: int = 200
    metadata_dir: str = field(
        default="",
        metadata={
            "required": True,
            "help": "Data_Entry_2017_v2020.csv(.gz) and BBox_List_2017.csv(.gz) of NIH",
        },
    )
    dicom: str = field(
        default="", metadata={"required": True, "help": "a chest X-ray DICOM for the last stage"}
    )
    seed: int = 0


@dataclass
class Stage:
    name: str
    seconds: float = 0.0
    images: int = 0
    optimizer_steps: int = 0
    peak_rss_mb: float = 0.0
    figure: str = ""
    command: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @property
    def images_per_second(self) -> float | None:
        return self.images / self.seconds if self.images and self.seconds else None

    @property
    def seconds_per_step(self) -> float | None:
        return self.seconds / self.optimizer_steps if self.optimizer_steps else None


class StageError(RuntimeError):
    """A stage failed: the message names it and ends with its log's last lines."""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def run_stage(stage: Stage, command: list[str], log_dir: Path, env: dict | None = None) -> Stage:
    """Run `command`, logging to `log_dir/<stage>.log`; fills wall time and the peak RSS of its largest process."""
    stage.command = [str(c) for c in command]
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{stage.name}.log"
    logger.info("%s: %s", stage.name, " ".join(stage.command))
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as handle:
        process = subprocess.Popen(stage.command, stdout=handle, stderr=subprocess.STDOUT, env=env or _env())
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    stage.seconds = time.perf_counter() - start
    stage.peak_rss_mb = usage.ru_maxrss / 1024  # kB on Linux; the largest of the process and its children
    if process.returncode != 0:
        tail = "".join(log.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)[-40:])
        raise StageError(f"stage {stage.name!r} failed (exit {process.returncode}); end of {log}:\n{tail}")
    return stage


def _last_json(log: Path) -> dict:
    """The last JSON object a script printed (one line or an indented block at the end of its log)."""
    text = log.read_text(encoding="utf-8", errors="replace")
    start = text.rfind("\n{")
    for candidate in (
        text[start + 1 :] if start >= 0 else "",
        text.strip().splitlines()[-1] if text.strip() else "",
    ):
        try:
            return json.loads(candidate)
        except json.JSONDecodeError:
            continue
    return {}


def write_random_dino_checkpoint(path: Path, seed: int = 0) -> Path:
    """A ViT-S/16 state dict under the official DINO names (`dino_deitsmall16_pretrain.pth`: `cls_token`,
    `pos_embed` (1, 197, 384), `patch_embed.proj`, `blocks.N.attn.qkv`, ..., `norm`), random weights."""
    generator = torch.Generator().manual_seed(seed)
    dim, hidden = DINO_EMBED, 4 * DINO_EMBED

    def randn(*shape):
        return torch.randn(*shape, generator=generator) * 0.02

    state = {
        "cls_token": randn(1, 1, dim),
        "pos_embed": randn(1, 1 + (224 // DINO_PATCH) ** 2, dim),
        "patch_embed.proj.weight": randn(dim, 3, DINO_PATCH, DINO_PATCH),
        "patch_embed.proj.bias": torch.zeros(dim),
        "norm.weight": torch.ones(dim),
        "norm.bias": torch.zeros(dim),
    }
    for i in range(DINO_DEPTH):
        block = f"blocks.{i}."
        state.update(
            {
                block + "norm1.weight": torch.ones(dim),
                block + "norm1.bias": torch.zeros(dim),
                block + "attn.qkv.weight": randn(3 * dim, dim),
                block + "attn.qkv.bias": torch.zeros(3 * dim),
                block + "attn.proj.weight": randn(dim, dim),
                block + "attn.proj.bias": torch.zeros(dim),
                block + "norm2.weight": torch.ones(dim),
                block + "norm2.bias": torch.zeros(dim),
                block + "mlp.fc1.weight": randn(hidden, dim),
                block + "mlp.fc1.bias": torch.zeros(hidden),
                block + "mlp.fc2.weight": randn(dim, hidden),
                block + "mlp.fc2.bias": torch.zeros(dim),
            }
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


# Reference outputs of the exported model, computed where clarity_hf is importable (the exporting side), for the
# fresh-process check of `hub.reload_check`.
REFERENCE_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    import clarity_hf  # noqa: F401  (registers the auto classes, as in the exporting environment)
    from transformers import AutoImageProcessor, AutoModel
    folder, image, out = sys.argv[1:4]
    model = AutoModel.from_pretrained(folder).eval()
    processor = AutoImageProcessor.from_pretrained(folder)
    inputs = processor(image, return_tensors="pt")
    with torch.no_grad():
        output = model(**inputs)
    torch.save({"pixel_values": inputs["pixel_values"], "logits": output.logits, "heatmaps": output.heatmaps}, out)
    """
)


def _torchrun() -> list[str]:
    found = shutil.which("torchrun")
    return [found] if found else [sys.executable, "-m", "torch.distributed.run"]


def _train_log_figures(run_dir: Path) -> dict:
    """images/s of the last logged window and the best validation AUROC, from the run's metrics.jsonl."""
    figures = {}
    for path in sorted(run_dir.rglob("metrics.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "train/images_per_second" in row:
                figures["train_images_per_second"] = row["train/images_per_second"]
            if "eval/mean_auroc" in row:
                figures["validation_mean_auroc"] = row["eval/mean_auroc"]
    return figures


def rehearse(config: RehearsalConfig) -> list[Stage]:
    """Run every stage in order; returns the stage table (also written to `output_dir/stages.json`).
    Raises `StageError` naming the first stage that failed."""
    out = Path(config.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    py = sys.executable
    clarity = [py, "-m", "clarity_hf"]
    folder, cache = out / "nih", out / "nih-512"
    teacher_dir, student_dir = out / "runs" / "teacher", out / "runs" / "clarity"
    report_dir, hub_dir = out / "report", out / "hub_export"
    stages: list[Stage] = []
    schedule = [
        "--max_steps", str(config.steps),
        "--per_device_train_batch_size", str(config.train_batch_size),
        "--gradient_accumulation_steps", str(config.gradient_accumulation_steps),
        "--max_eval_samples", str(config.eval_samples),
        "--dataloader_num_workers", str(config.num_workers),
        "--checkpointing_steps", str(config.steps),
        "--logging_steps", "1",
        "--warmup_epochs", "0",
        "--disable_tqdm", "true",
    ]  # fmt: skip

    def finish(stage: Stage) -> None:
        stages.append(stage)
        rate = f"{stage.images_per_second:.3f} images/s" if stage.images_per_second else "-"
        step = f", {stage.seconds_per_step:.1f} s/optimizer step" if stage.seconds_per_step else ""
        logger.info(
            "%s: %.1f s, %s%s, peak %.0f MB; %s",
            stage.name,
            stage.seconds,
            rate,
            step,
            stage.peak_rss_mb,
            stage.figure,
        )
        (out / "stages.json").write_text(json.dumps(_table(config, stages), indent=2))

    # 1. the NIH-shaped folder
    stage = run_stage(
        Stage("make_folder"),
        [*clarity, "make-nih-rehearsal", folder, "--num-images", config.num_images,
         "--metadata-dir", config.metadata_dir, "--seed", config.seed],
        logs,
    )  # fmt: skip
    made = _last_json(logs / "make_folder.log")
    stage.images, stage.extra = made.get("rendered", 0), made
    stage.figure = (
        f"{made.get('images')} images ({made.get('test_images')} test), {made.get('boxed_images')} boxed with "
        f"{made.get('boxes')} real boxes, {made.get('rgba_images')} RGBA; {made.get('ms_per_image_per_process')} "
        "ms/image per process"
    )
    finish(stage)

    # 2. the 512 cache (README: prepare_chestxray14.py ROOT OUT --image-size ... --num-proc ...)
    stage = run_stage(
        Stage("prepare_512"),
        [*clarity, "prepare", folder, cache, "--image-size", "512",
         "--num-proc", config.num_workers],
        logs,
    )  # fmt: skip
    prepared = _last_json(logs / "prepare_512.log")
    stage.images = sum(prepared.get("rows", {}).values())
    disk = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
    stage.extra = {**prepared, "cache_bytes": disk}
    stage.figure = (
        f"rows {prepared.get('rows')}, skipped {prepared.get('skipped')}, {disk / 1e6:.1f} MB on disk"
    )
    finish(stage)

    images_per_step = config.train_batch_size * config.gradient_accumulation_steps

    # 3. stage 1: the ConvNeXtV2-B teacher at 512, bf16, the shipped config
    stage = run_stage(
        Stage("train_teacher"),
        [*clarity, "train-teacher", "--config", TEACHER_CONFIG, "--dataset", cache,
         "--output_dir", teacher_dir, *schedule],
        logs,
    )  # fmt: skip
    stage.optimizer_steps, stage.images = config.steps, config.steps * images_per_step
    stage.extra = {**_last_json(logs / "train_teacher.log"), **_train_log_figures(teacher_dir)}
    stage.figure = (
        f"validation mean AUROC {stage.extra.get('best_mean_auroc')}; in-loop "
        f"{stage.extra.get('train_images_per_second', float('nan')):.3f} images/s"
    )
    finish(stage)

    # 4. teacher logits cache: the recipe augments (augment: true), so the teacher sees each augmented batch online
    # and cached logits (computed on un-augmented images) would not describe what the student sees.
    stages.append(
        Stage("teacher_logits_cache", figure="not used: the 512 recipe augments, the teacher runs online")
    )
    logger.info("teacher_logits_cache: skipped (%s)", stages[-1].figure)

    # 5. stage 2: CLARiTy-S-16-512 from a DINO .pth, distilled from the teacher, 2 processes, bf16
    dino = write_random_dino_checkpoint(out / "dino_deitsmall16_pretrain.pth", seed=config.seed)
    stage = run_stage(
        Stage("train_student"),
        [*_torchrun(), "--nproc_per_node", config.num_processes, "-m", "clarity_hf", "train",
         "--config", STUDENT_CONFIG, "--dataset", cache, "--output_dir", student_dir,
         "--teacher_name_or_path", teacher_dir / "best_model", "--init_from_dino", dino, *schedule],
        logs,
    )  # fmt: skip
    stage.optimizer_steps = config.steps
    stage.images = config.steps * images_per_step * config.num_processes
    stage.extra = {**_last_json(logs / "train_student.log"), **_train_log_figures(student_dir)}
    stage.figure = (
        f"{config.num_processes} processes; validation mean AUROC {stage.extra.get('best_mean_auroc')}; in-loop "
        f"{stage.extra.get('train_images_per_second', float('nan')):.3f} images/s"
    )
    finish(stage)

    # 6. evaluation on the test split: AUROC with CIs, localization tuned on "tune", reported on "eval"
    stage = run_stage(
        Stage("evaluate"),
        [*clarity, "evaluate", "--model", f"clarity={student_dir / 'best_model'}",
         "--model", f"teacher={teacher_dir / 'best_model'}", "--dataset", cache, "--split", "test",
         "--batch-size", config.eval_batch_size, "--n-bootstrap", config.n_bootstrap, "--output-dir", report_dir],
        logs,
    )  # fmt: skip
    stage.images = prepared.get("rows", {}).get("test", 0)
    report = (
        json.loads((report_dir / "report.json").read_text()) if (report_dir / "report.json").is_file() else {}
    )
    stage.extra = {
        "report": str(report_dir / "report.md"),
        "models": sorted(report.get("models", report))[:8],
    }
    stage.figure = (
        f"{stage.images} test images x (CLARiTy, teacher Grad-CAM + CAM); report {report_dir / 'report.md'}"
    )
    finish(stage)

    # 7. the Hub folder
    stage = run_stage(
        Stage("push_to_hub_dry_run"),
        [*clarity, "push", "--model", student_dir / "best_model", "--results",
         report_dir / "report.json", "--repo-id", "rehearsal/clarity-s-16-512-nih-rehearsal", "--dry-run",
         "--out", hub_dir],
        logs,
    )  # fmt: skip
    files = [p for p in hub_dir.rglob("*") if p.is_file()]
    stage.figure = f"{len(files)} files, {sum(p.stat().st_size for p in files) / 1e6:.1f} MB in {hub_dir}"
    finish(stage)

    # 8. a fresh process reloads the Hub folder (no clarity_hf) with bit-identical logits and heatmaps
    reference = out / "reload_reference.pt"
    pngs = sorted(folder.glob("images_0*/images/*.png"))
    image = next(
        (p for p in pngs if Image.open(p).mode == "RGBA"), pngs[0]
    )  # the RGBA path, where there is one
    stage = run_stage(
        Stage("reload_reference"),
        [py, "-c", REFERENCE_SCRIPT, student_dir / "best_model", image, reference],
        logs,
    )
    stage.images, stage.figure = (
        1,
        f"outputs of {student_dir / 'best_model'} on {image.name} (with clarity_hf)",
    )
    finish(stage)
    stage = run_stage(
        Stage("fresh_reload"),
        reload_command(hub_dir, reference, image=image),
        logs,
        env=fresh_process_env(out / ".hf_modules", base=_env()),
    )
    stage.images, stage.extra = 1, _last_json(logs / "fresh_reload.log")
    stage.figure = (
        f"logits identical {stage.extra.get('logits_identical')}, heatmaps identical "
        f"{stage.extra.get('heatmaps_identical')} {stage.extra.get('heatmaps_shape')}"
    )
    finish(stage)

    # 9. clarity-predict on a real DICOM, writing an overlay
    overlay = out / "dicom_overlay.png"
    stage = run_stage(
        Stage("predict_dicom"),
        [py, "-m", "clarity_hf", "predict", config.dicom, "--model", hub_dir, "--output", overlay],
        logs,
    )  # fmt: skip
    stage.images, stage.extra = 1, _last_json(logs / "predict_dicom.log")
    stage.figure = f"overlay {overlay} ({overlay.stat().st_size if overlay.is_file() else 0} bytes)"
    if not overlay.is_file():
        raise StageError(f"stage 'predict_dicom' wrote no overlay at {overlay}")
    finish(stage)
    return stages


def _table(config: RehearsalConfig, stages: list[Stage]) -> dict:
    rows = []
    for stage in stages:
        row = asdict(stage)
        row.update(images_per_second=stage.images_per_second, seconds_per_step=stage.seconds_per_step)
        rows.append(row)
    return {
        "config": asdict(config),
        "total_seconds": sum(s.seconds for s in stages),
        "load_average": os.getloadavg(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "stages": rows,
    }


def format_stage_table(stages: list[Stage]) -> str:
    """A Markdown table: stage, seconds, images/s, s/optimizer step, peak RSS, figure."""
    lines = [
        "| stage | wall s | images/s | s/optimizer step | peak RSS of the largest process (MB) | figure |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for s in stages:
        ips = f"{s.images_per_second:.3f}" if s.images_per_second else "-"
        sps = f"{s.seconds_per_step:.1f}" if s.seconds_per_step else "-"
        peak = f"{s.peak_rss_mb:.0f}" if s.peak_rss_mb else "-"
        lines.append(f"| {s.name} | {s.seconds:.1f} | {ips} | {sps} | {peak} | {s.figure} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    """`clarity rehearse --output-dir DIR --metadata-dir NIH_CSVS --dicom FILE [sizes]`."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(
        RehearsalConfig,
        prog="clarity rehearse",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    config = parse_into_dataclass(parser, argv)
    try:
        stages = rehearse(config)
    except StageError as error:
        print(f"[rehearsal] FAILED: {error}", file=sys.stderr)
        return 1
    print(format_stage_table(stages))
    print(f"[rehearsal] total {sum(s.seconds for s in stages):.1f} s")
    return 0
