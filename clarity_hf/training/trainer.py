# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""One Accelerate training loop for both stages: the ConvNeXtV2 teacher (a model without a teacher) and the
CLARiTy student (optionally distilled from a frozen teacher or from cached teacher logits).

    result = train(ClarityTrainingConfig(model="clarity", output_dir="runs/tiny", max_steps=300))

Layout of `output_dir`: `checkpoints/checkpoint-N` (Accelerate states, atomic, at most `save_total_limit`),
`best_model/` (`save_pretrained` folder of the best validation mean AUROC, with its `ClarityImageProcessor`),
`logs/` (TensorBoard and `metrics.jsonl`), `train_result.json`, and the run's `run.json` (run id, config hash) and
`run.lock` (see `run_folder.py`: one run per folder, no stale run resumed, metrics never repeated).

The loop below reads top to bottom: build (data, models, loaders, schedule), resume, then per epoch the optimizer
steps, the evaluation, the best model and the checkpoint. The state that a checkpoint carries is `TrainState`.

Exact resume: the data order and augmentation depend only on (seed, epoch, sample index) (see `data.py`); the
checkpoint stores model, optimizer, scheduler, scaler and every process's RNG states (Accelerate) plus the epoch and
the number of batches consumed in it (`training_state.json`); resuming skips those batches with
`accelerator.skip_first_batches`, so the continued run is bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import ProjectConfiguration, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..configuration_clarity import NIH_PATHOLOGIES
from ..evaluation.classification import compute_auroc
from ..files import atomic_write_text, fsync_tree
from ..image_processing_clarity import ClarityImageProcessor
from .arguments import ClarityTrainingConfig
from .checkpointing import save_checkpoint
from .data import (
    SKIP_KINDS,
    ClarityTrainingDataset,
    EpochSeededSampler,
    balanced_pos_weight,
    count_problems,
    eval_collator,
    get_dataset_label_names,
    load_datasets,
    prior_logits,
    train_collator,
)
from .models import build_model, freeze, head_is_new, init_classifier_bias, load_teacher, set_pos_weight
from .optim import create_optimizer, create_scheduler
from .preprocessing import run_processor
from .run_folder import BEST_MODEL, RunFolder, TrainState, check_output_dir
from .trackers import JSONLTracker

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped before `backward` and left the checkpoints untouched."""


@dataclass
class TrainResult:
    output_dir: str
    best_model_dir: str | None
    best_mean_auroc: float | None
    best_per_class_auroc: dict = field(default_factory=dict)
    best_epoch: int | None = None
    global_step: int = 0
    last_checkpoint: str | None = None
    skipped: dict = field(default_factory=dict)
    skipped_files: list = field(default_factory=list)
    history: list = field(default_factory=list)
    num_eval_samples: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def _flat_config(config: ClarityTrainingConfig) -> dict:
    """TensorBoard's hparams accept scalars and strings only."""
    flat = {}
    for key, value in config.to_dict().items():
        flat[key] = value if isinstance(value, (int, float, str, bool)) else json.dumps(value)
    return flat


def _reads_anatomy_masks(model) -> bool:
    """Only CLARiTy's foreground loss (SegmentCAM on) reads the anatomy masks: the teacher, the plain-ViT baseline
    and an ablation without SegmentCAM never do, so they never read them (nor lose an image to a bad one)."""
    config = model.config
    return (
        getattr(config, "model_type", None) == "clarity"
        and bool(getattr(config, "use_segment_cam", False))
        and getattr(config, "foreground_loss_weight", 0) > 0
    )


def _model_inputs(model, batch: dict, teacher_logits: torch.Tensor | None) -> dict:
    inputs = {"pixel_values": batch["pixel_values"], "labels": batch["labels"]}
    if getattr(model.config, "model_type", None) == "clarity":
        if "anatomy_masks" in batch:
            inputs["anatomy_masks"] = batch["anatomy_masks"]
        if teacher_logits is not None:
            inputs["teacher_logits"] = teacher_logits
    return inputs


