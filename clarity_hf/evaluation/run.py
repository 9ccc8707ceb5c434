# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Run any model (CLARiTy, the ConvNeXtV2 teacher with Grad-CAM / CAM, the plain-ViT attention baseline) over a
dataset split, and evaluate the logits and low-resolution heatmaps with the project's metrics: `compute_auroc` on
every image of the split, `LocalizationEvaluator` on the boxed images (threshold tuned on `box_split == "tune"`,
reported on `"eval"`).

    model, processor, kind = load_model_for_evaluation("runs/student/best_model")
    predictions = predict_split(heatmap_methods(model, kind), dataset["test"], processor)
    entries = {name: evaluate_predictions(p) for name, p in predictions.items()}
    write_evaluation("report/", entries, dataset["test"], predictions)

Images go through a `ClarityImageProcessor` (the model folder's own, or one built from the training recipe's size,
mean and std), so evaluation sees what inference sees.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from datasets import Image as ImageFeature
from transformers import AutoConfig, AutoModelForImageClassification
from transformers.utils import ModelOutput

from ..baselines import (
    PLAIN_VIT_ARCHITECTURE,
    BaselineOutput,
    PlainViTForMultiLabelClassification,
    teacher_cam,
    teacher_gradcam_stages,
    teacher_stages,
)
from ..configuration_clarity import NIH_BOXED_PATHOLOGIES
from ..data.transforms import build_processor
from ..image_processing_clarity import ClarityImageProcessor
from ..loading import load_model_strictly
from ..modeling_clarity import ClarityForMultiLabelLocalization
from .classification import compute_auroc, sigmoid
from .figures import save_overlay_grid, save_prediction_figure
from .localization import LABEL_ALIASES, LocalizationEvaluator
from .report import ModelEntry, jsonable, write_report

logger = logging.getLogger(__name__)

__all__ = [
    "HeatmapMethod",
    "LogitsMethod",
    "SplitPredictions",
    "TeacherCAM",
    "TeacherGradCAM",
    "build_processor",
    "evaluate_predictions",
    "heatmap_methods",
    "load_model_for_evaluation",
    "localization_evaluator",
    "map_grid",
    "model_kind",
    "stage_method_name",
    "predict_split",
    "logits_methods",
    "reported_thresholds",
    "figure_rows",
    "save_claims_figure",
    "save_figure",
    "write_evaluation",
]

# A heatmap method: pixel_values (B, 3, H, W) -> an output with `logits` (B, C) and `heatmaps` (B, C, h, w), or a
# mapping method name -> such an output when one pass yields several methods (Grad-CAM on every teacher stage).
HeatmapMethod = Callable[[torch.Tensor], Any]
# A logits-only method: pixel_values (B, 3, H, W) -> logits (B, C), for the rows whose heatmaps nobody reads.
LogitsMethod = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class SplitPredictions:
    """One method's outputs over one split, aligned with the split's rows."""

    logits: np.ndarray  # (N, C) float32
    heatmaps: np.ndarray  # (N, C, h, w) float32 in [0, 1], the model's resolution
    labels: np.ndarray  # (N, C) float32
    image_ids: list[str]
    boxes: list[list[dict]]
    box_frames: list[tuple[int, int]]  # (height, width) of each row's box frame
    box_splits: list[str]
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def model_kind(config) -> str:
    """ "clarity", "plain_vit" or "convnextv2" from a model config."""
    if PLAIN_VIT_ARCHITECTURE in (getattr(config, "architectures", None) or []):
        return "plain_vit"
    if config.model_type == "clarity":
        return "clarity"
    if config.model_type in ("convnextv2", "convnext"):
        return "convnextv2"
    raise ValueError(
        f"cannot evaluate a model of type {config.model_type!r} (clarity, plain ViT or ConvNeXt(V2))"
    )


