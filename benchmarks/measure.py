# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Measuring CLARiTy's speed and memory: the models, the interleaved timer, the FLOP counter, the peak-memory cases
(each in a fresh process) and the four measurements of the benchmark page. No Markdown here: `benchmarks.report`
turns the rows into the page.

Timings are noisy: every comparison is measured side by side in one run (interleaved rounds, medians), and the
page reports ratios.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
import transformers
from torch import nn
from torch.profiler import ProfilerActivity
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from clarity_hf.baselines import GradCAM, PlainViTForMultiLabelClassification, build_teacher, plain_vit_config
from clarity_hf.configuration_clarity import CLARITY_PRESETS, ClarityConfig
from clarity_hf.modeling_clarity import ClarityForMultiLabelLocalization

DTYPE_MODES = ("fp32", "bf16-autocast", "bf16")
CLARITY_SMOKE = {k: v for k, v in CLARITY_PRESETS["clarity-tiny"].items() if k != "image_size"}


@dataclass
class BenchmarkSettings:
    """What one run measures. `quick()` is a smoke run of every code path on tiny models."""

    device: str = "cpu"
    threads: int | None = None
    resolutions: tuple[int, ...] = (224, 512)
    batch_sizes: tuple[int, ...] = (1, 8)
    dtype_modes: tuple[str, ...] = DTYPE_MODES
    warmup: int = 1
    repeats: dict[int, int] = field(default_factory=lambda: {224: 5, 512: 3})
    model_overrides: dict = field(default_factory=dict)
    # ConvNeXtV2-Base is the teacher of the paper configuration; convnextv2-test the tiny one of the smoke run.
    teacher_preset: str = "convnextv2-base"
    gradcam_resolutions: tuple[int, ...] = (224, 512)
    gradcam_full_backward_resolutions: tuple[int, ...] = (224,)
    gradcam_repeats: int = 3
    gradcam_full_backward_repeats: int = 3
    flops_batch_size: int = 8
    matmul_size: int = 4096
    memory_resolution: int = 512
    memory_batch_size: int = 8
    memory_subprocesses: bool = True
    include_training: bool = False
    # --include-training: the training step (benchmarks.training_step) and data loading (benchmarks.data_loading).
    training_student_preset: str = "clarity-s-16-224"
    training_teacher_preset: str = "convnextv2-base"
    training_image_size: int = 224
    training_batch_size: int = 8
    training_steps: int = 3  # timed steps per mode, after the warm-up
    data_num_images: int = 64
    data_source_size: int = 1024
    data_image_size: int = 224
    data_batch_size: int = 32
    data_batches: int = 4

    @classmethod
    def quick(cls, device: str = "cpu", threads: int | None = None) -> BenchmarkSettings:
        return cls(
            device=device,
            threads=threads,
            resolutions=(64,),
            batch_sizes=(1, 2),
            dtype_modes=DTYPE_MODES,
            warmup=1,
            repeats={64: 3},
            model_overrides=dict(CLARITY_SMOKE),
            teacher_preset="convnextv2-test",
            gradcam_resolutions=(64,),
            gradcam_full_backward_resolutions=(64,),
            gradcam_repeats=3,
            gradcam_full_backward_repeats=3,
            flops_batch_size=2,
            matmul_size=512,
            memory_resolution=64,
            memory_batch_size=2,
            memory_subprocesses=False,
            training_student_preset="clarity-tiny",
            training_teacher_preset="convnextv2-test",
            training_image_size=64,
            training_batch_size=2,
            training_steps=3,
            data_num_images=8,
            data_source_size=256,
            data_image_size=64,
            data_batch_size=4,
            data_batches=2,
        )

    def repeats_for(self, resolution: int) -> int:
        return self.repeats.get(resolution, min(self.repeats.values()) if self.repeats else 3)


# ---------------------------------------------------------------------------------------------------------- models
def clarity_config(resolution: int, overrides: dict | None = None, **kwargs) -> ClarityConfig:
    """CLARiTy-S/16 (or the overridden architecture) at `resolution`, 14 classes unless `kwargs` say otherwise."""
    return ClarityConfig(**{"image_size": resolution, **(overrides or {}), **kwargs})