def _trackers(config: ClarityTrainingConfig, logging_dir: str) -> list:
    trackers = []
    for name in config.report_to:
        if name == "jsonl":
            trackers.append(JSONLTracker(config.tracker_project_name, logging_dir))
        elif name == "tensorboard":
            from accelerate.utils import is_tensorboard_available

            if is_tensorboard_available():
                trackers.append("tensorboard")
            else:
                logger.warning("tensorboard is not installed: metrics go to metrics.jsonl only")
        elif name not in ("none", ""):
            trackers.append(name)
    return trackers


def _report(accelerator: Accelerator, message: str) -> None:
    """A progress line, logged at INFO by the main process only (one line per run, not one per process)."""
    if accelerator.is_main_process:
        logger.info(message)


def _save_best(accelerator: Accelerator, model, output_dir: Path, processor: ClarityImageProcessor) -> Path:
    """`best_model/`: the unwrapped model's `save_pretrained` (weights, config; for CLARiTy a complete folder:
    `auto_map`, `custom_pipelines` and the Hub code files) and the run's `ClarityImageProcessor` (`run_processor`:
    the pixels training fed the model). Written next to it and swapped in, so a kill leaves the previous best model
    or the new one. The model card is written at export time, not here."""
    target = output_dir / BEST_MODEL
    temporary, previous = output_dir / ".tmp-best_model", output_dir / ".old-best_model"
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
        shutil.rmtree(previous, ignore_errors=True)
        unwrapped = accelerator.unwrap_model(model)
        unwrapped.save_pretrained(temporary, safe_serialization=True)
        processor.save_pretrained(temporary)
        fsync_tree(temporary)
        if target.exists():
            os.replace(target, previous)
        os.replace(temporary, target)
        shutil.rmtree(previous, ignore_errors=True)
    accelerator.wait_for_everyone()
    return target


def _forget_previous_precision(mixed_precision: str) -> None:
    """Let a second `train` in the same single process use another `mixed_precision`: Accelerate keeps the first
    run's choice in a process-wide state and refuses a different one. Distributed runs are left alone."""
    from accelerate.state import AcceleratorState

    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") not in (None, mixed_precision):
        if int(os.environ.get("WORLD_SIZE", "1")) == 1:
            AcceleratorState._reset_state()


def _make_accelerator(config: ClarityTrainingConfig, output_dir: Path) -> Accelerator:
    logging_dir = output_dir / "logs"
    # Accelerate runs several CPU processes (torchrun, MULTI_CPU over gloo) only when told `cpu=True`.
    multi_process_cpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    _forget_previous_precision(config.mixed_precision)
    return Accelerator(
        cpu=config.use_cpu or multi_process_cpu,
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        log_with=_trackers(config, str(logging_dir)),
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(logging_dir)),
        dataloader_config=DataLoaderConfiguration(even_batches=True),
        step_scheduler_with_optimizer=False,
    )


def _prepare_models(config, accelerator, datasets, model, teacher):
    """The student (or teacher-to-train) with its label prior and pos_weight, and the frozen teacher (None when
    distillation is off or served from cached logits). Returns (model, teacher, label_names, distillation_weight)."""
    label_names = config.label_names or get_dataset_label_names(datasets) or list(NIH_PATHOLOGIES)
    new_head = model is not None or head_is_new(config, label_names)
    if model is None:
        model = build_model(config, label_names)
    train_split = datasets[config.train_split]
    if config.pos_weight == "balanced":
        set_pos_weight(model, balanced_pos_weight(train_split, config.train_split))
    if config.classifier_bias_init == "prior" and new_head:
        init_classifier_bias(model, prior_logits(train_split, getattr(model.config, "pos_weight", None)))
    model_labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if model_labels != list(label_names):
        raise ValueError(f"the model predicts {model_labels} but the data has labels {label_names}")

    distillation_weight = (
        getattr(model.config, "distillation_loss_weight", 0.0) if config.model == "clarity" else 0.0
    )
    use_teacher = distillation_weight > 0 and not config.use_cached_teacher_logits
    if use_teacher and teacher is None:
        if config.teacher_name_or_path:
            teacher = load_teacher(config.teacher_name_or_path, label_names)
        else:
            logger.warning("distillation_loss_weight > 0 but no teacher given: training without distillation")
            use_teacher = False
    teacher = freeze(teacher).to(accelerator.device) if use_teacher else None  # else never run, never moved
    return model, teacher, label_names, distillation_weight


