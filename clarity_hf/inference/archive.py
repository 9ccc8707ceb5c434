# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Batch prediction over an archive: files and folders in, one table of scores and boxes out
(`clarity-predict PATH... --model M --output-dir OUT`).

Output folder:
    predictions.csv  one row per image, sorted by path: `path`, `height`, `width` (original pixels), the model's
                     class probabilities (one column per label), `boxes` (JSON list of {"label", "score", "box":
                     [xmin, ymin, xmax, ymax]} in original pixels), `heatmap` and `overlay` (file paths relative to
                     the folder, empty when not asked), `overlay_class` (the class the overlay shows)
    errors.csv       one row per file that could not be read: `path`, `reason`
    heatmaps/        with --heatmaps npz: `<stem>-<hash>.npz` holding `heatmaps` (K, H, W) uint8 at the original
                     size and `labels` (K,); with --heatmaps png: a folder `<stem>-<hash>/` of one PNG per class
    overlays/        with --overlays: `<stem>-<hash>.png`, the top class's heatmap and boxes over the X-ray with
                     its name, probability, threshold, a colour bar and "research use only" (no heatmap under the
                     threshold)
    run.json         the settings the rows were computed with (a rerun with other settings is refused), and the
                     reading settings of the error rows (pixel limit, decoder versions)
(`.parquet` twins of both tables with --parquet.)

Before the first image, the setup is proven on a small synthetic image through the processor and the model (and the
pixel limit and the processor's size are checked): a setup error (`CLARITY_MAX_IMAGE_PIXELS=-5`, a processor
`size` of 100000, a model that cannot run) stops the run with an `ArchiveSetupError` and never becomes an error
row. Rerunning with the same settings skips every image already in a table, also after a SIGKILL (see
`clarity_hf.inference.table`); the error rows are retried when the reading settings changed (a raised pixel
limit, a newly installed DICOM decoder) or with `--retry-errors`. Batches are consecutive runs of the pending paths in sorted order, and a batch is
recorded whole or not at all, so a rerun after a crash forms the same batches as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..distributed import process_state
from ..files import (
    UnusableFileError,
    atomic_write_bytes,
    confined_path,
    exclusive_lock,
    safe_filename,
    writable_folder,
)
from ..heatmaps import check_unit_interval
from ..image_processing_clarity import scores_from_logits
from ..pipeline_clarity import box_records, model_labels
from ..xray_io import resolve_max_image_pixels
from .dataset import ArchiveDataset, collate_archive
from .discovery import find_images
from .table import ResultStore

__all__ = ["ArchiveOptions", "ArchiveSetupError", "ArchiveSummary", "run_archive", "check_output_dir"]

RUN_FILE = "run.json"
# run.json's keys that a rerun may change: the settings that decide whether a file can be read (a change retries
# the error rows, never refuses the folder), and the last run's process count and files per process
READING_KEY, PROCESSES_KEY, SHARES_KEY = "reading", "processes", "shares"
NOT_COMPARED = (READING_KEY, PROCESSES_KEY, SHARES_KEY)


class ArchiveSetupError(ValueError):
    """The run cannot read any image as set up (environment, processor or model); raised before the first image."""


HEATMAP_FORMATS = ("npz", "png")


@dataclass
class ArchiveOptions:
    """Settings of an archive run (see `clarity-predict --help`)."""

    output_dir: str | os.PathLike
    batch_size: int = 8
    num_workers: int = 2
    device: str | None = None  # None: cuda when available, else cpu
    bf16: bool = False
    threshold: float = 0.5
    heatmap_threshold: float | None = None
    heatmaps: str | None = None  # None, "npz" or "png"
    heatmap_classes: list[str] | None = None  # None: all classes
    overlays: bool = False
    parquet: bool = False
    retry_errors: bool = False
    overwrite: bool = False
    progress: bool = True

    def validate(self) -> None:
        if int(self.batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if int(self.num_workers) < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        self.threshold = check_unit_interval(self.threshold, "threshold")
        if self.heatmap_threshold is not None:
            self.heatmap_threshold = check_unit_interval(self.heatmap_threshold, "heatmap_threshold")
        if self.heatmaps is not None and self.heatmaps not in HEATMAP_FORMATS:
            raise ValueError(f"heatmaps must be one of {HEATMAP_FORMATS} or None, got {self.heatmaps!r}")


@dataclass
class ArchiveSummary:
    output_dir: str
    predictions: str
    errors: str
    images: int = 0  # rows in the table
    failed: int = 0  # rows in the errors table
    new_rows: int = 0  # computed by this run
    new_errors: int = 0
    skipped: int = 0  # already done by an earlier run
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def check_output_dir(output_dir: str | os.PathLike | None) -> Path:
    """`output_dir` exists (created) and takes a new file, checked before any data, model or image is touched."""
    return writable_folder(output_dir, "output folder")


def _file_stem(path: str) -> str:
    """A unique, stable file name for the outputs of one input: its stem and a hash of its full path."""
    digest = hashlib.sha1(os.fsencode(path)).hexdigest()[:12]
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(path).stem)[:60]
    return f"{stem}-{digest}"