class PlainViT(nn.Module):
    """The speed reference: the plain-ViT baseline (`clarity_hf.baselines`, CLARiTy's own blocks with ONE class token
    and a linear head) computing its logits only, no attention map, so that the ratio CLARiTy / PlainViT isolates
    the cost of the 13 extra class tokens, the class-row attention maps, SegmentCAM, attention pooling and the
    heatmaps."""

    def __init__(self, resolution: int, overrides: dict | None = None):
        super().__init__()
        self.model = PlainViTForMultiLabelClassification(
            plain_vit_config(clarity_config(resolution, overrides))
        )
        self.config = self.model.clarity.config

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        return self.model.classify(pixel_values, interpolate_pos_encoding)


def build_clarity(
    resolution: int, overrides: dict | None = None, **kwargs
) -> ClarityForMultiLabelLocalization:
    return ClarityForMultiLabelLocalization(clarity_config(resolution, overrides, **kwargs)).eval()


# ---------------------------------------------------------------------------------------------------------- timing
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast_context(device: torch.device, dtype_mode: str):
    if dtype_mode == "bf16-autocast":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


# How far a timed row can be trusted: the median of at least MIN_REPEATS timed repeats after at least one warm-up,
# with its range and the 1-minute load average at its start and end. A row is "noisy" when its range exceeds
# NOISY_SPREAD of its median or the load average exceeded the core count while it ran (other processes then held
# cores the benchmark needed).
MIN_REPEATS = 3
NOISY_SPREAD = 0.25


def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


@dataclass
class Timing:
    """Seconds of repeated calls of one case, and the 1-minute load average at the start and end of its rounds."""

    times: list[float]
    load: tuple[float, float] = (float("nan"), float("nan"))
    cores: int = field(default_factory=lambda: os.cpu_count() or 1)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def spread(self) -> float:
        """(max - min) / median."""
        return (max(self.times) - min(self.times)) / self.median if self.median > 0 else float("inf")

    @property
    def noisy(self) -> bool:
        return self.spread > NOISY_SPREAD or max(self.load) > self.cores or len(self.times) < MIN_REPEATS

    def to_dict(self) -> dict:
        """The raw figures (seconds) for JSON."""
        return {
            "median": self.median,
            "times": self.times,
            "load": self.load,
            "cores": self.cores,
            "noisy": self.noisy,
        }

    @classmethod
    def from_dict(cls, raw: dict, cores: int | None = None) -> Timing:
        """The inverse of `to_dict`; `cores` (of the machine that measured) where the dict lacks it."""
        cores = raw.get("cores", cores) or os.cpu_count() or 1
        return cls(times=list(raw["times"]), load=tuple(raw["load"]), cores=int(cores))

    def _tail(self) -> str:
        return f" [load {self.load[0]:.1f}/{self.load[1]:.1f}]" + (" noisy" if self.noisy else "")

    def cell(self) -> str:
        """`median (min-max) [load start/end]` in milliseconds, then `noisy` when the row is."""
        return (
            f"{self.median * 1e3:.1f} ({min(self.times) * 1e3:.1f}-{max(self.times) * 1e3:.1f})"
            + self._tail()
        )

    def rate_cell(self, count: float, digits: int = 1) -> str:
        """The same row as a rate, `count` per call: `median/s (slowest-fastest) [load start/end]`."""
        low, mid, high = count / max(self.times), count / self.median, count / min(self.times)
        return f"{mid:,.{digits}f} ({low:,.{digits}f}-{high:,.{digits}f})" + self._tail()


def time_interleaved(
    cases: dict[str, Callable[[], object]], device: torch.device, repeats: int, warmup: int = 1
) -> dict[str, Timing]:
    """Run `warmup` untimed rounds (at least one), then `repeats` timed rounds (at least `MIN_REPEATS`); every round
    calls each case once, in order, so a change of load touches every case alike."""
    for _ in range(max(warmup, 1)):
        for function in cases.values():
            function()
            synchronize(device)
    times = {name: [] for name in cases}
    load_start = load_average()
    for _ in range(max(repeats, MIN_REPEATS)):
        for name, function in cases.items():
            synchronize(device)
            start = time.perf_counter()
            function()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    load = (load_start, load_average())
    return {name: Timing(values, load) for name, values in times.items()}