def _make_loaders(
    config, datasets, processor: ClarityImageProcessor, with_teacher_logits: bool, with_anatomy_masks: bool
):
    # Decoded samples are kept only where they are loaded in this process; the anatomy masks are read only for the
    # training split of a model whose loss uses them (the evaluation never does).
    memory_mb = config.decoded_memory_mb if config.dataloader_num_workers == 0 else 0
    train_set = ClarityTrainingDataset(
        datasets[config.train_split],
        processor,
        config,
        augment=config.augment,
        with_teacher_logits=with_teacher_logits,
        name=config.train_split,
        with_anatomy_masks=with_anatomy_masks,
        memory_mb=memory_mb,
        augment_on=config.augment_on,
    )
    eval_set = ClarityTrainingDataset(
        datasets[config.validation_split],
        processor,
        config,
        name=config.validation_split,
        with_anatomy_masks=False,
        memory_mb=memory_mb,
    )
    sampler = EpochSeededSampler(len(train_set), config.seed, shuffle=True)
    train_loader = DataLoader(
        train_set,
        batch_size=config.per_device_train_batch_size,
        sampler=sampler,
        collate_fn=train_collator(),
        num_workers=config.dataloader_num_workers,
        generator=torch.Generator().manual_seed(config.seed),
    )
    eval_loader = DataLoader(
        eval_set,
        batch_size=config.per_device_eval_batch_size,
        shuffle=False,
        collate_fn=eval_collator(),
        num_workers=config.dataloader_num_workers,
        generator=torch.Generator().manual_seed(config.seed),
    )
    return train_set, sampler, train_loader, eval_loader


@dataclass
class _Schedule:
    batches_per_epoch: int
    steps_per_epoch: int
    total_steps: int
    num_epochs: int
    warmup_steps: int


def _schedule(config, num_train: int, num_processes: int) -> _Schedule:
    batches_per_epoch = math.ceil(num_train / (config.per_device_train_batch_size * num_processes))
    steps_per_epoch = math.ceil(batches_per_epoch / config.gradient_accumulation_steps)
    total_steps = config.max_steps if config.max_steps > 0 else steps_per_epoch * config.num_train_epochs
    return _Schedule(
        batches_per_epoch=batches_per_epoch,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        num_epochs=math.ceil(total_steps / steps_per_epoch),
        warmup_steps=int(config.warmup_epochs * steps_per_epoch) + config.warmup_steps,
    )


def _teacher_logits(config, accelerator, teacher, batch) -> torch.Tensor | None:
    """The frozen teacher's logits on the student's view (resized to `teacher_image_size`), or the cached ones."""
    if teacher is None:
        return batch.get("teacher_logits")
    pixels = batch["pixel_values"]
    if config.teacher_image_size and config.teacher_image_size != pixels.shape[-1]:
        pixels = F.interpolate(
            pixels, size=(config.teacher_image_size,) * 2, mode="bilinear", align_corners=False
        )
    with torch.no_grad(), accelerator.autocast():
        return teacher(pixel_values=pixels).logits.float()


LOSS_TERMS = ("classification_loss", "distillation_loss", "orthogonal_loss", "foreground_loss")


