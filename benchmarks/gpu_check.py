# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""The GPU check: the figures the projection assumes, measured on one GPU at 512 in bf16, in at most ~8 minutes;
written as the `gpu-check` section of BENCHMARKS.md, beside the projection.

    python -m benchmarks.gpu_check                      # on a machine with a CUDA GPU
    python -m benchmarks.gpu_check --dry-run --output - # its logic on CPU with tiny models (figures meaningless)

Measured (every row: median of 3 timed repeats after a warm-up, range, load average; `benchmarks.measure`):

* training images/s of the teacher (ConvNeXtV2-B) and of the student (CLARiTy-S-16-512 with the frozen teacher's
  forward online, as the 512 recipe trains it), bf16 autocast, AdamW, batch 16 (the configs' per-device batch),
  eager and `torch.compile`;
* the device augmentation's share of a student step: `BatchAugmenter` on a batch of uint8 images on the GPU;
* loader images/s of one worker (1 thread) of this host, both augmentation paths (`benchmarks.loader`);
* inference images/s at batch 64 (the student's logits and 14 heatmaps, bf16 autocast);
* `python -m clarity_hf predict` end to end on a folder of PNGs (process start, model load, decode, forward,
  tables), images/s.

Phases run in that order; one that would start after the time budget is skipped and named in the section.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch

from clarity_hf.evaluation.tables import markdown_table

from .measure import MIN_REPEATS, Timing, load_average, time_interleaved
from .report import publish

REPO_ROOT = Path(__file__).resolve().parents[1]
PHASES = ("training", "augmentation", "loader", "inference", "predict")


@dataclass
class GpuCheckSettings:
    device: str = "cuda"
    image_size: int = 512
    student_preset: str = "clarity-s-16-512"
    teacher_preset: str = "convnextv2-base"
    train_batch_size: int = 16
    steps_per_repeat: int = 5
    inference_batch_size: int = 64
    inference_batches: int = 4
    predict_images: int = 128
    predict_workers: int = 2
    loader_images: int = 48
    compile_backend: str = "inductor"
    budget_seconds: float = 420.0
    phases: str = "training,augmentation,loader,inference,predict"
    dry_run: bool = False

    def __post_init__(self):
        unknown = set(self.selected_phases) - set(PHASES)
        if unknown:
            raise ValueError(f"--phases: unknown {sorted(unknown)}; choose from {', '.join(PHASES)}")

    @property
    def selected_phases(self) -> list[str]:
        return [name.strip() for name in self.phases.split(",") if name.strip()]

    @classmethod
    def dry(cls) -> GpuCheckSettings:
        """Every phase on CPU with tiny models; `torch.compile` through dynamo with the eager backend (no
        compiler toolchain needed)."""
        return cls(
            device="cpu",
            image_size=64,
            student_preset="clarity-tiny",
            teacher_preset="convnextv2-test",
            train_batch_size=2,
            steps_per_repeat=1,
            inference_batch_size=4,
            inference_batches=1,
            predict_images=4,
            loader_images=4,
            compile_backend="eager",
            budget_seconds=600.0,
            dry_run=True,
        )


def _autocast(device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16)


def _student(settings: GpuCheckSettings):
    from clarity_hf import ClarityConfig, ClarityForMultiLabelLocalization

    config = ClarityConfig.from_preset(settings.student_preset, image_size=settings.image_size)
    return ClarityForMultiLabelLocalization(config)


def _optimizer(model):
    from clarity_hf.training.optim import create_optimizer

    options = SimpleNamespace(
        weight_decay=0.05, layer_decay=None, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8
    )
    return create_optimizer(model, options, 5e-4)


def measure_training(settings: GpuCheckSettings, device: torch.device) -> dict[str, Timing]:
    """{"<stage>, <eager|compiled>": Timing of `steps_per_repeat` optimizer steps} for the teacher and the student
    with its online teacher; eager and compiled steps interleaved."""
    from clarity_hf.baselines import build_teacher
    from clarity_hf.training.models import freeze

    size, batch = settings.image_size, settings.train_batch_size
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(batch, 3, size, size, generator=generator).to(device)
    labels = (torch.rand(batch, 14, generator=generator) < 0.2).float().to(device)
    frozen = freeze(build_teacher(settings.teacher_preset, image_size=size)).to(device)
    cases = {}
    for compiled in (False, True):
        kind = "compiled" if compiled else "eager"
        torch.manual_seed(0)
        teacher = build_teacher(settings.teacher_preset, image_size=size).to(device).train()
        student = _student(settings).to(device).train()
        for stage, model in (("teacher", teacher), ("student + online teacher", student)):
            forward = torch.compile(model, backend=settings.compile_backend) if compiled else model
            optimizer = _optimizer(model)

            def steps(stage=stage, forward=forward, model=model, optimizer=optimizer):
                for _ in range(settings.steps_per_repeat):
                    with _autocast(device):
                        if stage == "teacher":
                            loss = forward(pixel_values=pixels, labels=labels).loss
                        else:
                            with torch.no_grad():
                                teacher_logits = frozen(pixel_values=pixels).logits.float()
                            loss = forward(
                                pixel_values=pixels, labels=labels, teacher_logits=teacher_logits
                            ).loss
                    loss.float().backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)

            cases[f"{stage}, {kind}"] = steps
    return time_interleaved(cases, device, MIN_REPEATS, warmup=1)


def measure_augmentation(settings: GpuCheckSettings, device: torch.device) -> Timing:
    """`BatchAugmenter` on one training batch of uint8 images on `device`, `steps_per_repeat` times a repeat."""
    from clarity_hf.data.device_augment import BatchAugmenter
    from clarity_hf.data.transforms import ClarityTransform

    size, batch = settings.image_size, settings.train_batch_size
    transform = ClarityTransform(size, train=True, seed=0)
    params = torch.stack(
        [transform.sample_params(size, size, transform.sample_rng(0, i)) for i in range(batch)]
    )
    source = torch.randint(0, 256, (batch, size, size), dtype=torch.uint8).to(device)
    sizes = torch.tensor([[size, size]] * batch)
    augmenter = BatchAugmenter.like(transform)

    def run():
        for _ in range(settings.steps_per_repeat):
            augmenter(source, sizes, params)

    return time_interleaved({"augment": run}, device, MIN_REPEATS)["augment"]


def measure_inference(settings: GpuCheckSettings, device: torch.device) -> Timing:
    """The student's forward (logits + heatmaps), bf16 autocast, `inference_batches` batches a repeat."""
    model = _student(settings).to(device).eval()
    size = settings.image_size
    pixels = torch.randn(settings.inference_batch_size, 3, size, size).to(device)

    def run():
        with torch.no_grad(), _autocast(device):
            for _ in range(settings.inference_batches):
                model(pixel_values=pixels)

    return time_interleaved({"inference": run}, device, MIN_REPEATS)["inference"]


def measure_loader(settings: GpuCheckSettings, work: Path) -> tuple[dict[str, Timing], int]:
    from .loader import cache_split, loader_timings

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        splits = {
            fmt: cache_split(settings.loader_images, settings.image_size, work, fmt) for fmt in ("png", "pgm")
        }
        count = min(settings.loader_images, *(len(split) for split in splits.values()))
        return loader_timings(splits, settings.image_size, count), count
    finally:
        torch.set_num_threads(previous)


def measure_predict(settings: GpuCheckSettings, work: Path) -> Timing:
    """`python -m clarity_hf predict FOLDER --model MODEL --output-dir OUT --overwrite` in a fresh process, the
    whole command timed; a random-weight student saved with its processor, PNGs of real X-rays."""
    from clarity_hf.data.transforms import build_processor

    from .loader import real_xrays

    model_dir, folder, out = work / "model", work / "images", work / "predictions"
    model = _student(settings)
    model.save_pretrained(model_dir)
    build_processor(model.config).save_pretrained(model_dir)
    folder.mkdir(parents=True, exist_ok=True)
    sources = real_xrays(settings.image_size)
    for i in range(settings.predict_images):
        (folder / f"{i:05d}.png").write_bytes(sources[i % len(sources)])
    command = [sys.executable, "-m", "clarity_hf", "predict", str(folder), "--model", str(model_dir)]
    command += ["--output-dir", str(out), "--overwrite", "--no-progress", "--device", settings.device]
    command += ["--batch-size", str(settings.inference_batch_size), "--bf16"]
    command += ["--num-workers", str(settings.predict_workers)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)

    def run():
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")

    timing = time_interleaved({"predict": run}, torch.device("cpu"), MIN_REPEATS)["predict"]
    rows = (out / "predictions.csv").read_text().strip().splitlines()
    if len(rows) != settings.predict_images + 1:
        raise RuntimeError(f"predict wrote {len(rows) - 1} rows for {settings.predict_images} images")
    return timing


def _seconds(result) -> str:
    """A phase's timings as "case: median s (min-max)"."""
    if isinstance(result, tuple):
        result = result[0]
    if isinstance(result, Timing):
        result = {"": result}
    return "; ".join(
        f"{name}: {t.median:.4f} s ({min(t.times):.4f}-{max(t.times):.4f})".lstrip(": ")
        for name, t in result.items()
    )


def run_check(settings: GpuCheckSettings, log=print) -> dict:
    """Every phase within the budget: {"training", "augmentation", "loader", "inference", "predict", "skipped",
    "failed", "device_name", "seconds", "load"}; a phase that raises is named in "failed" and the next one runs."""
    device = torch.device(settings.device)
    start, load_start = time.perf_counter(), load_average()
    results: dict = {"skipped": [], "failed": []}
    results["device_name"] = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        phases = (
            ("training", lambda: measure_training(settings, device)),
            ("augmentation", lambda: measure_augmentation(settings, device)),
            ("loader", lambda: measure_loader(settings, work / "loader")),
            ("inference", lambda: measure_inference(settings, device)),
            ("predict", lambda: measure_predict(settings, work / "predict")),
        )
        for name, phase in phases:
            if name not in settings.selected_phases:
                continue
            if time.perf_counter() - start > settings.budget_seconds:
                results["skipped"].append(name)
                continue
            log(f"[{time.perf_counter() - start:6.1f}s] {name}")
            (work / name).mkdir(parents=True, exist_ok=True)
            try:
                results[name] = phase()
            # One broken phase must not cost the others' figures on a rare GPU lease.
            except Exception as error:
                first_line = (str(error).splitlines() or [""])[0][:200]
                results["failed"].append(f"{name} ({type(error).__name__}: {first_line})")
                log(f"[{time.perf_counter() - start:6.1f}s] {name} FAILED: {error!r}")
                continue
            # Each phase's seconds as soon as it ends, so a run cut short still leaves its figures in the log.
            log(f"[{time.perf_counter() - start:6.1f}s] {name} done: {_seconds(results[name])}")
            if device.type == "cuda":
                torch.cuda.empty_cache()
    results["seconds"] = time.perf_counter() - start
    results["load"] = (load_start, load_average())
    return results


def training_rates(training: dict[str, Timing], settings: GpuCheckSettings) -> dict[str, float]:
    """{stage: training images/s of one GPU}, the faster of its eager and compiled rows, for the stages measured."""
    batch_images = settings.train_batch_size * settings.steps_per_repeat
    rates = {}
    for stage in ("teacher", "student + online teacher"):
        cases = [training[key] for key in (f"{stage}, eager", f"{stage}, compiled") if key in training]
        if cases:
            rates[stage] = batch_images / min(case.median for case in cases)
    return rates


def workers_per_gpu(results: dict, settings: GpuCheckSettings) -> str:
    """Loader workers one GPU needs at its measured training rate (the faster of eager and compiled) for each loader
    path of this host, and, as the ceiling, a `device` worker that also ran the batched warp on the host; "" when
    the training or loader phase is missing."""
    training, loader = results.get("training", {}), results.get("loader")
    if not training or not loader:
        return ""
    timings, count = loader
    paths = [name for name in ("cpu/png", "cpu/pgm", "device/png", "device/pgm") if name in timings]
    header = ["stage", "GPU training images/s (faster of eager / compiled)"]
    header += [f"workers per GPU, `{name.split('/')[0]}`, {name.split('/')[1].upper()}" for name in paths]
    warp = timings.get("warp")
    if warp is not None and "device/pgm" in timings:
        header.append("`device`, PGM, warp on the host too")
    rows = []
    for stage, gpu_rate in training_rates(training, settings).items():
        row = [stage, f"{gpu_rate:,.1f}"]
        row += [f"{gpu_rate / (count / timings[name].median):.2f}" for name in paths]
        if len(header) > len(row):
            # The decode-only worker slowed by the host-side warp of the same images.
            per_image = timings["device/pgm"].median / count + warp.median / count
            row.append(f"{gpu_rate * per_image:.2f}")
        rows.append(row)
    return "\n".join(
        [
            f"**Loader workers per GPU at the measured training rate (batch {settings.train_batch_size}), from the "
            "loader rows of this host (1 thread each)**",
            "",
            markdown_table(header, rows, align=["", *["right"] * (len(header) - 1)]),
        ]
    )


def section(results: dict, settings: GpuCheckSettings, command: str, rendered_by: str | None = None) -> str:
    size, batch, steps = settings.image_size, settings.train_batch_size, settings.steps_per_repeat
    rows = []
    training = results.get("training", {})
    for name, timing in training.items():
        rows.append([f"training images/s, {name}, batch {batch}", timing.rate_cell(batch * steps)])
    if "augmentation" in results:
        augment = results["augmentation"]
        rows.append([f"device augmentation images/s (batch {batch})", augment.rate_cell(batch * steps)])
        student = training.get("student + online teacher, eager")
        if student is not None:
            share = augment.median / (augment.median + student.median)
            rows.append(["device augmentation's share of a student step (eager)", f"{share:.1%}"])
    if "loader" in results:
        timings, count = results["loader"]
        for name, timing in timings.items():
            if name != "warp":
                path, fmt = name.split("/")
                rows.append(
                    [
                        f"loader images/s per worker (1 thread), {fmt.upper()}, `augment_on: {path}`",
                        timing.rate_cell(count),
                    ]
                )
    if "inference" in results:
        rows.append(
            [
                f"inference images/s, batch {settings.inference_batch_size} (logits + heatmaps)",
                results["inference"].rate_cell(settings.inference_batch_size * settings.inference_batches),
            ]
        )
    if "predict" in results:
        rows.append(
            [
                f"`python -m clarity_hf predict` end to end, {settings.predict_images} PNGs, "
                f"{settings.predict_workers} decoding workers, images/s",
                results["predict"].rate_cell(settings.predict_images),
            ]
        )
    table = markdown_table(["measured", "median (range) [load start/end]"], rows, align=["", "right"])
    workers = workers_per_gpu(results, settings)
    lines = [
        f"## GPU check ({results['device_name']}, {size} px, bf16 autocast)",
        "",
        f"Produced by `{command}` in {results['seconds']:.0f} s; 1-min load average "
        f"{results['load'][0]:.1f} / {results['load'][1]:.1f} at start / end. Student {settings.student_preset}, "
        f"teacher {settings.teacher_preset}; each training row is {steps} optimizer steps a repeat; "
        f"`torch.compile` backend `{settings.compile_backend}`. Rows: median of 3 repeats after a warm-up."
        + (f" Written from that run's saved figures by `{rendered_by}`." if rendered_by else ""),
        "",
    ]
    if settings.dry_run:
        lines += ["**Dry run on CPU with tiny models: the figures only show that the check runs.**", ""]
    lines.append(table)
    if workers:
        lines += ["", workers]
    if results.get("failed"):
        lines += ["", "Failed (no figure): " + "; ".join(results["failed"]) + "."]
    if results["skipped"]:
        lines += [
            "",
            f"Not measured (time budget of {settings.budget_seconds:.0f} s spent): "
            + ", ".join(results["skipped"])
            + ".",
        ]
    return "\n".join(lines)


def results_to_json(results: dict, settings: GpuCheckSettings, command: str) -> dict:
    """`run_check`'s results as plain JSON, with the settings, command and core count that produced them."""

    def plain(value):
        if isinstance(value, Timing):
            return value.to_dict()
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        return value

    raw = {key: plain(value) for key, value in results.items() if key != "loader"}
    if "loader" in results:
        raw["loader"], raw["loader_count"] = plain(results["loader"][0]), results["loader"][1]
    return raw | {"settings": dataclasses.asdict(settings), "command": command, "cores": os.cpu_count()}


def results_from_json(raw: dict, settings: GpuCheckSettings) -> tuple[dict, GpuCheckSettings, str]:
    """The inverse of `results_to_json`: (results, settings, command); `settings` serves where the JSON has none."""
    if "settings" in raw:
        settings = GpuCheckSettings(**raw["settings"])
    cores = raw.get("cores")
    results = {key: raw[key] for key in ("skipped", "device_name", "seconds") if key in raw}
    results["failed"] = raw.get("failed", [])
    results["load"] = tuple(raw["load"])
    results["training"] = {name: Timing.from_dict(t, cores) for name, t in raw.get("training", {}).items()}
    for name in ("augmentation", "inference", "predict"):
        if name in raw:
            results[name] = Timing.from_dict(raw[name], cores)
    if raw.get("loader"):
        timings = {name: Timing.from_dict(t, cores) for name, t in raw["loader"].items()}
        results["loader"] = (timings, int(raw.get("loader_count", settings.loader_images)))
    return results, settings, raw.get("command", "python -m benchmarks.gpu_check")


def main(argv: list[str] | None = None) -> int:
    """Options: `--output`, `--json`, and every `GpuCheckSettings` field (`--train_batch_size 64`, `--phases
    training,predict`, ...); `--dry-run` starts from the tiny CPU settings, which the other options then change."""
    from transformers import HfArgumentParser

    from clarity_hf.commands.arguments import parse_into_dataclass

    parser = HfArgumentParser(
        [GpuCheckSettings], description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--output", default=str(REPO_ROOT / "BENCHMARKS.md"), help="page to update, or - to print"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the raw figures as JSON")
    parser.add_argument("--section", default="gpu-check", help="the page's section to write (gpu-check)")
    parser.add_argument(
        "--from-json",
        type=Path,
        default=None,
        help="no measuring: write the section again from the raw figures an earlier run saved with --json",
    )
    args, _ = parser.parse_known_args(argv)  # --output, --json and whether to start from the dry settings
    if args.dry_run:
        parser.set_defaults(**dataclasses.asdict(GpuCheckSettings.dry()))
    settings = parse_into_dataclass(parser, argv)
    if args.from_json is not None:
        raw = json.loads(args.from_json.read_text())
        results, settings, command = results_from_json(raw, settings)
        rendered = f"python -m benchmarks.gpu_check --from-json {args.from_json}"
        publish(args.output, args.section, section(results, settings, command, rendered_by=rendered))
        return 0
    if settings.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA GPU here: run it on a GPU machine, or give --dry-run to check its logic on CPU")
    results = run_check(settings, log=lambda message: print(message, file=sys.stderr, flush=True))
    command = " ".join(["python", "-m", "benchmarks.gpu_check", *(sys.argv[1:] if argv is None else argv)])
    body = section(results, settings, command)
    if args.json is not None:
        args.json.write_text(json.dumps(results_to_json(results, settings, command), indent=2))
    publish(args.output, args.section, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