def time_one(
    function: Callable[[], object], repeats: int = MIN_REPEATS, warmup: int = 1, device=None
) -> Timing:
    """`time_interleaved` of one case."""
    return time_interleaved({"case": function}, torch.device(device or "cpu"), repeats, warmup)["case"]


def matmul_gflops(device: torch.device, dtype: torch.dtype, size: int, repeats: int = 5) -> Timing:
    """Timing of one (size x size) @ (size x size) matmul; 2 * size**3 FLOP each."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    return time_interleaved({"matmul": lambda: a @ b}, device, repeats, warmup=2)["matmul"]


def count_forward_flops(model: nn.Module, pixel_values: torch.Tensor) -> int:
    """FLOPs of one forward pass (matmuls, convolutions and attention) with `FlopCounterMode`.

    The CPU flash-attention kernel behind `scaled_dot_product_attention` is not in torch's FLOP registry; it is
    counted here with torch's own SDPA formula (4 * B * H * Lq * Lk * d).
    """

    def cpu_sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    custom = {}
    cpu_flash = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_flash is not None:
        custom[cpu_flash] = cpu_sdpa
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=custom) as counter:
        model(pixel_values)
    return counter.get_total_flops()


def no_grad(function: Callable[[], object], device: torch.device | None = None, mode: str = "fp32"):
    def call():
        with torch.no_grad(), autocast_context(device or torch.device("cpu"), mode):
            return function()

    return call


# ---------------------------------------------------------------------------------------------------------- memory
def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux >= 4.0); False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes(after_reset: bool) -> int:
    if after_reset:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def measure_memory_case(spec: dict) -> dict:
    """Run in a fresh process: build the case's model and input, then measure the peak memory of one forward."""
    device = torch.device(spec["device"])
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    resolution, batch_size = spec["resolution"], spec["batch_size"]
    overrides = spec.get("model_overrides") or {}
    if spec["model"] == "plain":
        model = PlainViT(resolution, overrides).eval()
        run_kwargs = {}
    else:
        model = build_clarity(resolution, overrides, attn_implementation=spec.get("maps", "sdpa"))
        run_kwargs = {"output_attentions": bool(spec.get("output_attentions"))}
    model.to(device)
    pixel_values = torch.randn(batch_size, 3, resolution, resolution, device=device)
    # Warm-up on a 2x2-patch image: library initialisation (thread pools, kernels) stays out of the measurement
    # without leaving freed activation buffers behind for the measured pass to reuse.
    patch = model.config.patch_size
    with torch.no_grad():
        model(
            torch.randn(1, 3, 2 * patch, 2 * patch, device=device),
            interpolate_pos_encoding=True,
            **run_kwargs,
        )
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        with torch.no_grad():
            output = model(pixel_values, **run_kwargs)
        del output
        torch.cuda.synchronize(device)
        return {
            "peak_bytes": max(0, torch.cuda.max_memory_allocated(device) - before),
            "method": "cuda max_memory_allocated",
        }
    reset = _reset_peak_rss()
    rss_before = _rss_bytes()
    with (
        torch.no_grad(),
        torch.profiler.profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof,
    ):
        output = model(pixel_values, **run_kwargs)
        del output
    return {
        "peak_bytes": _profiled_peak_allocated(prof),
        "rss_bytes": max(0, _peak_rss_bytes(reset) - rss_before),
        "method": "torch CPU allocator peak (profiler memory events)",
    }


def _profiled_peak_allocated(prof: torch.profiler.profile) -> int:
    """The highest running "Total Allocated" of a memory-profiled CPU run: the bytes torch's allocator held at the
    busiest moment, counted from the start of the profile."""
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())["traceEvents"]
    totals = [event["args"].get("Total Allocated", 0) for event in events if event.get("name") == "[memory]"]
    return max([0, *totals])