class _LossWindow:
    """Running means of the loss and its terms between two log lines, and the images per second."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.loss, self.terms, self.count = 0.0, {}, 0
        self.start, self.images = time.perf_counter(), 0

    def add(self, loss: torch.Tensor, outputs, images: int) -> None:
        self.loss += loss.detach().float().item()
        self.count += 1
        for name in LOSS_TERMS:
            term = getattr(outputs, name, None)
            if term is not None:
                self.terms[name] = self.terms.get(name, 0.0) + term.detach().float().item()
        self.images += images

    def log(self, accelerator, scheduler, progress, epoch: int, step: int) -> None:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        values = torch.tensor([self.loss / self.count], device=accelerator.device)
        mean_loss = accelerator.reduce(values, reduction="mean").item()
        logs = {
            "train/loss": mean_loss,
            "train/lr": scheduler.get_last_lr()[0],
            "train/images_per_second": self.images / elapsed,
            "train/epoch": epoch,
        }
        logs.update({f"train/{k}": v / self.count for k, v in self.terms.items()})
        accelerator.log(logs, step=step)
        progress.set_postfix(loss=f"{mean_loss:.4f}", img_s=f"{self.images / elapsed:.1f}")
        self.reset()


def train(
    config: ClarityTrainingConfig,
    model: torch.nn.Module | None = None,
    teacher: torch.nn.Module | None = None,
    datasets=None,
) -> TrainResult:
    """Train `config.model` on `config.dataset` (or the given `model` / `teacher` / `datasets`) and return the
    best validation AUROC, the output paths and the skipped-image counts. See the module docstring. A given `model`
    counts as new for `classifier_bias_init: prior` (its head biases are set to the label prior); pass
    `classifier_bias_init="none"` to keep a trained head."""
    output_dir = check_output_dir(config.output_dir)  # before any data or model is built
    accelerator = _make_accelerator(config, output_dir)
    with RunFolder(config, accelerator.is_main_process) as run:
        accelerator.wait_for_everyone()  # the main process has claimed (or cleared) the folder
        return _train(config, accelerator, run, model, teacher, datasets)


def _train(config, accelerator: Accelerator, run: RunFolder, model, teacher, datasets) -> TrainResult:
    """Build (data, models, loaders, schedule), resume, then run the epochs."""
    set_seed(config.seed)
    if datasets is None:
        with accelerator.main_process_first():
            datasets = load_datasets(config)
    model, teacher, label_names, distillation_weight = _prepare_models(
        config, accelerator, datasets, model, teacher
    )
    processor = run_processor(config, model.config.image_size, report=partial(_report, accelerator))
    train_set, sampler, train_loader, eval_loader = _make_loaders(
        config,
        datasets,
        processor,
        with_teacher_logits=config.use_cached_teacher_logits and distillation_weight > 0,
        with_anatomy_masks=_reads_anatomy_masks(model),
    )
    global_batch = (
        config.per_device_train_batch_size * accelerator.num_processes * config.gradient_accumulation_steps
    )
    learning_rate = (
        config.learning_rate * global_batch / 512 if config.scale_lr_with_batch_size else config.learning_rate
    )
    optimizer = create_optimizer(model, config, learning_rate)
    schedule = _schedule(config, len(train_set), accelerator.num_processes)
    scheduler = create_scheduler(optimizer, schedule.warmup_steps, schedule.total_steps)
    model, optimizer, train_loader, eval_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, eval_loader, scheduler
    )
    assert len(train_loader) == schedule.batches_per_epoch, (len(train_loader), schedule.batches_per_epoch)

    # ---------------------------------------------------------------- resume
    state, last_checkpoint = run.new_state(), None
    state.skipped = dict.fromkeys(SKIP_KINDS, 0)
    checkpoint = run.resume_checkpoint()
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        state = TrainState.from_checkpoint(checkpoint)
        state.run_id, state.config_hash = run.run_id, run.config_hash
        last_checkpoint = str(checkpoint)
        if state.batches_in_epoch >= schedule.batches_per_epoch:
            state.epoch, state.batches_in_epoch = state.epoch + 1, 0
        _report(
            accelerator,
            f"resumed from {checkpoint}: step {state.global_step}, epoch {state.epoch}, batch {state.batches_in_epoch}",
        )
    run.cut_metrics(state.global_step)
    accelerator.init_trackers(config.tracker_project_name, config=_flat_config(config))

    loop = _Loop(
        config=config,
        accelerator=accelerator,
        run=run,
        model=model,
        teacher=teacher,
        optimizer=optimizer,
        scheduler=scheduler,
        train_set=train_set,
        sampler=sampler,
        train_loader=train_loader,
        eval_loader=eval_loader,
        label_names=label_names,
        schedule=schedule,
        state=state,
        processor=processor,
        last_checkpoint=last_checkpoint,
    )
    start_epoch, batches_done = state.epoch, state.batches_in_epoch
    for epoch in range(start_epoch, schedule.num_epochs):
        if loop.done:
            break
        batch_in_epoch, skipped = loop.train_epoch(epoch, skip=batches_done if epoch == start_epoch else 0)
        loop.end_epoch(epoch, batch_in_epoch, skipped)
        batches_done = 0
    loop.progress.close()

    result = TrainResult(
        output_dir=str(run.path),
        best_model_dir=str(run.path / BEST_MODEL)
        if state.best_mean_auroc is not None and config.save_best_model
        else None,
        best_mean_auroc=state.best_mean_auroc,
        best_per_class_auroc=state.best_per_class_auroc,
        best_epoch=state.best_epoch,
        global_step=state.global_step,
        last_checkpoint=loop.last_checkpoint,
        skipped=state.skipped,
        skipped_files=state.skipped_files,
        history=state.history,
        num_eval_samples=loop.num_eval_samples,
    )
    if accelerator.is_main_process:
        atomic_write_text(run.path / "train_result.json", json.dumps(result.to_dict(), indent=2, default=str))
    accelerator.end_training()
    return result


@dataclass
class _Loop:
    """The prepared objects of one run and its `TrainState`: one epoch of optimizer steps (`train_epoch`), then the
    epoch's end (`end_epoch`: skipped images, evaluation, best model, checkpoint)."""

    config: ClarityTrainingConfig
    accelerator: Accelerator
    run: RunFolder
    model: torch.nn.Module
    teacher: torch.nn.Module | None
    optimizer: torch.optim.Optimizer
    scheduler: object
    train_set: ClarityTrainingDataset
    sampler: EpochSeededSampler
    train_loader: DataLoader
    eval_loader: DataLoader
    label_names: list
    schedule: _Schedule
    state: TrainState
    processor: ClarityImageProcessor
    last_checkpoint: str | None = None
    num_eval_samples: int = 0

    def __post_init__(self):
        self.progress = tqdm(
            total=self.schedule.total_steps,
            initial=self.state.global_step,
            disable=self.config.disable_tqdm or not self.accelerator.is_local_main_process,
            desc="train",
            dynamic_ncols=True,
        )

    @property
    def done(self) -> bool:
        return self.state.global_step >= self.schedule.total_steps

    def checkpoint(self, epoch: int, batches_in_epoch: int) -> None:
        state = self.state
        state.epoch, state.batches_in_epoch = epoch, batches_in_epoch
        path = save_checkpoint(
            self.accelerator,
            self.run.path,
            state.global_step,
            state.to_checkpoint(),
            self.config.save_total_limit,
        )
        self.last_checkpoint = str(path)

    def train_epoch(self, epoch: int, skip: int) -> tuple[int, tuple[torch.Tensor, list[str]]]:
        """Optimizer steps over epoch `epoch` (its first `skip` batches were consumed before a resume) until its end
        or `total_steps`; returns the batches consumed and the unreadable images met (counts by kind, names)."""
        accelerator, config, schedule = self.accelerator, self.config, self.schedule
        self.sampler.epoch = epoch
        self.train_set.epoch = epoch
        loader = accelerator.skip_first_batches(self.train_loader, skip) if skip else self.train_loader
        self.model.train()
        skipped = torch.zeros(len(SKIP_KINDS), dtype=torch.long, device=accelerator.device)
        skipped_files: list[str] = []
        window = _LossWindow()
        batch_in_epoch = skip
        for batch in loader:
            batch = self.train_set.finish_batch(batch)  # augment_on: device augments the batch here
            batch_in_epoch += 1
            skipped += count_problems(batch["problems"]).to(skipped.device)
            skipped_files.extend(batch["problems"])
            local_images = batch["pixel_values"].shape[0]
            # Every process takes the same branch: skip the step everywhere if one process has no valid image.
            if accelerator.gather(torch.tensor([local_images == 0], device=accelerator.device)).any().item():
                continue
            loss, outputs = self.forward_backward(batch, epoch, batch_in_epoch)
            window.add(loss, outputs, local_images * accelerator.num_processes)
            if not accelerator.sync_gradients and batch_in_epoch < schedule.batches_per_epoch:
                continue
            self.state.global_step += 1
            step = self.state.global_step
            self.progress.update(1)
            if window.count and (step % config.logging_steps == 0 or step == schedule.total_steps):
                window.log(accelerator, self.scheduler, self.progress, epoch, step)
            end_of_epoch = batch_in_epoch >= schedule.batches_per_epoch
            if (
                config.checkpointing_steps
                and step % config.checkpointing_steps == 0
                and not (end_of_epoch or self.done)
            ):
                self.checkpoint(epoch, batch_in_epoch)
            if self.done:
                break
        return batch_in_epoch, (skipped, skipped_files)

    def forward_backward(self, batch: dict, epoch: int, batch_in_epoch: int):
        """One micro-batch: forward (with the teacher's logits), a finite-loss check on every process, backward,
        and the optimizer / scheduler step when the gradients are synchronised."""
        accelerator, model, optimizer = self.accelerator, self.model, self.optimizer
        with accelerator.accumulate(model):
            teacher_logits = _teacher_logits(self.config, accelerator, self.teacher, batch)
            outputs = model(**_model_inputs(accelerator.unwrap_model(model), batch, teacher_logits))
            loss = outputs.loss
            if not accelerator.gather(torch.isfinite(loss.detach()).reshape(1)).all().item():
                accelerator.end_training()
                raise NonFiniteLossError(
                    f"non-finite loss ({loss.item()}) at epoch {epoch}, optimizer step {self.state.global_step + 1}, "
                    f"batch {batch_in_epoch}; stopped before backward. Last good checkpoint: "
                    f"{self.last_checkpoint or 'none'}. Lower learning_rate, use bf16 instead of fp16, or check the "
                    "data."
                )
            accelerator.backward(loss)
            if accelerator.sync_gradients and self.config.max_grad_norm > 0:
                accelerator.clip_grad_norm_(model.parameters(), self.config.max_grad_norm)
            optimizer.step()
            if accelerator.sync_gradients:
                self.scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        return loss, outputs

    def end_epoch(self, epoch: int, batch_in_epoch: int, skipped: tuple[torch.Tensor, list[str]]) -> None:
        """Count the epoch's unreadable images, evaluate, save the best model when the mean AUROC improved, and
        write the epoch's checkpoint."""
        state, accelerator = self.state, self.accelerator
        record = {
            "epoch": epoch,
            "global_step": state.global_step,
            "skipped": _count_skipped(accelerator, state, epoch, *skipped),
        }
        if self.config.eval_every_epoch:
            metrics = evaluate(accelerator, self.model, self.eval_loader, self.label_names)
            self.num_eval_samples = metrics["num_samples"]
            record.update(
                mean_auroc=metrics["mean_auroc"],
                per_class_auroc=metrics["per_class"],
                eval_skipped=metrics["num_invalid"],
            )
            _log_evaluation(accelerator, metrics, record["skipped"], epoch, state.global_step)
            improved = not math.isnan(metrics["mean_auroc"]) and (
                state.best_mean_auroc is None or metrics["mean_auroc"] > state.best_mean_auroc
            )
            if improved:
                state.best_mean_auroc, state.best_per_class_auroc = (
                    metrics["mean_auroc"],
                    metrics["per_class"],
                )
                state.best_epoch = epoch
                if self.config.save_best_model:
                    _save_best(accelerator, self.model, self.run.path, self.processor)
            self.model.train()
        state.history.append(record)
        self.checkpoint(epoch, batch_in_epoch)