def _format_float(value: float) -> str:
    return format(float(value), ".6g")


def _resolve_device(device: str | None) -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class _Predictor:
    """Model + processor + settings: one batch of decoded images -> table rows (and heatmap / overlay files)."""

    def __init__(self, model, processor, options: ArchiveOptions, output_dir: Path):
        self.model = model
        self.processor = processor
        self.options = options
        self.output_dir = output_dir
        self.device = _resolve_device(options.device)
        self.model.to(self.device).eval()
        self.labels = model_labels(model.config)
        if options.heatmap_classes:
            unknown = [name for name in options.heatmap_classes if name not in self.labels]
            if unknown:
                raise ValueError(f"unknown heatmap classes {unknown}; known: {self.labels}")
            self.heatmap_indices = [self.labels.index(name) for name in options.heatmap_classes]
        else:
            self.heatmap_indices = list(range(len(self.labels)))

    @property
    def columns(self) -> list[str]:
        return ["path", "height", "width", *self.labels, "boxes", "heatmap", "overlay", "overlay_class"]

    @torch.inference_mode()
    def forward(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        pixel_values = pixel_values.to(self.device)
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.options.bf16):
            outputs = self.model(pixel_values=pixel_values)
        return {"logits": outputs.logits.float().cpu(), "heatmaps": outputs.heatmaps.float().cpu()}

    def predict(self, batch: dict) -> list[dict]:
        """A collated batch -> per image `{"probabilities": (C,) scores by the model's problem_type, "boxes":
        [{"label", "score", "box": [xmin, ymin, xmax, ymax]}] in original pixels, "heatmaps": (C, h, w)
        model-grid tensor, "size": (H, W)}`."""
        outputs = self.forward(batch["pixel_values"])
        sizes = batch["original_sizes"]
        problem_type = self.model.config.problem_type
        probabilities = scores_from_logits(outputs["logits"], problem_type).numpy()
        detections = self.processor.post_process_object_detection(
            outputs,
            threshold=self.options.threshold,
            target_sizes=sizes,
            heatmap_threshold=self.options.heatmap_threshold,
            problem_type=problem_type,
        )
        results = []
        for index, detection in enumerate(detections):
            boxes = box_records(detection, self.labels, box_as_list=True, ndigits=6)
            results.append(
                {
                    "probabilities": probabilities[index],
                    "boxes": boxes,
                    "heatmaps": outputs["heatmaps"][index],
                    "size": tuple(sizes[index]),
                }
            )
        return results

    def rows(self, batch: dict) -> list[list[str]]:
        """A collated batch -> table rows (writing the heatmap and overlay files asked for)."""
        rows = []
        for path, display, result in zip(batch["paths"], batch["displays"], self.predict(batch)):
            heatmap_cell = overlay_cell = ""
            if self.options.heatmaps is not None or self.options.overlays:
                heatmap_cell, overlay_cell = self._write_files(path, result, display)
            height, width = result["size"]
            rows.append(
                [
                    path,
                    str(height),
                    str(width),
                    *(_format_float(p) for p in result["probabilities"]),
                    json.dumps(result["boxes"], separators=(",", ":")),
                    heatmap_cell,
                    overlay_cell,
                    self.labels[int(np.argmax(result["probabilities"]))] if overlay_cell else "",
                ]
            )
        return rows

    def class_maps(self, heatmaps: torch.Tensor, indices: Sequence[int], size) -> np.ndarray:
        """(K, H, W) uint8 maps (normalised to 0..255) of the classes `indices` at the original size `size`."""
        return self.processor.post_process_heatmaps(
            heatmaps[None], target_sizes=[size], classes=list(indices), as_uint8=True
        )[0].numpy()

    def _write_files(self, path: str, result: dict, display: np.ndarray | None) -> tuple[str, str]:
        stem = _file_stem(path)
        heatmaps, size, boxes = result["heatmaps"], result["size"], result["boxes"]
        heatmap_cell = overlay_cell = ""
        top = int(np.argmax(result["probabilities"]))
        maps = None
        if self.options.heatmaps is not None:
            maps = self.class_maps(heatmaps, self.heatmap_indices, size)
            folder = self.output_dir / "heatmaps"
            folder.mkdir(exist_ok=True)
            names = [self.labels[i] for i in self.heatmap_indices]
            if self.options.heatmaps == "npz":
                import io

                buffer = io.BytesIO()
                np.savez_compressed(buffer, heatmaps=maps, labels=np.asarray(names))
                target = confined_path(self.output_dir, f"heatmaps/{stem}.npz", "heatmap file")
                atomic_write_bytes(target, buffer.getvalue())
            else:
                target = confined_path(self.output_dir, f"heatmaps/{stem}", "heatmap folder")
                target.mkdir(exist_ok=True)
                for name, heatmap in zip(names, maps):
                    # a label is any text from the model's config: it is sanitised and confined as a file name
                    png = confined_path(
                        self.output_dir,
                        f"heatmaps/{stem}/{safe_filename(name)}.png",
                        f"heatmap file of label {name!r}",
                    )
                    atomic_write_bytes(png, _png_bytes(Image.fromarray(heatmap, mode="L")))
            heatmap_cell = target.relative_to(self.output_dir).as_posix()
        if self.options.overlays:
            from ..visualization import annotated_overlay

            if maps is not None and top in self.heatmap_indices:
                top_map = maps[self.heatmap_indices.index(top)]
            else:
                top_map = self.class_maps(heatmaps, [top], size)[0]
            shown = [b for b in boxes if b["label"] == self.labels[top]]
            overlay = annotated_overlay(
                Image.fromarray(display, mode="L"),
                top_map.astype(np.float32) / 255.0,
                self.labels[top],
                float(result["probabilities"][top]),
                self.options.threshold,
                boxes=[b["box"] for b in shown],
            )
            folder = self.output_dir / "overlays"
            folder.mkdir(exist_ok=True)
            target = confined_path(self.output_dir, f"overlays/{stem}.png", "overlay file")
            atomic_write_bytes(target, _png_bytes(overlay))
            overlay_cell = target.relative_to(self.output_dir).as_posix()
        return heatmap_cell, overlay_cell


