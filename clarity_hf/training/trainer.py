# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""One Accelerate training loop for both stages: the ConvNeXtV2 teacher (a model without a teacher) and the
CLARiTy student (optionally distilled from a frozen teacher or from cached teacher logits).

    result = train(ClarityTrainingConfig(model="clarity", output_dir="runs/tiny", max_steps=300))

Layout of `output_dir`: `checkpoints/checkpoint-N` (Accelerate states, atomic, at most `save_total_limit`),
`best_model/` (Hub-ready folder of the best validation mean AUROC, with its `ClarityImageProcessor`),
`logs/` (TensorBoard and `metrics.jsonl`), `train_result.json`.

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
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import ProjectConfiguration, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..configuration_clarity import NIH_PATHOLOGIES
from ..data.transforms import build_processor
from ..evaluation.classification import compute_auroc
from .arguments import ClarityTrainingConfig
from .checkpointing import read_training_state, resolve_resume_path, save_checkpoint
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


def _export_best(accelerator: Accelerator, model, output_dir: Path, config: ClarityTrainingConfig) -> Path:
    """Hub-ready folder of the unwrapped model and its `ClarityImageProcessor` (the run's size, mean and std),
    written next to `best_model/` and then renamed over it. A CLARiTy model goes through
    `clarity_hf.hub.save_for_hub` (weights, code files, `auto_map`, model card); the ConvNeXtV2 teacher, a native
    transformers model, through `save_pretrained`."""
    target = output_dir / "best_model"
    temporary = output_dir / ".tmp-best_model"
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
        unwrapped = accelerator.unwrap_model(model)
        size = (
            getattr(unwrapped.config, "image_size", None) or config.image_size or config.synthetic_image_size
        )
        processor = build_processor(
            size,
            config.image_mean,
            config.image_std,
            id2label={int(k): v for k, v in unwrapped.config.id2label.items()},
        )
        if getattr(unwrapped.config, "model_type", None) == "clarity":
            from ..hub import save_for_hub

            save_for_hub(unwrapped, processor, temporary)
        else:
            unwrapped.save_pretrained(temporary, safe_serialization=True)
            processor.save_pretrained(temporary)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(temporary, target)
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