def _count_skipped(accelerator, state: TrainState, epoch: int, epoch_skipped, epoch_files) -> dict:
    """Sum the epoch's unreadable training images over processes into `state`; returns the epoch's counts."""
    epoch_skipped = accelerator.reduce(epoch_skipped, reduction="sum").cpu()
    gathered_files = _gather_strings(accelerator, epoch_files)
    counts = {kind: int(count) for kind, count in zip(SKIP_KINDS, epoch_skipped.tolist())}
    for kind, count in counts.items():
        state.skipped[kind] = state.skipped.get(kind, 0) + count
    state.skipped_files.extend(f for f in gathered_files if f not in state.skipped_files)
    if any(counts.values()):
        _report(
            accelerator,
            f"epoch {epoch}: skipped {sum(counts.values())} unreadable training image(s) {counts}: "
            + "; ".join(gathered_files[:5]),
        )
    return counts


def _log_evaluation(accelerator, metrics: dict, skipped: dict, epoch: int, step: int) -> None:
    log_values = {
        "eval/mean_auroc": metrics["mean_auroc"],
        "eval/num_samples": metrics["num_samples"],
        "eval/num_invalid": metrics["num_invalid"],
    }
    log_values.update({f"eval/auroc/{k}": v for k, v in metrics["per_class"].items()})
    log_values.update({f"train/skipped_{k}": v for k, v in skipped.items()})
    accelerator.log(log_values, step=step)
    _report(
        accelerator,
        f"epoch {epoch} step {step}: validation mean AUROC {metrics['mean_auroc']:.4f} "
        f"on {metrics['num_samples']} images ({metrics['num_invalid']} unreadable)",
    )