def load_model_for_evaluation(folder: str | Path) -> tuple[torch.nn.Module, ClarityImageProcessor, str]:
    """A saved model folder -> (model in eval mode, its image processor, kind)."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: not a model folder (no config.json)")
    config = AutoConfig.from_pretrained(folder)
    kind = model_kind(config)
    # Strict: missing, unexpected or non-finite weights are an error, never a randomly initialised model scored.
    model_class = {
        "plain_vit": PlainViTForMultiLabelClassification,
        "clarity": ClarityForMultiLabelLocalization,
    }.get(kind, AutoModelForImageClassification)
    model = load_model_strictly(folder, model_class, config=config)
    if (folder / "preprocessor_config.json").is_file():
        processor = ClarityImageProcessor.from_pretrained(folder)
    else:  # the recipe every model of this package is trained with, at the config's size
        processor = build_processor(config)
        logger.warning(
            "%s has no preprocessor_config.json: using the default recipe (%d px, bilinear, ImageNet mean / std)",
            folder,
            processor.size["height"],
        )
    return model.eval(), processor, kind


def stage_method_name(name: str, stage: int) -> str:
    """The method name of `name` computed on encoder stage `stage` (0-based); `STAGE_METHOD` reads it back."""
    return f"{name} [stage {stage}]"


STAGE_METHOD = re.compile(r"^(?P<name>.*) \[stage (?P<stage>\d+)\]$")


def map_grid(heatmaps: np.ndarray | torch.Tensor) -> str:
    """The map grid of (..., h, w) heatmaps as "h x w"."""
    h, w = tuple(heatmaps.shape[-2:])
    return f"{h} x {w}"


def heatmap_methods(
    model: torch.nn.Module, kind: str, name: str | None = None, gradcam_stages: bool = False
) -> dict[str, HeatmapMethod]:
    """The heatmap methods of a model: CLARiTy -> its heatmaps; plain ViT -> CLS attention; ConvNeXt(V2) teacher ->
    Grad-CAM and CAM. Keys are method names (`name` prefixes them). With `gradcam_stages`, the teacher's Grad-CAM
    method yields one method per encoder stage, named by [`stage_method_name`] (one shared pass), for
    `clarity_hf.evaluation.selection.select_stage` to choose from."""
    if kind == "clarity":
        return {(name or "CLARiTy"): lambda x: _no_grad(model, x)}
    if kind == "plain_vit":
        return {(name or "plain ViT (CLS attention)"): lambda x: _no_grad(model, x)}
    if kind == "convnextv2":
        prefix = name or "teacher"
        cam_name = f"{prefix} CAM"
        cam = TeacherCAM(model)
        gradcam = TeacherGradCAM(
            model,
            f"{prefix} Grad-CAM",
            stages=list(range(len(teacher_stages(model)))) if gradcam_stages else None,
            cam_name=cam_name,
            cam=cam,
        )
        return {gradcam.name: gradcam, cam_name: cam}
    raise ValueError(f"unknown model kind {kind!r}")


class TeacherCAM:
    """The teacher's CAM as a heatmap method (one no-grad forward pass)."""

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def __call__(self, pixel_values: torch.Tensor) -> BaselineOutput:
        return teacher_cam(self.model, pixel_values)


