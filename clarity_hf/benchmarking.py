# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Speed and memory benchmark of CLARiTy (logic of `scripts/benchmark.py`, which writes `BENCHMARKS.md`).

Every comparison is timed side by side in one process: the cases of a group run interleaved (A B A B ...) after
warm-up calls, and the report gives the median and the min-max of the repeats, and ratios of medians. Peak memory
is measured in a fresh subprocess per case as the peak of the bytes held by torch's allocator during one forward
pass over those held before it: on CUDA `torch.cuda.max_memory_allocated`, on CPU the running "Total Allocated"
of the profiler's memory events (`torch.profiler.profile(profile_memory=True)`), which, unlike the resident set
size, does not depend on what the C library's malloc kept from earlier work. On CPU the growth of the peak
resident set size (VmHWM) is reported beside it.

Models are built from configurations with random weights (timings do not depend on the weights).
"""

import json
import os
import platform
import resource
import shlex
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
from torch import nn
from torch.profiler import ProfilerActivity

from .configuration_clarity import CLARITY_PRESETS, ClarityConfig
from .evaluation.gradcam import GradCAM
from .modeling_clarity import ClarityForMultiLabelLocalization, ClarityModel
from .training.models import CONVNEXTV2_PRESETS

DTYPE_MODES = ("fp32", "bf16-autocast", "bf16")
# ConvNeXtV2-Base, the teacher of the paper configuration (spec section 3), and the tiny test models: the same
# presets the training code and the model use.
CONVNEXTV2_BASE = CONVNEXTV2_PRESETS["convnextv2-base"]
CONVNEXTV2_SMOKE = CONVNEXTV2_PRESETS["convnextv2-test"]
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
    repeats: dict[int, int] = field(default_factory=lambda: {224: 5, 512: 2})
    model_overrides: dict = field(default_factory=dict)
    teacher_config: dict = field(default_factory=partial(dict, CONVNEXTV2_BASE))
    gradcam_resolutions: tuple[int, ...] = (224, 512)
    gradcam_full_backward_resolutions: tuple[int, ...] = (224,)
    gradcam_repeats: int = 2
    gradcam_full_backward_repeats: int = 1
    flops_batch_size: int = 8
    matmul_size: int = 4096
    memory_resolution: int = 512
    memory_batch_size: int = 8
    memory_subprocesses: bool = True
    include_training: bool = False
    # --include-training: the training step (clarity_hf.training.benchmark) and data loading (cache vs raw PNG).
    training_student_preset: str = "clarity-s-16-224"
    training_teacher_preset: str = "convnextv2-base"
    training_image_size: int = 224
    training_batch_size: int = 8
    training_steps: int = 3
    data_num_images: int = 64
    data_source_size: int = 1024
    data_image_size: int = 224
    data_batch_size: int = 32
    data_batches: int = 4

    @classmethod
    def quick(cls, device: str = "cpu", threads: int | None = None) -> "BenchmarkSettings":
        return cls(
            device=device,
            threads=threads,
            resolutions=(64,),
            batch_sizes=(1, 2),
            dtype_modes=DTYPE_MODES,
            warmup=1,
            repeats={64: 2},
            model_overrides=dict(CLARITY_SMOKE),
            teacher_config=dict(CONVNEXTV2_SMOKE),
            gradcam_resolutions=(64,),
            gradcam_full_backward_resolutions=(64,),
            gradcam_repeats=2,
            gradcam_full_backward_repeats=1,
            flops_batch_size=2,
            matmul_size=512,
            memory_resolution=64,
            memory_batch_size=2,
            memory_subprocesses=False,
            training_student_preset="clarity-tiny",
            training_teacher_preset="convnextv2-test",
            training_image_size=64,
            training_batch_size=2,
            training_steps=1,
            data_num_images=8,
            data_source_size=256,
            data_image_size=64,
            data_batch_size=4,
            data_batches=2,
        )

    def repeats_for(self, resolution: int) -> int:
        return self.repeats.get(resolution, min(self.repeats.values()) if self.repeats else 3)


# --------------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------------


def clarity_config(resolution: int, overrides: dict | None = None, **kwargs) -> ClarityConfig:
    """CLARiTy-S/16 (or the overridden architecture) at `resolution`, 14 classes unless `kwargs` say otherwise."""
    return ClarityConfig(**{"image_size": resolution, **(overrides or {}), **kwargs})


class PlainViT(nn.Module):
    """The baseline: CLARiTy's own blocks with ONE class token and a linear head, computing no attention maps.

    It is a plain ViT-S/16 (pre-norm blocks, SDPA, CLS token) with exactly CLARiTy's kernels, so that the ratio
    CLARiTy / PlainViT isolates the cost of the 13 extra class tokens, the class-row attention maps, SegmentCAM,
    attention pooling and the heatmaps.
    """

    def __init__(self, resolution: int, overrides: dict | None = None, num_labels: int = 14):
        super().__init__()
        config = clarity_config(
            resolution,
            overrides,
            num_labels=1,
            use_segment_cam=False,
            use_attention_pooling=False,
            num_attention_map_layers=1,
        )
        self.backbone = ClarityModel(config)
        self.classifier = nn.Linear(config.hidden_size, num_labels)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden_states = self.backbone.embeddings(pixel_values)
        for layer in self.backbone.encoder.layers:
            hidden_states = layer(hidden_states, 1)[0]  # no class-attention rows requested
        return self.classifier(self.backbone.layernorm(hidden_states[:, 0]))


def build_clarity(
    resolution: int, overrides: dict | None = None, **kwargs
) -> ClarityForMultiLabelLocalization:
    return ClarityForMultiLabelLocalization(clarity_config(resolution, overrides, **kwargs)).eval()


def build_teacher(teacher_config: dict, resolution: int, num_labels: int = 14) -> nn.Module:
    from transformers import ConvNextV2Config, ConvNextV2ForImageClassification

    config = ConvNextV2Config(image_size=resolution, num_labels=num_labels, **teacher_config)
    model = ConvNextV2ForImageClassification(config).eval()
    model.requires_grad_(True)
    return model


# --------------------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast_context(device: torch.device, dtype_mode: str):
    if dtype_mode == "bf16-autocast":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


@dataclass
class Timing:
    times: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    def cell(self) -> str:
        """`median (min-max)` in milliseconds."""
        return f"{self.median * 1e3:.1f} ({min(self.times) * 1e3:.1f}-{max(self.times) * 1e3:.1f})"


def time_interleaved(
    cases: dict[str, Callable[[], object]], device: torch.device, repeats: int, warmup: int = 1
) -> dict[str, Timing]:
    """Run `warmup` untimed rounds, then `repeats` timed rounds; every round calls each case once, in order."""
    for _ in range(warmup):
        for function in cases.values():
            function()
            synchronize(device)
    times = {name: [] for name in cases}
    for _ in range(repeats):
        for name, function in cases.items():
            synchronize(device)
            start = time.perf_counter()
            function()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: Timing(values) for name, values in times.items()}


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
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def cpu_sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    custom = {}
    cpu_flash = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_flash is not None:
        custom[cpu_flash] = cpu_sdpa
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=custom) as counter:
        model(pixel_values)
    return counter.get_total_flops()


# --------------------------------------------------------------------------------------------------------------
# Peak memory (fresh subprocess per case)
# --------------------------------------------------------------------------------------------------------------


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
    patch = model.backbone.config.patch_size if spec["model"] == "plain" else model.config.patch_size
    with torch.no_grad():
        model(torch.randn(1, 3, 2 * patch, 2 * patch, device=device), **run_kwargs)
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
    root = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
    }
    code = (
        "import json, sys; from clarity_hf.benchmarking import measure_memory_case; "
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


# --------------------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------------------


def machine_info(device: torch.device) -> dict:
    import transformers

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


def _ratio(numerator: Timing, denominator: Timing) -> str:
    return f"{numerator.median / denominator.median:.2f}x"


class _Log:
    def __init__(self, verbose: bool):
        self.verbose = verbose
        self.start = time.perf_counter()

    def __call__(self, message: str) -> None:
        if self.verbose:
            print(f"[{time.perf_counter() - self.start:6.1f}s] {message}", file=sys.stderr, flush=True)


def run_benchmark(settings: BenchmarkSettings, command: str = "", verbose: bool = True) -> tuple[str, dict]:
    """Run every section; returns the Markdown report and the raw figures (for the JSON dump and the goals)."""
    log = _Log(verbose)
    device = torch.device(settings.device)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    torch.manual_seed(0)
    info = machine_info(device)
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    results: dict = {"machine": info, "settings": {"quick": settings.model_overrides != {}}}
    lines = ["# CLARiTy benchmarks", ""]
    lines += [
        "Generated by `scripts/benchmark.py`; do not edit by hand. Random weights (timings do not depend on them).",
        "Times in milliseconds per call: median (min-max) of interleaved repeats after warm-up; ratios of medians.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
    ]
    lines += [f"| {key} | {value} |" for key, value in info.items()]
    lines += [f"| command | `{command}` |", "LOAD_ROW", ""]

    memory_cases = {
        "plain ViT (sdpa)": {"model": "plain"},
        "CLARiTy, class-row maps (sdpa, default)": {"model": "clarity", "maps": "sdpa"},
        "CLARiTy, full attention in map layers (eager)": {"model": "clarity", "maps": "eager"},
        "CLARiTy, output_attentions=True (all layers)": {
            "model": "clarity",
            "maps": "eager",  # only the eager kernel returns attention weights
            "output_attentions": True,
        },
    }
    common = {
        "device": settings.device,
        "threads": settings.threads,
        "resolution": settings.memory_resolution,
        "batch_size": settings.memory_batch_size,
        "model_overrides": settings.model_overrides,
    }
    # First, before any timing: the subprocesses must not compete with the timed cases for the cores.
    log("memory cases (fresh subprocesses)")
    specs = {name: {**spec, **common} for name, spec in memory_cases.items()}
    if settings.memory_subprocesses:
        memory_results = run_memory_cases(specs)
    else:  # smoke runs: in this process, so the figures only check the code path
        memory_results = {name: measure_memory_case(spec) for name, spec in specs.items()}
    memory = {name: result["peak_bytes"] for name, result in memory_results.items()}

    # 1. CLARiTy vs plain ViT.
    lines += [
        "## CLARiTy (logits + 14 heatmaps) vs plain ViT-S/16",
        "",
        "Plain ViT: CLARiTy's own blocks with one class token and a linear head, SDPA, no attention maps "
        "(`PlainViT`). CLARiTy: the full `ClarityForMultiLabelLocalization` forward (14 class tokens, class-row "
        "attention maps of the last K blocks, SegmentCAM, attention pooling, heatmaps). `bf16-autocast`: "
        "`torch.autocast(device, torch.bfloat16)`; `bf16`: weights in bfloat16 (`model.to(torch.bfloat16)`).",
        "",
        "| resolution | batch | dtype | plain ViT ms | CLARiTy ms | CLARiTy / plain |",
        "|---|---|---|---|---|---|",
    ]
    vs_plain = []
    dtype_rows = []
    clarity_timings: dict[tuple[int, int, str], Timing] = {}
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
                    cases[("plain", mode)] = _no_grad(partial(plain_bf16, pixel_bf16))
                    cases[("clarity", mode)] = _no_grad(partial(clarity_bf16, pixel_bf16))
                else:
                    cases[("plain", mode)] = _no_grad(partial(plain, pixel_values), device, mode)
                    cases[("clarity", mode)] = _no_grad(partial(clarity, pixel_values), device, mode)
            log(f"vs plain: {resolution}px batch {batch_size} ({len(cases)} cases)")
            timings = time_interleaved(cases, device, settings.repeats_for(resolution), settings.warmup)
            for mode in settings.dtype_modes:
                plain_t, clarity_t = timings[("plain", mode)], timings[("clarity", mode)]
                clarity_timings[(resolution, batch_size, mode)] = clarity_t
                ratio = clarity_t.median / plain_t.median
                vs_plain.append(
                    {
                        "resolution": resolution,
                        "batch": batch_size,
                        "dtype": mode,
                        "plain_s": plain_t.median,
                        "clarity_s": clarity_t.median,
                        "ratio": ratio,
                    }
                )
                lines.append(
                    f"| {resolution} | {batch_size} | {mode} | {plain_t.cell()} | {clarity_t.cell()} | {ratio:.2f}x |"
                )
            fp32 = timings[("clarity", "fp32")]
            for mode in settings.dtype_modes:
                if mode != "fp32":
                    speedup = fp32.median / timings[("clarity", mode)].median
                    dtype_rows.append(
                        (resolution, batch_size, mode, fp32, timings[("clarity", mode)], speedup)
                    )
        del clarity, plain, clarity_bf16, plain_bf16
    results["vs_plain"] = vs_plain

    lines += [
        "",
        "## bf16 vs fp32 (CLARiTy forward, same run as above)",
        "",
        "| resolution | batch | bf16 path | fp32 ms | bf16 ms | speed-up |",
        "|---|---|---|---|---|---|",
    ]
    results["bf16"] = []
    for resolution, batch_size, mode, fp32, other, speedup in dtype_rows:
        lines.append(
            f"| {resolution} | {batch_size} | {mode} | {fp32.cell()} | {other.cell()} | {speedup:.2f}x |"
        )
        results["bf16"].append(
            {"resolution": resolution, "batch": batch_size, "dtype": mode, "speedup": speedup}
        )

    # 2. Grad-CAM.
    lines += [
        "",
        "## CLARiTy vs Grad-CAM on the ConvNeXtV2 teacher (batch 1)",
        "",
        f"Teacher: `ConvNextV2ForImageClassification` {settings.teacher_config}, 14 labels, random weights. "
        "Grad-CAM (`clarity_hf.evaluation.gradcam.GradCAM`, last stage): one forward, then one backward per class "
        "with `retain_graph`. *to activations*: the backward stops at the last stage (`autograd.grad` w.r.t. the "
        "feature map, the cheapest exact Grad-CAM); *full backward*: also every parameter gradient, the cost of "
        "the usual `loss.backward(retain_graph=True)` implementations. The maps are the same.",
        "",
        "| resolution | case | ms | Grad-CAM / CLARiTy |",
        "|---|---|---|---|",
    ]
    results["gradcam"] = []
    for resolution in settings.gradcam_resolutions:
        clarity = build_clarity(resolution, settings.model_overrides).to(device)
        teacher = build_teacher(settings.teacher_config, resolution).to(device)
        pixel_values = torch.randn(1, 3, resolution, resolution, device=device)
        cam = GradCAM(teacher)
        cases = {
            "CLARiTy logits + 14 heatmaps": _no_grad(partial(clarity, pixel_values)),
            "teacher forward only": _no_grad(partial(teacher, pixel_values)),
            "Grad-CAM 1 class, to activations": partial(cam, pixel_values, [0]),
            "Grad-CAM 14 classes, to activations": partial(cam, pixel_values, range(14)),
        }
        log(f"Grad-CAM: {resolution}px")
        timings = time_interleaved(cases, device, settings.gradcam_repeats, settings.warmup)
        if resolution in settings.gradcam_full_backward_resolutions:
            full = GradCAM(teacher, parameter_gradients=True)
            full_cases = {
                "CLARiTy logits + 14 heatmaps": cases["CLARiTy logits + 14 heatmaps"],
                "Grad-CAM 1 class, full backward": partial(full, pixel_values, [0]),
                "Grad-CAM 14 classes, full backward": partial(full, pixel_values, range(14)),
            }
            log(f"Grad-CAM full backward: {resolution}px")
            more = time_interleaved(full_cases, device, settings.gradcam_full_backward_repeats, warmup=0)
            # One CLARiTy reference per table row: the two runs' CLARiTy times are pooled.
            pooled = (
                timings["CLARiTy logits + 14 heatmaps"].times + more.pop("CLARiTy logits + 14 heatmaps").times
            )
            timings["CLARiTy logits + 14 heatmaps"] = Timing(pooled)
            timings.update(more)
        reference = timings["CLARiTy logits + 14 heatmaps"]
        for name, timing in timings.items():
            ratio = "1.00x (reference)" if name.startswith("CLARiTy") else _ratio(timing, reference)
            lines.append(f"| {resolution} | {name} | {timing.cell()} | {ratio} |")
            results["gradcam"].append(
                {
                    "resolution": resolution,
                    "case": name,
                    "s": timing.median,
                    "ratio": timing.median / reference.median,
                }
            )
        del clarity, teacher, cam

    # 3. Achieved FLOP rate.
    lines += [
        "",
        f"## Achieved FLOP rate (CLARiTy forward, batch {settings.flops_batch_size}) vs a large matmul",
        "",
        "FLOPs counted with `torch.utils.flop_counter.FlopCounterMode` (matmuls, convolutions, attention; "
        "elementwise ops not counted); forward times from the CLARiTy vs plain ViT table above. "
        f"Matmul: {settings.matmul_size}^2 x {settings.matmul_size}^2, "
        f"2 x {settings.matmul_size}^3 FLOP, measured in this run.",
        "",
        "| resolution | dtype | GFLOP per forward | forward ms | GFLOP/s | matmul GFLOP/s | fraction of matmul |",
        "|---|---|---|---|---|---|---|",
    ]
    results["flops"] = []
    matmul = {}
    for mode, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        log(f"matmul {mode}")
        timing = matmul_gflops(device, dtype, settings.matmul_size)
        matmul[mode] = 2 * settings.matmul_size**3 / timing.median / 1e9
    for resolution in settings.resolutions:
        clarity = build_clarity(resolution, settings.model_overrides).to(device)
        pixel_values = torch.randn(settings.flops_batch_size, 3, resolution, resolution, device=device)
        flops = count_forward_flops(clarity, pixel_values)
        del clarity
        for label, mode in (("fp32", "fp32"), ("bf16-autocast", "bf16"), ("bf16", "bf16")):
            timing = clarity_timings.get((resolution, settings.flops_batch_size, label))
            if timing is None:
                continue
            rate = flops / timing.median / 1e9
            lines.append(
                f"| {resolution} | {label} | {flops / 1e9:.1f} | {timing.cell()} | {rate:.0f} | {matmul[mode]:.0f} "
                f"| {rate / matmul[mode]:.0%} |"
            )
            results["flops"].append(
                {
                    "resolution": resolution,
                    "dtype": label,
                    "gflop": flops / 1e9,
                    "gflops": rate,
                    "matmul_gflops": matmul[mode],
                    "fraction": rate / matmul[mode],
                }
            )
    results["matmul_gflops"] = matmul

    # 4. Peak memory.
    resolution, batch_size = settings.memory_resolution, settings.memory_batch_size
    lines += [
        "",
        f"## Peak memory of one forward pass ({resolution}px, batch {batch_size}, fp32)",
        "",
        "Each case in a fresh subprocess. Peak of the bytes held by torch's allocator during the pass minus those "
        "held before it, i.e. the activations and workspace of the pass (weights excluded): CPU from the "
        "profiler's memory events, CUDA `torch.cuda.max_memory_allocated`. On CPU the growth of the peak resident "
        "set size (VmHWM, reset just before the pass) is given beside it; it also counts oneDNN scratch space and "
        "is lowered by memory malloc kept from model building.",
        "",
    ]
    reference = memory["CLARiTy, class-row maps (sdpa, default)"]
    with_rss = all("rss_bytes" in result for result in memory_results.values())
    lines += (
        ["| case | peak MiB | vs CLARiTy (sdpa) | RSS growth MiB |", "|---|---|---|---|"]
        if with_rss
        else ["| case | peak MiB | vs CLARiTy (sdpa) |", "|---|---|---|"]
    )
    for name, peak in memory.items():
        rss = f" {memory_results[name]['rss_bytes'] / 2**20:.0f} |" if with_rss else ""
        lines.append(f"| {name} | {peak / 2**20:.0f} | {peak / max(reference, 1):.2f}x |{rss}")
    results["memory_mib"] = {name: peak / 2**20 for name, peak in memory.items()}

    # 5. Training and data loading.
    lines += ["", "## Training step and data loading", ""]
    if settings.include_training:
        log("training step")
        training_lines, results["training"] = training_section(settings)
        log("data loading")
        data_lines, results["data_loading"] = data_loading_section(settings)
        lines += training_lines + [""] + data_lines
    else:
        lines.append(
            "Not measured in this run: `scripts/benchmark.py --include-training` adds the training step (student "
            "alone, student + online teacher, cached teacher logits) and data loading (cache vs raw PNG)."
        )
    lines.append("")
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    total = time.perf_counter() - log.start
    lines[lines.index("LOAD_ROW")] = (
        f"| 1-min load average (start / end) | {load_start:.2f} / {load_end:.2f} (other processes on the machine "
        f"skew timings; interleaving keeps the ratios fair) |\n| run time | {total:.0f} s |"
    )
    results["load_average"] = [load_start, load_end]
    log("done")
    return "\n".join(lines), results


def training_section(settings: BenchmarkSettings) -> tuple[list[str], list[dict]]:
    """Optimizer steps per second of the student alone, with an online teacher and with cached teacher logits
    (`clarity_hf.training.benchmark.benchmark_training`, on the benchmark's device and threads: CPU)."""
    from .training.benchmark import benchmark_training, format_markdown

    rows = benchmark_training(
        settings.training_student_preset,
        settings.training_teacher_preset,
        settings.training_image_size,
        settings.training_batch_size,
        settings.training_steps,
        settings.warmup,
    )
    title = (
        f"### Training step ({settings.training_student_preset} student, {settings.training_teacher_preset} "
        f"teacher, {settings.training_image_size}px, batch {settings.training_batch_size}, float32, median of "
        f"{settings.training_steps} interleaved steps; forward + loss + backward + clipping + AdamW)"
    )
    return format_markdown(rows, title).splitlines(), rows


def benchmark_data_loading(
    num_images: int = 64,
    source_size: int = 1024,
    image_size: int = 224,
    batch_size: int = 32,
    batches: int = 4,
    seed: int = 0,
) -> list[dict]:
    """Images per second of reading batches of decoded, model-sized images (a) from the original PNGs (open,
    decode, grayscale, resize: training without a cache) and (b) from the preprocessing cache
    (`clarity_hf.data.cache.build_cache`, PNG and raw PGM). The PNGs are synthetic radiographs rendered at
    `source_size`, so they compress like real ones. Rows `{"source", "images_per_second", "speedup"}`."""
    import tempfile

    import numpy as np
    from datasets import Dataset
    from PIL import Image

    from .data.cache import build_cache
    from .data.features import attach_metadata, clarity_features, make_metadata
    from .data.synthetic import render_synthetic_cxr

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rows: dict[str, list] = {key: [] for key in clarity_features(14)}
        for i in range(num_images):
            sample = render_synthetic_cxr(seed, "train", i, source_size)
            path = root / f"{i:05d}.png"
            Image.fromarray(sample.image).save(path)
            values = dict(
                image=str(path),
                labels=sample.labels.tolist(),
                image_id=path.name,
                patient_id=str(i),
                age=None,
                sex="",
                view_position="",
                follow_up=0,
                original_size=[source_size, source_size],
                pixel_spacing=[0.0, 0.0],
                boxes=[],
                box_split="",
            )
            for key, value in values.items():
                rows[key].append(value)
        dataset = attach_metadata(
            Dataset.from_dict(rows, features=clarity_features(14)), make_metadata([], "bench")
        )
        caches = {
            fmt: build_cache(dataset, root / fmt, image_size=image_size, progress=False, image_format=fmt)[
                "train"
            ]
            for fmt in ("png", "pgm")
        }
        rng = np.random.default_rng(seed)
        chosen = [rng.choice(num_images, batch_size) for _ in range(batches)]

        def original() -> None:
            for batch in chosen:
                for i in batch:
                    with Image.open(rows["image"][i]) as image:
                        image.convert("L").resize((image_size,) * 2, Image.BILINEAR)

        def from_cache(cached) -> None:
            for batch in chosen:
                for image in cached[[int(i) for i in batch]]["image"]:
                    np.asarray(image)

        runs = [(f"original {source_size}px PNG", original)]
        runs += [
            (f"cache {image_size}px {fmt}", partial(from_cache, cached)) for fmt, cached in caches.items()
        ]
        seconds = {}
        for name, function in runs:
            function()  # warm the page cache
            start = time.perf_counter()
            function()
            seconds[name] = time.perf_counter() - start
    reference = seconds[runs[0][0]]
    return [
        {
            "source": name,
            "images_per_second": batch_size * batches / value,
            "speedup": reference / value,
        }
        for name, value in seconds.items()
    ]


def data_loading_section(settings: BenchmarkSettings) -> tuple[list[str], list[dict]]:
    rows = benchmark_data_loading(
        settings.data_num_images,
        settings.data_source_size,
        settings.data_image_size,
        settings.data_batch_size,
        settings.data_batches,
    )
    lines = [
        f"### Data loading ({settings.data_batches} batches of {settings.data_batch_size} decoded "
        f"{settings.data_image_size}px images from {settings.data_num_images} synthetic radiographs)",
        "",
        "| source | images/s | speed-up vs original PNG |",
        "|---|---:|---:|",
    ]
    lines += [f"| {r['source']} | {r['images_per_second']:.0f} | {r['speedup']:.1f}x |" for r in rows]
    return lines, rows


def _no_grad(function: Callable[[], object], device: torch.device | None = None, mode: str = "fp32"):
    def call():
        with torch.no_grad(), autocast_context(device or torch.device("cpu"), mode):
            return function()

    return call


def format_command(argv: list[str]) -> str:
    return " ".join(shlex.quote(arg) for arg in ["python", "scripts/benchmark.py", *argv])


__all__ = [
    "BenchmarkSettings",
    "PlainViT",
    "Timing",
    "build_clarity",
    "build_teacher",
    "count_forward_flops",
    "format_command",
    "machine_info",
    "matmul_gflops",
    "measure_memory_case",
    "run_benchmark",
    "time_interleaved",
]