def run_memory_cases(specs: dict[str, dict]) -> dict[str, dict]:
    """Run each memory case in its own fresh Python process. On CPU the processes run concurrently (only their
    own peak RSS is read, which other processes do not change); on CUDA one after the other."""
    root = Path(__file__).resolve().parents[1]  # the repository: the subprocess imports `benchmarks`
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
    }
    code = (
        "import json, sys; from benchmarks.measure import measure_memory_case; "
        "print('RESULT ' + json.dumps(measure_memory_case(json.loads(sys.argv[1]))))"
    )

    def start(spec: dict) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-c", code, json.dumps(spec)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    def finish(name: str, spec: dict, process: subprocess.Popen) -> dict:
        stdout, stderr = process.communicate()
        for line in stdout.splitlines():
            if line.startswith("RESULT "):
                return json.loads(line[len("RESULT ") :])
        raise RuntimeError(f"memory case {name!r} ({spec}) failed:\n{stderr[-2000:]}")

    results = {}
    if all(spec["device"] == "cpu" for spec in specs.values()):
        processes = {name: start(spec) for name, spec in specs.items()}
        for name, process in processes.items():
            results[name] = finish(name, specs[name], process)
    else:
        for name, spec in specs.items():
            results[name] = finish(name, spec, start(spec))
    return results


# ---------------------------------------------------------------------------------------------------------- machine
def machine_info(device: torch.device) -> dict:
    cpu = platform.processor() or "unknown"
    flags = ""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name") and cpu in ("unknown", "x86_64", ""):
                    cpu = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = line
                    break
    except OSError:
        pass
    isa = [name for name in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f" {name}" in flags]
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cpu_bf16_isa": ", ".join(isa) or "none detected",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "device": str(device),
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


# ---------------------------------------------------------------------------------------------------------- measurements
MEMORY_CASES = {
    "plain ViT (sdpa)": {"model": "plain"},
    "CLARiTy, class-row maps (sdpa, default)": {"model": "clarity", "maps": "sdpa"},
    "CLARiTy, full attention in map layers (eager)": {"model": "clarity", "maps": "eager"},
    "CLARiTy, output_attentions=True (all layers)": {
        "model": "clarity",
        "maps": "eager",  # only the eager kernel returns attention weights
        "output_attentions": True,
    },
}
MEMORY_REFERENCE = "CLARiTy, class-row maps (sdpa, default)"
GRADCAM_REFERENCE = "CLARiTy logits + 14 heatmaps"


def measure_memory(settings: BenchmarkSettings) -> dict[str, dict]:
    """{case: {"peak_bytes", ["rss_bytes"], "method"}} for the `MEMORY_CASES` at the memory resolution and batch."""
    common = {
        "device": settings.device,
        "threads": settings.threads,
        "resolution": settings.memory_resolution,
        "batch_size": settings.memory_batch_size,
        "model_overrides": settings.model_overrides,
    }
    specs = {name: {**spec, **common} for name, spec in MEMORY_CASES.items()}
    if settings.memory_subprocesses:
        return run_memory_cases(specs)
    # Smoke runs: in this process, so the figures only check the code path.
    return {name: measure_memory_case(spec) for name, spec in specs.items()}


def measure_speed(
    settings: BenchmarkSettings, device: torch.device, log: Callable[[str], None]
) -> list[dict]:
    """CLARiTy vs plain ViT in every dtype mode, interleaved: rows {"resolution", "batch", "dtype", "plain",
    "clarity"} (`Timing`s)."""
    rows = []
    for resolution in settings.resolutions:
        clarity = build_clarity(resolution, settings.model_overrides).to(device)
        plain = PlainViT(resolution, settings.model_overrides).eval().to(device)
        clarity_bf16 = plain_bf16 = None
        if "bf16" in settings.dtype_modes:
            clarity_bf16 = build_clarity(resolution, settings.model_overrides).to(device, torch.bfloat16)
            plain_bf16 = PlainViT(resolution, settings.model_overrides).eval().to(device, torch.bfloat16)
        for batch_size in settings.batch_sizes:
            pixel_values = torch.randn(batch_size, 3, resolution, resolution, device=device)
            pixel_bf16 = pixel_values.to(torch.bfloat16)
            cases = {}
            for mode in settings.dtype_modes:
                if mode == "bf16":
                    cases[("plain", mode)] = no_grad(partial(plain_bf16, pixel_bf16))
                    cases[("clarity", mode)] = no_grad(partial(clarity_bf16, pixel_bf16))
                else:
                    cases[("plain", mode)] = no_grad(partial(plain, pixel_values), device, mode)
                    cases[("clarity", mode)] = no_grad(partial(clarity, pixel_values), device, mode)
            log(f"vs plain: {resolution}px batch {batch_size} ({len(cases)} cases)")
            timings = time_interleaved(cases, device, settings.repeats_for(resolution), settings.warmup)
            for mode in settings.dtype_modes:
                rows.append(
                    {
                        "resolution": resolution,
                        "batch": batch_size,
                        "dtype": mode,
                        "plain": timings[("plain", mode)],
                        "clarity": timings[("clarity", mode)],
                    }
                )
        del clarity, plain, clarity_bf16, plain_bf16
    return rows