class TeacherGradCAM:
    """The teacher's Grad-CAM as a heatmap method, on one stage (`stages=None`: the last) or on several (one output per
    stage, named by [`stage_method_name`]), with CAM (`cam`, named `cam_name`) from the same forward pass.

    Called on a batch it computes every class of every image (the full computation). [`predict_split`] instead calls
    [`TeacherGradCAM.explain`] with the maps each image's evaluation reads, and [`TeacherGradCAM.without_maps`] where
    none is read. Images are explained one at a time: an image's maps then do not depend on which other images share
    its batch (CPU kernels round differently at other batch sizes), so maps computed for a subset of the classes,
    stages or images are bit-equal to the full computation's."""

    def __init__(
        self,
        model: torch.nn.Module,
        name: str,
        stages: Sequence[int] | None = None,
        cam_name: str | None = None,
        cam: TeacherCAM | None = None,
    ):
        self.model, self.name, self.cam_name, self.cam = model, name, cam_name, cam
        last = len(teacher_stages(model)) - 1
        self.stages = [last] if stages is None else [int(s) for s in stages]
        self.per_stage = stages is not None

    def output_name(self, stage: int) -> str:
        return stage_method_name(self.name, stage) if self.per_stage else self.name

    def explain(
        self,
        pixel_values: torch.Tensor,
        read: torch.Tensor | None = None,
        stages: Sequence[int] | None = None,
        cam: bool = True,
    ) -> dict[str, BaselineOutput]:
        """Grad-CAM on `stages` (default: all of this method's) of the maps `read` ((B, C) bool, default: all; the
        others are NaN) and, with `cam`, CAM: output name -> output."""
        stages = self.stages if stages is None else list(stages)
        parts = [
            teacher_gradcam_stages(
                self.model,
                pixel_values[i : i + 1].clone(),
                stages,
                read=None if read is None else read[i : i + 1],
                cam=cam and self.cam_name is not None,
            )
            for i in range(len(pixel_values))
        ]
        names = {key: self.cam_name if key == "cam" else self.output_name(key) for key in parts[0]}
        return {names[key]: output for key, output in _concatenate(parts).items()}

    @torch.no_grad()
    def without_maps(self, pixel_values: torch.Tensor) -> dict[str, BaselineOutput]:
        """Logits and CAM from one no-grad forward pass; the Grad-CAM maps are NaN (nothing reads them)."""
        cam = teacher_cam(self.model, pixel_values)
        outputs = {self.cam_name: cam} if self.cam_name is not None else {}
        for stage in self.stages:
            # ConvNeXt: a patch-size stem, then a stride-2 downsampling before every stage after the first.
            grid = tuple(s // self.model.config.patch_size // 2**stage for s in pixel_values.shape[-2:])
            blank = torch.full((*cam.logits.shape, *grid), float("nan"))
            outputs[self.output_name(stage)] = BaselineOutput(logits=cam.logits, heatmaps=blank)
        return outputs

    def __call__(self, pixel_values: torch.Tensor) -> dict[str, BaselineOutput] | BaselineOutput:
        outputs = self.explain(pixel_values, cam=False)
        return outputs if self.per_stage else outputs[self.name]


def logits_methods(model: torch.nn.Module, kind: str, name: str | None = None) -> dict[str, LogitsMethod]:
    """Logits-only stand-ins for the heatmap methods of [`heatmap_methods`] whose maps cost more than a forward pass
    (the teacher's Grad-CAM: one backward pass per class): naming a method here tells [`predict_split`] to compute
    its maps only where they are read. Keys are the heatmap methods' names. (A [`TeacherGradCAM`] uses its own
    no-grad pass, which also yields CAM, instead of the stand-in.)"""
    if kind == "convnextv2":
        return {f"{name or 'teacher'} Grad-CAM": lambda x: _no_grad(model, x).logits}
    return {}


@torch.no_grad()
def _no_grad(model: torch.nn.Module, pixel_values: torch.Tensor):
    return model(pixel_values=pixel_values)


def _label_names(dataset: Dataset) -> list[str] | None:
    """The split's label names, or None for a split not built by `clarity_hf.data`."""
    from ..data.features import get_label_names

    try:
        return get_label_names(dataset)
    except ValueError:
        return None


def _box_frame(dataset: Dataset, example: Mapping[str, Any]) -> tuple[int, int]:
    """(height, width) of the frame of the example's boxes."""
    from ..data.features import get_box_frame

    return get_box_frame(dataset, example)


def predict_split(
    methods: Mapping[str, HeatmapMethod],
    dataset: Dataset,
    processor: ClarityImageProcessor,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    logits_only: Mapping[str, LogitsMethod] | None = None,
    state=None,
) -> dict[str, SplitPredictions]:
    """Run every method over every row of `dataset` (one decode and preprocessing per batch, shared by the
    methods). Returns method name -> predictions.

    With `state` (Accelerate's `PartialState` of a job launched as several processes, see
    `clarity_hf.distributed.process_state`), each process runs a contiguous share of the batches (the batches of one
    process, so each row meets the same batch neighbours) and every process returns the predictions of every row,
    in the split's order; the rows that wait for the teacher's stage choice are shared the same way when
    [`clarity_hf.evaluation.selection.select_stages`] runs on every process. Figures' further maps are computed by
    the process that asks for them.

    A method named in `logits_only` ([`logits_methods`]) gets its heatmaps only where they are read: on the rows
    with ground-truth boxes (localization and figures read nothing else); the other rows get their logits from the
    logits-only stand-in and NaN heatmaps. On NIH ChestX-ray14 that is 880 of 25,596 test images. A split without
    any boxed row is run whole.

    The teacher's Grad-CAM ([`TeacherGradCAM`]) named there goes further, to what the protocol reads:
    - on a boxed row only the classes of its boxes (the localization protocol thresholds no other class's map); the
      maps of the other classes are NaN;
    - with several stages to choose from and a `tune` half, every stage on the `tune` rows only; the other boxed
      rows wait for the choice ([`clarity_hf.evaluation.selection.select_stage`] computes them on the chosen stage
      only, and [`evaluate_predictions`] refuses predictions still waiting);
    - its CAM, when in `methods`, comes from the same forward pass (a no-grad pass on the rows without maps);
    - [`save_claims_figure`] computes the few further maps it shows (the claimed classes of its images);
      [`save_figure`] marks a map nobody computed as such.
    Every map it computes is bit-equal to the full computation's (all classes, all stages, every row)."""
    import time

    if len(dataset) == 0:
        raise ValueError("the split to evaluate is empty")
    for column in ("image", "labels"):
        if column not in dataset.column_names:
            raise ValueError(f"the split has no {column!r} column (columns: {dataset.column_names})")
    meta_columns = [
        c for c in ("image_id", "boxes", "original_size", "box_split") if c in dataset.column_names
    ]
    images = dataset.select_columns(["image"])
    if isinstance(images.features["image"], ImageFeature) and not images.features["image"].decode:
        images = images.cast_column("image", ImageFeature(decode=True))
    meta = dataset.select_columns(["labels", *meta_columns])
    rows = meta[:]
    n = len(dataset)
    boxes = rows.get("boxes", [[] for _ in range(n)])
    splits = [s or "" for s in rows.get("box_split", [""] * n)]
    boxed = np.asarray([bool(b) for b in boxes], dtype=bool)
    restricted = set(logits_only or {}) & set(methods) if boxed.any() else set()
    teachers = {name: m for name, m in methods.items() if isinstance(m, TeacherGradCAM)}
    label_names = _label_names(dataset)  # else the model's own label names
    # A teacher's CAM computed in its Grad-CAM pass is not run again.
    shared_cam = {
        m.cam_name for m in teachers.values() if m.cam is not None and methods.get(m.cam_name) is m.cam
    }
    plans = {
        name: _teacher_plan(
            m, name in restricted, boxes, boxed, splits, m.cam_name in shared_cam, label_names
        )
        for name, m in teachers.items()
    }
    # Keyed by output name (a method that returns a mapping yields several outputs, timed together): row -> array.
    logits: dict[str, dict[int, np.ndarray]] = {}
    heatmaps: dict[str, dict[int, np.ndarray]] = {}
    seconds: dict[str, float] = {}
    method_of: dict[str, str] = {}  # output name -> the method that produced it
    stand_in: dict[str, dict[int, np.ndarray]] = {}  # method -> row -> logits of its logits-only stand-in
    stand_in_seconds: dict[str, float] = {}

    def record(name: str, mapped: np.ndarray, output: Any, elapsed: float) -> None:
        # ModelOutputs are Mappings too: only a plain dict names several methods.
        outputs = (
            output if isinstance(output, dict) and not isinstance(output, ModelOutput) else {name: output}
        )
        for key, value in outputs.items():
            method_of[key] = name
            seconds[key] = seconds.get(key, 0.0) + elapsed
            key_logits, key_maps = logits.setdefault(key, {}), heatmaps.setdefault(key, {})
            for row, row_logits, row_maps in zip(
                mapped,
                value.logits.detach().float().cpu().numpy(),
                value.heatmaps.detach().float().cpu().numpy(),
            ):
                key_logits[int(row)], key_maps[int(row)] = row_logits, row_maps

    def timed(function: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
        began = time.perf_counter()
        output = function(*args, **kwargs)
        return output, time.perf_counter() - began

    def run(name: str, method: Callable[..., Any], mapped: np.ndarray, pixel_values, start: int, **kwargs):
        if len(mapped):
            record(name, mapped, *timed(method, pixel_values[torch.as_tensor(mapped - start)], **kwargs))

    starts = list(range(0, n, batch_size))
    if state is not None:
        with state.split_between_processes(starts) as mine:
            starts = mine
    for start in starts:
        stop = min(start + batch_size, n)
        batch_images = images[start:stop]["image"]
        pixel_values = processor(images=batch_images, return_tensors="pt")["pixel_values"].to(device)
        batch_rows = np.arange(start, stop)
        for name, method in methods.items():
            if name in shared_cam:
                continue
            if name in teachers:
                plan = plans[name]
                explained = batch_rows[plan["explain"][start:stop]]
                read = None if plan["read"] is None else torch.as_tensor(plan["read"][explained])
                run(name, method.explain, explained, pixel_values, start, read=read, cam=plan["cam"])
                without = batch_rows[plan["without_maps"][start:stop]]
                run(name, plan["without_maps_method"], without, pixel_values, start)
                continue
            mapped = batch_rows if name not in restricted else batch_rows[boxed[start:stop]]
            others = batch_rows[~boxed[start:stop]]
            if name in restricted and len(others):
                values, elapsed = timed(logits_only[name], pixel_values[torch.as_tensor(others - start)])
                stand_in_seconds[name] = stand_in_seconds.get(name, 0.0) + elapsed
                for row, value in zip(others, values.detach().float().cpu().numpy()):
                    stand_in.setdefault(name, {})[int(row)] = value
            run(name, method, mapped, pixel_values, start)
    shapes = {}
    if state is not None:
        logits, heatmaps, seconds, method_of, stand_in, stand_in_seconds, shapes = _gather_shards(
            logits, heatmaps, seconds, method_of, stand_in, stand_in_seconds
        )
    for key, name in method_of.items():
        if name in stand_in:  # the rows without boxes: stand-in logits, no maps (NaN below)
            logits[key].update(stand_in[name])
            seconds[key] += stand_in_seconds[name]
    labels = np.asarray(rows["labels"], dtype=np.float32)
    image_ids = rows.get("image_id", [str(i) for i in range(n)])
    frames = [
        _box_frame(dataset, {"original_size": size}) for size in rows.get("original_size", [(0, 0)] * n)
    ]
    result = {}
    for key in logits:
        # Rows without maps (NaN: nothing reads them) or without any output yet (waiting for the stage choice).
        width = next(iter(logits[key].values())).shape
        shape = shapes.get(key) or next(iter(heatmaps[key].values())).shape
        result[key] = SplitPredictions(
            logits=np.stack([logits[key].get(row, np.full(width, np.nan, np.float32)) for row in range(n)]),
            heatmaps=np.stack(
                [heatmaps[key].get(row, np.full(shape, np.nan, np.float32)) for row in range(n)]
            ),
            labels=labels,
            image_ids=list(image_ids),
            boxes=[list(b or []) for b in boxes],
            box_frames=frames,
            box_splits=splits,
            seconds=seconds[key],
        )
    loader = partial(_explain_rows, images=images, processor=processor, batch_size=batch_size, device=device)
    pending = loader if state is None else partial(_explain_shared, state=state, explain_rows=loader)
    for name, method in teachers.items():
        _attach_teacher_completion(method, plans[name], result, loader, explain_pending=pending)
    return result


def _gather_shards(logits, heatmaps, seconds, method_of, stand_in, stand_in_seconds):
    """Every process's outputs of [`predict_split`] merged on every process: row -> array tables joined, seconds
    summed (the compute time of all processes), and each output's map shape.

    `gather_object` rather than `gather_for_metrics` on tensors: each process holds a different number of rows per
    output (the teacher's Grad-CAM maps only on boxed rows, the rows waiting for the stage choice on none), a
    process may hold no row of an output at all, and the row indices travel with the values. A map that is NaN
    throughout (not computed: nothing reads it) does not travel; the merged predictions fill it in as NaN, as
    one process does."""
    from accelerate.utils import gather_object

    shards = gather_object(
        [
            {
                "rows": {
                    "logits": logits,
                    "heatmaps": {
                        key: {row: m for row, m in maps.items() if not np.isnan(m).all()}
                        for key, maps in heatmaps.items()
                    },
                    "stand_in": stand_in,
                },
                "seconds": {"seconds": seconds, "stand_in_seconds": stand_in_seconds},
                "method_of": method_of,
                "shapes": {key: next(iter(maps.values())).shape for key, maps in heatmaps.items() if maps},
            }
        ]
    )
    rows = {"logits": {}, "heatmaps": {}, "stand_in": {}}
    sums = {"seconds": {}, "stand_in_seconds": {}}
    method_of, shapes = {}, {}
    for shard in shards:
        for table, part in shard["rows"].items():
            for key, values in part.items():
                rows[table].setdefault(key, {}).update(values)
        for table, part in shard["seconds"].items():
            for key, value in part.items():
                sums[table][key] = sums[table].get(key, 0.0) + value
        method_of.update(shard["method_of"])
        shapes.update(shard["shapes"])
    return (
        rows["logits"],
        rows["heatmaps"],
        sums["seconds"],
        method_of,
        rows["stand_in"],
        sums["stand_in_seconds"],
        shapes,
    )


def _explain_shared(
    method: TeacherGradCAM,
    rows: np.ndarray,
    read: np.ndarray | None,
    stages: Sequence[int],
    cam: bool,
    state,
    explain_rows: Callable[..., dict[str, BaselineOutput]],
) -> dict[str, BaselineOutput]:
    """`explain_rows` on `rows` shared between the processes of `state` (a contiguous share each, every image
    explained on its own), the outputs of all rows on every process, in the order of `rows`."""
    from accelerate.utils import gather_object

    with state.split_between_processes(list(range(len(rows)))) as mine:
        part = slice(mine[0], mine[-1] + 1) if mine else slice(0, 0)
    outputs = {}
    if part.stop > part.start:
        found = explain_rows(method, rows[part], None if read is None else read[part], stages, cam)
        outputs = {
            key: (value.logits.detach().float().cpu().numpy(), value.heatmaps.detach().float().cpu().numpy())
            for key, value in found.items()
        }
    shards = [shard for shard in gather_object([outputs]) if shard]
    return {
        key: BaselineOutput(
            logits=torch.from_numpy(np.concatenate([shard[key][0] for shard in shards])),
            heatmaps=torch.from_numpy(np.concatenate([shard[key][1] for shard in shards])),
        )
        for key in shards[0]
    }


def _read_classes(
    boxes: Sequence[Sequence[Mapping[str, Any]] | None], class_names: Sequence[str]
) -> np.ndarray:
    """(N, C) bool: the classes of each row's ground-truth boxes (the maps the localization protocol reads)."""
    index = {name: c for c, name in enumerate(class_names)}
    read = np.zeros((len(boxes), len(class_names)), dtype=bool)
    for row, row_boxes in enumerate(boxes):
        for box in row_boxes or []:
            label = LABEL_ALIASES.get(str(box["label"]), str(box["label"]))
            if label in index:
                read[row, index[label]] = True
            else:  # a box of a class the model does not name: read every map of the row, as without restriction
                read[row] = True
                break
    return read


def _teacher_plan(
    method: TeacherGradCAM,
    restricted: bool,
    boxes: Sequence[Any],
    boxed: np.ndarray,
    splits: Sequence[str],
    cam: bool,
    label_names: Sequence[str] | None,
) -> dict[str, Any]:
    """Which rows a teacher's Grad-CAM explains now (with which classes), which get only logits and CAM, and which
    wait for the stage choice."""
    n = len(boxed)
    if not restricted:
        return {
            "explain": np.ones(n, bool),
            "read": None,
            "without_maps": np.zeros(n, bool),
            "deferred": np.zeros(n, bool),
            "cam": cam,
            "without_maps_method": None,
        }
    config = method.model.config
    names = label_names or [config.id2label[i] for i in range(config.num_labels)]
    tune = boxed & (np.asarray(splits) == "tune")
    # The stage is chosen on the tune half: the other boxed rows need the chosen stage only.
    deferred = boxed & ~tune if len(method.stages) > 1 and tune.any() else np.zeros(n, bool)

    def without_maps(pixel_values: torch.Tensor) -> dict[str, BaselineOutput]:
        outputs = method.without_maps(pixel_values)
        return outputs if cam else {k: v for k, v in outputs.items() if k != method.cam_name}

    return {
        "explain": boxed & ~deferred,
        "read": _read_classes(boxes, names),
        "without_maps": ~boxed,
        "deferred": deferred,
        "cam": cam,
        "without_maps_method": without_maps,
    }


def _explain_rows(
    method: TeacherGradCAM,
    rows: np.ndarray,
    read: np.ndarray | None,
    stages: Sequence[int],
    cam: bool,
    images: Dataset,
    processor: ClarityImageProcessor,
    batch_size: int,
    device: str | torch.device,
) -> dict[str, BaselineOutput]:
    """[`TeacherGradCAM.explain`] on some rows of a split, decoded and preprocessed as [`predict_split`] does."""
    parts = []
    for start in range(0, len(rows), batch_size):
        chunk = [int(r) for r in rows[start : start + batch_size]]
        pixel_values = processor(images=images[chunk]["image"], return_tensors="pt")["pixel_values"].to(
            device
        )
        part_read = None if read is None else torch.as_tensor(read[start : start + batch_size])
        parts.append(method.explain(pixel_values, part_read, stages=stages, cam=cam))
    return _concatenate(parts)


def _concatenate(parts: Sequence[Mapping[Any, BaselineOutput]]) -> dict[Any, BaselineOutput]:
    """Outputs of consecutive image chunks, key by key, as one output per key."""
    return {
        key: BaselineOutput(
            logits=torch.cat([part[key].logits for part in parts]),
            heatmaps=torch.cat([part[key].heatmaps for part in parts]),
        )
        for key in parts[0]
    }


def _attach_teacher_completion(
    method: TeacherGradCAM,
    plan: Mapping[str, Any],
    predictions: dict[str, SplitPredictions],
    explain_rows: Callable[..., dict[str, BaselineOutput]],
    explain_pending: Callable[..., dict[str, BaselineOutput]] | None = None,
) -> None:
    """Give a teacher's restricted outputs what completes them: `extra["pending"]` (stage -> None: the rows that waited
    for the stage choice, on that stage, with CAM, by `explain_pending`, default `explain_rows`) and, per stage,
    `extra["fill"]` (rows, (len(rows), C) bool -> None: further maps a figure shows)."""
    import time

    if plan["read"] is None:
        return
    cam_name = method.cam_name if plan["cam"] else None
    family = [method.output_name(stage) for stage in method.stages] + ([cam_name] if cam_name else [])
    deferred = np.flatnonzero(plan["deferred"])

    def complete(stage: int) -> None:
        began = time.perf_counter()
        outputs = (explain_pending or explain_rows)(
            method, deferred, plan["read"][deferred], [stage], cam_name is not None
        )
        elapsed = time.perf_counter() - began
        for key, value in outputs.items():
            target = predictions[key]
            target.logits[deferred] = value.logits.detach().float().cpu().numpy()
            target.heatmaps[deferred] = value.heatmaps.detach().float().cpu().numpy()
            target.seconds += elapsed
        for key in family:
            predictions[key].extra.pop("pending", None)

    def fill(stage: int, rows: Sequence[int], wanted: np.ndarray) -> None:
        target = predictions[method.output_name(stage)]
        rows = np.asarray(rows, dtype=np.int64)
        need = np.asarray(wanted, dtype=bool) & np.isnan(target.heatmaps[rows]).any(axis=(2, 3))
        wanted = need.any(axis=1)
        if not wanted.any():
            return
        began = time.perf_counter()
        output = explain_rows(method, rows[wanted], need[wanted], [stage], False)[method.output_name(stage)]
        maps = output.heatmaps.detach().float().cpu().numpy()
        for row, row_need, row_maps in zip(rows[wanted], need[wanted], maps):
            target.heatmaps[row, row_need] = row_maps[row_need]
        target.seconds += time.perf_counter() - began

    for stage in method.stages:
        extra = predictions[method.output_name(stage)].extra
        extra["fill"] = partial(fill, stage)
        if len(deferred):
            extra["pending"] = complete
    if cam_name and len(deferred):
        predictions[cam_name].extra["pending"] = complete


def localization_evaluator(
    predictions: SplitPredictions,
    class_names: Sequence[str],
    boxed_classes: Sequence[str] = NIH_BOXED_PATHOLOGIES,
) -> LocalizationEvaluator:
    """A `LocalizationEvaluator` holding every boxed row of `predictions` (with its `box_split`)."""
    boxed = [name for name in boxed_classes if name in class_names]
    evaluator = LocalizationEvaluator(class_names=list(class_names), boxed_classes=boxed)
    for i, boxes in enumerate(predictions.boxes):
        if boxes:
            evaluator.add(
                predictions.image_ids[i],
                predictions.heatmaps[i],
                boxes,
                predictions.box_frames[i],
                predictions.box_splits[i],
            )
    return evaluator


def evaluate_predictions(
    predictions: SplitPredictions,
    class_names: Sequence[str],
    boxed_classes: Sequence[str] = NIH_BOXED_PATHOLOGIES,
    per_class_thresholds: bool = False,
    n_bootstrap: int = 200,
    notes: str = "",
    map_info: Mapping[str, Any] | None = None,
) -> ModelEntry:
    """AUROC over every row, localization over the boxed rows (tuned on `tune`, reported on `eval`; when the split
    has no tune / eval halves, every boxed row is evaluated at the default threshold 0.5). The entry's `map` holds
    the heatmaps' grid ("h x w") and `map_info` (e.g. the chosen teacher stage)."""
    if predictions.extra.get("pending") is not None:
        raise ValueError(
            "these predictions wait for the teacher's stage choice (Grad-CAM computed on the tune half only): "
            "pass them through clarity_hf.evaluation.selection.select_stages first"
        )
    entry: ModelEntry = {
        "classification": compute_auroc(
            predictions.logits, predictions.labels, class_names=list(class_names), n_bootstrap=n_bootstrap
        ),
        "map": {"grid": map_grid(predictions.heatmaps), **dict(map_info or {})},
    }
    evaluator = localization_evaluator(predictions, class_names, boxed_classes)
    if len(evaluator):
        splits = set(predictions.box_splits)
        if {"tune", "eval"} <= splits:
            entry["localization"] = evaluator.tune_and_evaluate(
                per_class=per_class_thresholds, n_bootstrap=n_bootstrap
            )
        else:
            logger.warning(
                "no tune / eval halves in the split: localization at threshold 0.5 on every boxed image"
            )
            entry["localization"] = evaluator.compute(0.5, split=None)
    if notes:
        entry["notes"] = notes
    return entry


def reported_thresholds(entry: Mapping[str, Any]) -> dict[str, float] | float:
    """The heatmap threshold(s) an entry's localization used (tuned ones when tuned), for figures."""
    localization = entry.get("localization") or {}
    if "thresholds" in localization:
        return dict(localization["thresholds"])
    levels = localization.get("heatmap_thresholds") or {}
    return {name: float(v[0]) for name, v in levels.items()} if levels else 0.5


def figure_rows(predictions: SplitPredictions, max_images: int = 6, split: str = "eval") -> list[int]:
    """Rows for an overlay figure: boxed images of `split`, covering as many boxed classes as possible."""
    candidates = [
        i for i, b in enumerate(predictions.boxes) if b and predictions.box_splits[i] in (split, "")
    ]
    chosen, seen = [], set()
    for i in candidates:
        labels = {b["label"] for b in predictions.boxes[i]}
        if labels - seen:
            chosen.append(i)
            seen |= labels
        if len(chosen) == max_images:
            break
    for i in candidates:
        if len(chosen) >= max_images:
            break
        if i not in chosen:
            chosen.append(i)
    return chosen


def _fill_maps(predictions: SplitPredictions, rows: Sequence[int], wanted: np.ndarray) -> None:
    """Compute the maps `wanted` ((len(rows), C) bool) that `predict_split` left out (NaN: the evaluation did not
    read them) and a figure shows."""
    fill = predictions.extra.get("fill")
    if fill is not None:
        fill(rows, wanted)


def save_figure(
    path: str | Path,
    dataset: Dataset,
    predictions: SplitPredictions,
    class_names: Sequence[str],
    threshold: Any = 0.5,
    max_images: int = 6,
    tile_size: int = 160,
) -> Path | None:
    """The overlay grid (one row per boxed class, one column per image) of one method's heatmaps."""
    rows = figure_rows(predictions, max_images)
    if not rows:
        return None
    images = [dataset[int(i)]["image"] for i in rows]
    boxed = [name for name in NIH_BOXED_PATHOLOGIES if name in class_names]
    return save_overlay_grid(
        path,
        images,
        [predictions.heatmaps[i] for i in rows],
        boxes=[predictions.boxes[i] for i in rows],
        class_names=list(class_names),
        classes=boxed,
        threshold=threshold,
        tile_size=tile_size,
        image_ids=[predictions.image_ids[i] for i in rows],
    )


def save_claims_figure(
    path: str | Path,
    dataset: Dataset,
    predictions: SplitPredictions,
    class_names: Sequence[str],
    operating_thresholds: Mapping[str, float],
    threshold: Any = 0.5,
    max_images: int = 6,
    tile_size: int = 192,
    method: str = "model",
) -> Path | None:
    """What the model says on the figure's images (the rows of [`figure_rows`]): the boxed classes whose probability
    reaches their operating threshold, with boxes and probabilities, beside the ground truth."""
    rows = figure_rows(predictions, max_images)
    if not rows:
        return None
    boxed = [name for name in NIH_BOXED_PATHOLOGIES if name in class_names]
    probabilities = sigmoid(predictions.logits)
    # The figure reads the maps of the claimed classes (probability at or above the operating threshold).
    claimed = np.zeros((len(rows), len(class_names)), dtype=bool)
    for name in boxed:
        c = list(class_names).index(name)
        claimed[:, c] = probabilities[rows, c] >= operating_thresholds[name]
    _fill_maps(predictions, rows, claimed)
    return save_prediction_figure(
        path,
        [dataset[int(i)]["image"] for i in rows],
        [probabilities[i] for i in rows],
        [predictions.heatmaps[i] for i in rows],
        [predictions.boxes[i] for i in rows],
        {name: operating_thresholds[name] for name in boxed},
        class_names=list(class_names),
        classes=boxed,
        threshold=threshold,
        tile_size=tile_size,
        image_ids=[predictions.image_ids[i] for i in rows],
        method=method,
    )


def write_evaluation(
    output_dir: str | Path,
    entries: Mapping[str, ModelEntry],
    metadata: Mapping[str, Any] | None = None,
    title: str = "CLARiTy evaluation",
    extra_markdown: str = "",
    extra_json: Mapping[str, Any] | None = None,
    overview: str = "",
) -> dict[str, Path]:
    """`report.json` + `report.md` (the evaluation package's report, `overview` first) with optional extra
    sections appended."""
    paths = write_report(output_dir, entries, title=title, metadata=metadata, overview=overview)
    if extra_json:
        report = json.loads(paths["json"].read_text(encoding="utf-8"))
        report.update(jsonable(extra_json))
        paths["json"].write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    if extra_markdown:
        with open(paths["markdown"], "a", encoding="utf-8") as handle:
            handle.write("\n" + extra_markdown.rstrip() + "\n")
    return paths