def _gather_strings(accelerator: Accelerator, items: list[str]) -> list[str]:
    if accelerator.num_processes == 1:
        return list(items)
    from accelerate.utils import gather_object

    return list(gather_object(list(items)))


@torch.no_grad()
def evaluate(accelerator: Accelerator, model, eval_loader, label_names: list[str]) -> dict:
    """Per-class and mean AUROC over the validation split (`clarity_hf.evaluation.compute_auroc`, no bootstrap);
    each sample counted once (`gather_for_metrics`), unreadable images left out. A class whose validation labels
    are all 0 or all 1 has no AUROC (NaN) and is left out of the mean."""
    model.eval()
    all_scores, all_labels, all_valid = [], [], []
    for batch in eval_loader:
        logits = model(pixel_values=batch["pixel_values"]).logits.float()
        scores, labels, valid = accelerator.gather_for_metrics(
            (torch.sigmoid(logits), batch["labels"], batch["valid"])
        )
        all_scores.append(scores.cpu())
        all_labels.append(labels.cpu())
        all_valid.append(valid.cpu())
    scores, labels, valid = torch.cat(all_scores), torch.cat(all_labels), torch.cat(all_valid)
    auroc = compute_auroc(scores[valid].numpy(), labels[valid].numpy(), label_names, n_bootstrap=0)
    return {
        "per_class": {name: auroc["per_class"][name]["auroc"] for name in label_names},
        "mean_auroc": auroc["mean_auroc"],
        "num_defined": auroc["n_classes_in_mean"],
        "num_samples": int(valid.numel()),
        "num_invalid": int((~valid).sum()),
        "scores": scores.numpy(),
        "labels": labels.numpy(),
    }


__all__ = ["train", "evaluate", "TrainResult", "NonFiniteLossError"]