def measure_gradcam(
    settings: BenchmarkSettings, device: torch.device, log: Callable[[str], None]
) -> list[dict]:
    """CLARiTy vs Grad-CAM on the teacher (batch 1): rows {"resolution", "case", "timing"}; the CLARiTy row is the
    reference of its resolution."""
    rows = []
    for resolution in settings.gradcam_resolutions:
        clarity = build_clarity(resolution, settings.model_overrides).to(device)
        teacher = build_teacher(settings.teacher_preset, image_size=resolution).eval().to(device)
        pixel_values = torch.randn(1, 3, resolution, resolution, device=device)
        cam = GradCAM(teacher)
        cases = {
            GRADCAM_REFERENCE: no_grad(partial(clarity, pixel_values)),
            "teacher forward only": no_grad(partial(teacher, pixel_values)),
            "Grad-CAM 1 class, to activations": partial(cam, pixel_values, [0]),
            "Grad-CAM 14 classes, to activations": partial(cam, pixel_values, range(14)),
        }
        log(f"Grad-CAM: {resolution}px")
        timings = time_interleaved(cases, device, settings.gradcam_repeats, settings.warmup)
        if resolution in settings.gradcam_full_backward_resolutions:
            full = GradCAM(teacher, parameter_gradients=True)
            full_cases = {
                GRADCAM_REFERENCE: cases[GRADCAM_REFERENCE],
                "Grad-CAM 1 class, full backward": partial(full, pixel_values, [0]),
                "Grad-CAM 14 classes, full backward": partial(full, pixel_values, range(14)),
            }
            log(f"Grad-CAM full backward: {resolution}px")
            more = time_interleaved(full_cases, device, settings.gradcam_full_backward_repeats, warmup=0)
            # One CLARiTy reference per resolution: the two runs' CLARiTy times are pooled, and so are their loads
            # (the first run's start, the second's end).
            first, second = timings[GRADCAM_REFERENCE], more.pop(GRADCAM_REFERENCE)
            timings[GRADCAM_REFERENCE] = Timing(first.times + second.times, (first.load[0], second.load[1]))
            timings.update(more)
        rows += [
            {"resolution": resolution, "case": name, "timing": timing} for name, timing in timings.items()
        ]
        del clarity, teacher, cam
    return rows


def measure_flops(
    settings: BenchmarkSettings, device: torch.device, speed: list[dict], log: Callable[[str], None]
) -> tuple[list[dict], dict[str, float]]:
    """The achieved FLOP rate of the CLARiTy forwards timed by `measure_speed` (at the FLOP batch size), against a
    large matmul measured in this run: rows {"resolution", "dtype", "gflop", "timing", "gflops", "matmul_gflops"}
    and the matmul rates {"fp32", "bf16"} in GFLOP/s."""
    matmul = {}
    for mode, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        log(f"matmul {mode}")
        timing = matmul_gflops(device, dtype, settings.matmul_size)
        matmul[mode] = 2 * settings.matmul_size**3 / timing.median / 1e9
    timed = {(row["resolution"], row["batch"], row["dtype"]): row["clarity"] for row in speed}
    rows = []
    for resolution in settings.resolutions:
        clarity = build_clarity(resolution, settings.model_overrides).to(device)
        pixel_values = torch.randn(settings.flops_batch_size, 3, resolution, resolution, device=device)
        flops = count_forward_flops(clarity, pixel_values)
        del clarity
        for label, mode in (("fp32", "fp32"), ("bf16-autocast", "bf16"), ("bf16", "bf16")):
            timing = timed.get((resolution, settings.flops_batch_size, label))
            if timing is not None:
                rate = flops / timing.median / 1e9
                rows.append(
                    {
                        "resolution": resolution,
                        "dtype": label,
                        "gflop": flops / 1e9,
                        "timing": timing,
                        "gflops": rate,
                        "matmul_gflops": matmul[mode],
                    }
                )
    return rows, matmul