def _update_steps_per_epoch(num_batches: int, accumulation: int) -> int:
    return math.ceil(num_batches / accumulation)


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
    if config.output_dir is None:
        raise ValueError("output_dir is required")
    output_dir = Path(config.output_dir)
    logging_dir = output_dir / "logs"
    # Accelerate runs several CPU processes (torchrun, MULTI_CPU over gloo) only when told `cpu=True`.
    multi_process_cpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    _forget_previous_precision(config.mixed_precision)
    accelerator = Accelerator(
        cpu=config.use_cpu or multi_process_cpu,
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        log_with=_trackers(config, str(logging_dir)),
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(logging_dir)),
        dataloader_config=DataLoaderConfiguration(even_batches=True),
        step_scheduler_with_optimizer=False,
    )
    set_seed(config.seed)

    # ---------------------------------------------------------------- data, model, teacher
    if datasets is None:
        with accelerator.main_process_first():
            datasets = load_datasets(config)
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
    image_size = model.config.image_size

    distillation_weight = (
        getattr(model.config, "distillation_loss_weight", 0.0) if config.model == "clarity" else 0.0
    )
    use_teacher = distillation_weight > 0 and not config.use_cached_teacher_logits
    if distillation_weight > 0 and not config.use_cached_teacher_logits and teacher is None:
        if config.teacher_name_or_path:
            teacher = load_teacher(config.teacher_name_or_path, label_names)
        else:
            logger.warning("distillation_loss_weight > 0 but no teacher given: training without distillation")
            use_teacher = False
    if not use_teacher:
        teacher = None  # never run, never moved to a device
    if teacher is not None:
        teacher = freeze(teacher).to(accelerator.device)

    train_set = ClarityTrainingDataset(
        datasets[config.train_split],
        image_size,
        config,
        augment=config.augment,
        with_teacher_logits=config.use_cached_teacher_logits and distillation_weight > 0,
        name=config.train_split,
    )
    eval_set = ClarityTrainingDataset(
        datasets[config.validation_split], image_size, config, name=config.validation_split
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

    # ---------------------------------------------------------------- optimisation
    from .optim import create_optimizer, create_scheduler

    global_batch = (
        config.per_device_train_batch_size * accelerator.num_processes * config.gradient_accumulation_steps
    )
    learning_rate = (
        config.learning_rate * global_batch / 512 if config.scale_lr_with_batch_size else config.learning_rate
    )
    optimizer = create_optimizer(model, config, learning_rate)
    batches_per_epoch = math.ceil(
        len(train_set) / (config.per_device_train_batch_size * accelerator.num_processes)
    )
    steps_per_epoch = _update_steps_per_epoch(batches_per_epoch, config.gradient_accumulation_steps)
    total_steps = config.max_steps if config.max_steps > 0 else steps_per_epoch * config.num_train_epochs
    num_epochs = math.ceil(total_steps / steps_per_epoch)
    warmup_steps = int(config.warmup_epochs * steps_per_epoch) + config.warmup_steps
    scheduler = create_scheduler(optimizer, warmup_steps, total_steps)

    model, optimizer, train_loader, eval_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, eval_loader, scheduler
    )
    assert len(train_loader) == batches_per_epoch, (len(train_loader), batches_per_epoch)

    # ---------------------------------------------------------------- resume
    global_step, start_epoch, batches_done = 0, 0, 0
    best_auroc, best_per_class, best_epoch, history = None, {}, None, []
    skipped_total = dict.fromkeys(SKIP_KINDS, 0)
    skipped_files: list[str] = []
    last_checkpoint = None
    if config.resume_from_checkpoint:
        checkpoint = resolve_resume_path(config.resume_from_checkpoint, output_dir)
        if checkpoint is None:
            logger.warning(
                "resume_from_checkpoint=latest but %s has no complete checkpoint: starting afresh", output_dir
            )
        else:
            accelerator.load_state(str(checkpoint))
            state = read_training_state(checkpoint)
            global_step, start_epoch, batches_done = (
                state["global_step"],
                state["epoch"],
                state["batches_in_epoch"],
            )
            best_auroc, best_per_class, best_epoch = (
                state["best_mean_auroc"],
                state["best_per_class_auroc"],
                state["best_epoch"],
            )
            history, skipped_total, skipped_files = state["history"], state["skipped"], state["skipped_files"]
            last_checkpoint = str(checkpoint)
            if batches_done >= batches_per_epoch:
                start_epoch, batches_done = start_epoch + 1, 0
            accelerator.print(
                f"resumed from {checkpoint}: step {global_step}, epoch {start_epoch}, batch {batches_done}"
            )

    accelerator.init_trackers(config.tracker_project_name, config=_flat_config(config))

    def training_state(epoch: int, batches_in_epoch: int) -> dict:
        return {
            "global_step": global_step,
            "epoch": epoch,
            "batches_in_epoch": batches_in_epoch,
            "best_mean_auroc": best_auroc,
            "best_per_class_auroc": best_per_class,
            "best_epoch": best_epoch,
            "history": history,
            "skipped": skipped_total,
            "skipped_files": skipped_files[:100],
        }

    progress = tqdm(
        total=total_steps,
        initial=global_step,
        disable=config.disable_tqdm or not accelerator.is_local_main_process,
        desc="train",
        dynamic_ncols=True,
    )
    num_eval_samples = 0
    done = global_step >= total_steps
    for epoch in range(start_epoch, num_epochs):
        if done:
            break
        sampler.epoch = epoch
        train_set.epoch = epoch
        skip = batches_done if epoch == start_epoch else 0
        loader = accelerator.skip_first_batches(train_loader, skip) if skip else train_loader
        model.train()
        epoch_skipped = torch.zeros(len(SKIP_KINDS), dtype=torch.long, device=accelerator.device)
        epoch_files: list[str] = []
        running_loss, running_terms, running_count = 0.0, {}, 0
        window_start, window_images = time.perf_counter(), 0
        batch_in_epoch = skip
        for batch in loader:
            batch_in_epoch += 1
            epoch_skipped += count_problems(batch["problems"]).to(epoch_skipped.device)
            epoch_files.extend(batch["problems"])
            local_images = batch["pixel_values"].shape[0]
            # Every process takes the same branch: skip the step everywhere if one process has no valid image.
            empty = (
                accelerator.gather(torch.tensor([local_images == 0], device=accelerator.device)).any().item()
            )
            if empty:
                continue
            if True:
                with accelerator.accumulate(model):
                    teacher_logits = batch.get("teacher_logits")
                    if teacher is not None:
                        teacher_pixels = batch["pixel_values"]
                        if (
                            config.teacher_image_size
                            and config.teacher_image_size != teacher_pixels.shape[-1]
                        ):
                            teacher_pixels = F.interpolate(
                                teacher_pixels,
                                size=(config.teacher_image_size,) * 2,
                                mode="bilinear",
                                align_corners=False,
                            )
                        with torch.no_grad(), accelerator.autocast():
                            teacher_logits = teacher(pixel_values=teacher_pixels).logits.float()
                    outputs = model(**_model_inputs(accelerator.unwrap_model(model), batch, teacher_logits))
                    loss = outputs.loss
                    finite = accelerator.gather(torch.isfinite(loss.detach()).reshape(1)).all().item()
                    if not finite:
                        message = (
                            f"non-finite loss ({loss.item()}) at epoch {epoch}, optimizer step {global_step + 1}, "
                            f"batch {batch_in_epoch}; stopped before backward. Last good checkpoint: "
                            f"{last_checkpoint or 'none'}. Lower learning_rate, use bf16 instead of fp16, or check the data."
                        )
                        accelerator.end_training()
                        raise NonFiniteLossError(message)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and config.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                    optimizer.step()
                    if accelerator.sync_gradients:
                        scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                running_loss += loss.detach().float().item()
                running_count += 1
                for name in (
                    "classification_loss",
                    "distillation_loss",
                    "orthogonal_loss",
                    "foreground_loss",
                ):
                    term = getattr(outputs, name, None)
                    if term is not None:
                        running_terms[name] = running_terms.get(name, 0.0) + term.detach().float().item()
                window_images += local_images * accelerator.num_processes
            if not accelerator.sync_gradients and batch_in_epoch < batches_per_epoch:
                continue
            global_step += 1
            progress.update(1)
            if running_count and (global_step % config.logging_steps == 0 or global_step == total_steps):
                elapsed = max(time.perf_counter() - window_start, 1e-9)
                values = torch.tensor([running_loss / running_count], device=accelerator.device)
                mean_loss = accelerator.reduce(values, reduction="mean").item()
                logs = {
                    "train/loss": mean_loss,
                    "train/lr": scheduler.get_last_lr()[0],
                    "train/images_per_second": window_images / elapsed,
                    "train/epoch": epoch,
                }
                logs.update({f"train/{k}": v / running_count for k, v in running_terms.items()})
                accelerator.log(logs, step=global_step)
                progress.set_postfix(loss=f"{mean_loss:.4f}", img_s=f"{window_images / elapsed:.1f}")
                running_loss, running_terms, running_count = 0.0, {}, 0
                window_start, window_images = time.perf_counter(), 0
            done = global_step >= total_steps
            end_of_epoch = batch_in_epoch >= batches_per_epoch
            if (
                config.checkpointing_steps
                and global_step % config.checkpointing_steps == 0
                and not (end_of_epoch or done)
            ):
                last_checkpoint = str(
                    save_checkpoint(
                        accelerator,
                        output_dir,
                        global_step,
                        training_state(epoch, batch_in_epoch),
                        config.save_total_limit,
                    )
                )
            if done:
                break

        # -------------------------------------------------------- end of epoch: skipped images, evaluation, checkpoint
        epoch_skipped = accelerator.reduce(epoch_skipped, reduction="sum").cpu()
        gathered_files = _gather_strings(accelerator, epoch_files)
        counts = {kind: int(count) for kind, count in zip(SKIP_KINDS, epoch_skipped.tolist())}
        for kind, count in counts.items():
            skipped_total[kind] = skipped_total.get(kind, 0) + count
        skipped_files.extend(f for f in gathered_files if f not in skipped_files)
        if any(counts.values()):
            accelerator.print(
                f"epoch {epoch}: skipped {sum(counts.values())} unreadable training image(s) {counts}: "
                + "; ".join(gathered_files[:5])
            )
        record = {"epoch": epoch, "global_step": global_step, "skipped": counts}
        if config.eval_every_epoch:
            metrics = evaluate(accelerator, model, eval_loader, label_names)
            num_eval_samples = metrics["num_samples"]
            record.update(
                mean_auroc=metrics["mean_auroc"],
                per_class_auroc=metrics["per_class"],
                eval_skipped=metrics["num_invalid"],
            )
            log_values = {
                "eval/mean_auroc": metrics["mean_auroc"],
                "eval/num_samples": metrics["num_samples"],
                "eval/num_invalid": metrics["num_invalid"],
            }
            log_values.update({f"eval/auroc/{k}": v for k, v in metrics["per_class"].items()})
            log_values.update({f"train/skipped_{k}": v for k, v in counts.items()})
            accelerator.log(log_values, step=global_step)
            accelerator.print(
                f"epoch {epoch} step {global_step}: validation mean AUROC {metrics['mean_auroc']:.4f} "
                f"on {metrics['num_samples']} images ({metrics['num_invalid']} unreadable)"
            )
            improved = not math.isnan(metrics["mean_auroc"]) and (
                best_auroc is None or metrics["mean_auroc"] > best_auroc
            )
            if improved:
                best_auroc, best_per_class, best_epoch = metrics["mean_auroc"], metrics["per_class"], epoch
                if config.save_best_model:
                    _export_best(accelerator, model, output_dir, config)
            model.train()
        history.append(record)
        last_checkpoint = str(
            save_checkpoint(
                accelerator,
                output_dir,
                global_step,
                training_state(epoch, batch_in_epoch),
                config.save_total_limit,
            )
        )
        batches_done = 0
    progress.close()

    result = TrainResult(
        output_dir=str(output_dir),
        best_model_dir=str(output_dir / "best_model")
        if best_auroc is not None and config.save_best_model
        else None,
        best_mean_auroc=best_auroc,
        best_per_class_auroc=best_per_class,
        best_epoch=best_epoch,
        global_step=global_step,
        last_checkpoint=last_checkpoint,
        skipped=skipped_total,
        skipped_files=skipped_files,
        history=history,
        num_eval_samples=num_eval_samples,
    )
    if accelerator.is_main_process:
        with open(output_dir / "train_result.json", "w", encoding="utf-8") as handle:
            json.dump(result.to_dict(), handle, indent=2, default=str)
    accelerator.end_training()
    return result


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