def _png_bytes(image: Image.Image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _run_parameters(model_name: str, predictor: _Predictor, options: ArchiveOptions) -> dict:
    """What the rows depend on; a rerun into the same folder must match it."""
    return {
        "model": model_name,
        "labels": predictor.labels,
        "image_size": predictor.processor.size,
        "threshold": options.threshold,
        "heatmap_threshold": options.heatmap_threshold,
        "heatmaps": options.heatmaps,
        "heatmap_classes": options.heatmap_classes,
        "overlays": options.overlays,
        "bf16": options.bf16,
    }


def _reading_settings(processor) -> dict:
    """What decides whether a file can be read (not the rows' numbers): the pixel limit and the decoders."""
    from importlib import metadata

    versions = {}
    for package in (
        "clarity_hf",
        "pillow",
        "pydicom",
        "pylibjpeg",
        "pylibjpeg-openjpeg",
        "pylibjpeg-libjpeg",
        "pyjpegls",
        "python-gdcm",
    ):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    limit = resolve_max_image_pixels(getattr(processor, "max_image_pixels", None))
    return {"max_image_pixels": limit, "packages": versions}


def _read_run_file(path: Path) -> dict:
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        previous = err
    if not isinstance(previous, dict):
        problem = (
            previous if isinstance(previous, Exception) else f"not a JSON object: {type(previous).__name__}"
        )
        raise UnusableFileError(
            f"{path}: is not a readable run file ({problem}); it holds the settings of the folder's results: use "
            "another --output-dir, or --overwrite to discard them and start again"
        )
    return previous


def _check_parameters(folder: Path, parameters: dict, overwrite: bool, store: ResultStore) -> bool:
    """Refuse a folder of other settings (unless `overwrite`, which empties it); write run.json. Returns whether
    the error rows must be retried (the reading settings differ from those they were recorded with)."""
    path = folder / RUN_FILE
    retry = False
    if path.exists() and not overwrite:
        previous = _read_run_file(path)
        retry = previous.get(READING_KEY) != parameters[READING_KEY]
        previous = {k: v for k, v in previous.items() if k not in NOT_COMPARED}
        compared = {k: v for k, v in parameters.items() if k not in NOT_COMPARED}
        different = sorted(k for k in set(previous) | set(compared) if previous.get(k) != compared.get(k))
        if different:
            details = ", ".join(f"{k}: {previous.get(k)!r} -> {compared.get(k)!r}" for k in different)
            raise ValueError(
                f"output folder '{folder}' holds results computed with other settings ({details}); use another "
                "--output-dir, or --overwrite to start again"
            )
    if overwrite:
        for target in (
            store.predictions_csv,
            store.errors_csv,
            folder / "predictions.parquet",
            folder / "errors.parquet",
        ):
            target.unlink(missing_ok=True)
        if store.parts_dir.is_dir():
            for part in store.parts_dir.iterdir():
                part.unlink()
    atomic_write_bytes(path, (json.dumps(parameters, indent=2, sort_keys=True) + "\n").encode())
    return retry


def _check_setup(predictor: _Predictor, options: ArchiveOptions) -> None:
    """Prove the environment, the processor and the model on one small synthetic image, so that a setup error
    stops the run before the first file instead of becoming an error row for each."""
    from ..image_processing_clarity import _resolve_size

    columns, labels = predictor.columns, predictor.labels
    # the table's own columns: every column that is not a label, or that appears twice (a label clashing with one)
    fixed = list(dict.fromkeys(c for c in columns if c not in labels or columns.count(c) > 1))
    clashing = [label for label in labels if label in fixed]
    if clashing:  # two columns of one name: readers take the score for the table's own column, or drop one
        raise ArchiveSetupError(
            f"the model's id2label names {', '.join(map(repr, clashing))}, which are also columns of the table "
            f"({', '.join(fixed)}): rename those labels in the model's config.json"
        )
    processor = predictor.processor
    try:
        limit = resolve_max_image_pixels(getattr(processor, "max_image_pixels", None))
        height, width = _resolve_size(processor.size)
    except ValueError as err:
        raise ArchiveSetupError(f"cannot read any image: {err}") from err
    if height * width > limit:
        raise ArchiveSetupError(
            f"the image processor's size {height} x {width} is {height * width} pixels, above the pixel limit "
            f"{limit}: preprocessor_config.json of the model is wrong (a CLARiTy model takes 224 or 512)"
        )
    probe = np.linspace(0.0, 1.0, 32 * 32).reshape(32, 32)
    try:
        pixel_values = processor(images=probe, return_tensors="np")["pixel_values"]
        predictor.forward(torch.from_numpy(np.ascontiguousarray(pixel_values, dtype=np.float32)))
    except Exception as err:  # noqa: BLE001 - whatever fails on a valid image fails on every image
        raise ArchiveSetupError(
            f"the model or its image processor fails on a valid 32 x 32 test image, so every image would fail "
            f"({type(err).__name__}: {err})"
        ) from err


def _agree(state, outcome):
    """Every process's `outcome` (a value, or the exception it raised), in process order; raises the first
    exception any process had, on every process, so that none waits for a process that stopped."""
    outcomes = [outcome]
    if state is not None:
        from accelerate.utils import gather_object

        outcomes = gather_object([outcome])
    for found in outcomes:
        if isinstance(found, BaseException):
            raise found
    return outcomes


def _attempt(function):
    try:
        return function()
    except Exception as err:  # noqa: BLE001 - handed to `_agree`, which raises it on every process
        return err


def shard_of(path: str, processes: int) -> int:
    """The process (of `processes`) that reads `path`: by a hash of the path's bytes, so a file's process does not
    depend on the other files or on what earlier runs did."""
    return int(hashlib.sha1(os.fsencode(path)).hexdigest()[:8], 16) % processes


def run_archive(
    paths: Sequence[str | os.PathLike],
    model,
    processor,
    options: ArchiveOptions,
    model_name: str = "",
) -> ArchiveSummary:
    """Predict every image under `paths` into `options.output_dir` (see the module docstring).

    Under `accelerate launch` or `torchrun` with N processes, every process reads the files whose `shard_of` is its
    index and writes its own part files; the main process then merges the tables, the same as one process would
    write them. A rerun with any number of processes resumes from the tables and parts."""
    start = time.perf_counter()
    options.validate()
    state = process_state()
    processes, rank = (1, 0) if state is None else (state.num_processes, state.process_index)
    is_main = rank == 0
    if state is not None and options.device in (None, "", "auto"):
        options.device = str(state.device)
    folder = check_output_dir(options.output_dir).resolve()
    # one lock for the run, held by its main process (the others are part of the same run)
    with exclusive_lock(folder / ".lock", "output folder") if is_main else contextlib.nullcontext():
        predictor = _Predictor(model, processor, options, folder)
        _agree(state, _attempt(lambda: _check_setup(predictor, options)))
        store = ResultStore(
            folder,
            predictor.columns,
            float_columns=predictor.labels,
            int_columns=("height", "width"),
            parquet=options.parquet,
        )
        parameters = _run_parameters(model_name, predictor, options)

        def check_folder() -> tuple[bool, int]:
            parameters[READING_KEY] = _reading_settings(processor)
            changed = _check_parameters(folder, parameters, options.overwrite, store)
            store.remove_stale()
            return changed, store.next_run()

        settings_changed, run = _agree(state, _attempt(check_folder) if is_main else None)[0]
        store.start_run(run, rank)
        store.load()
        candidates, problems = find_images(paths, exclude=[folder])
        if options.retry_errors or settings_changed:
            store.forget_errors([str(p) for p in candidates] + [str(p) for p, _ in problems])
        done = store.done()
        if is_main:
            store.append([], [(str(p), reason) for p, reason in problems if str(p) not in done])
        pending = [str(p) for p in candidates if str(p) not in done]
        mine = (
            [path for path in pending if shard_of(path, processes) == rank] if state is not None else pending
        )
        summary = ArchiveSummary(
            output_dir=str(folder),
            predictions=str(store.predictions_csv),
            errors=str(store.errors_csv),
            skipped=len(candidates) - len(pending),
        )
        outcome = _attempt(lambda: _predict_files(mine, predictor, store, options, summary, show=is_main))
        shares = _agree(state, outcome)
        summary.new_rows, summary.new_errors = sum(s[0] for s in shares), sum(s[1] for s in shares)
        summary.extra = {"processes": processes, "shares": [s[0] + s[1] for s in shares], "process": rank}
        if is_main:
            if state is not None:  # the other processes' rows are in their part files
                store.load()
            store.compact()
            parameters[PROCESSES_KEY], parameters[SHARES_KEY] = processes, summary.extra["shares"]
            atomic_write_bytes(
                folder / RUN_FILE, (json.dumps(parameters, indent=2, sort_keys=True) + "\n").encode()
            )
        summary.images, summary.failed = len(store.rows), len(store.errors)
        summary.seconds = round(time.perf_counter() - start, 3)
        if state is not None:  # no process leaves (and tears its connections down) while the main one merges
            state.wait_for_everyone()
        return summary


def _predict_files(
    paths: list[str], predictor: _Predictor, store: ResultStore, options: ArchiveOptions, summary, show: bool
) -> tuple[int, int]:
    """Read, predict and record `paths` batch by batch; returns (rows, errors) written."""
    rows_written = errors_written = 0
    if not paths:
        return 0, 0
    loader = torch.utils.data.DataLoader(
        ArchiveDataset(paths, predictor.processor, with_display=options.overlays),
        batch_size=int(options.batch_size),
        shuffle=False,
        num_workers=int(options.num_workers),
        collate_fn=collate_archive,
    )
    from tqdm.auto import tqdm

    with tqdm(
        total=len(paths), unit="image", disable=not (options.progress and show), desc="clarity-predict"
    ) as bar:
        for batch in loader:
            rows = predictor.rows(batch) if batch["pixel_values"] is not None else []
            store.append(rows, batch["errors"])
            rows_written += len(rows)
            errors_written += len(batch["errors"])
            bar.update(len(rows) + len(batch["errors"]))
    return rows_written, errors_written


def summary_json(summary: ArchiveSummary) -> str:
    return json.dumps(asdict(summary), indent=2)
