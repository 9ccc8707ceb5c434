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
    run.json         the settings the rows were computed with (a rerun with other settings is refused)
(`.parquet` twins of both tables with --parquet.)

Rerunning with the same settings skips every image already in a table, also after a SIGKILL (see
`clarity_hf.inference.table`). Batches are consecutive runs of the pending paths in sorted order, and a batch is
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

from ..files import confined_path, safe_filename, writable_folder
from ..heatmaps import check_unit_interval
from .dataset import ArchiveDataset, collate_archive
from .discovery import find_images
from .table import ResultStore, atomic_write_bytes

__all__ = ["ArchiveOptions", "ArchiveSummary", "run_archive", "check_output_dir"]

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


@contextlib.contextmanager
def _exclusive(folder: Path):
    """Only one run per output folder at a time (two would interleave their parts)."""
    import fcntl

    handle = open(folder / ".lock", "w")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            raise ValueError(f"output folder '{folder}' is in use by another clarity-predict run") from err
        yield
    finally:
        handle.close()


def _file_stem(path: str) -> str:
    """A unique, stable file name for the outputs of one input: its stem and a hash of its full path."""
    digest = hashlib.sha1(path.encode("utf-8")).hexdigest()[:12]
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
        config = model.config
        self.labels = [config.id2label[i] for i in range(config.num_labels)]
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
        """A collated batch -> per image `{"probabilities": (C,) array, "boxes": [{"label", "score", "box":
        [xmin, ymin, xmax, ymax]}] in original pixels, "heatmaps": (C, h, w) model-grid tensor, "size": (H, W)}`."""
        outputs = self.forward(batch["pixel_values"])
        sizes = batch["original_sizes"]
        probabilities = torch.sigmoid(outputs["logits"]).numpy()
        detections = self.processor.post_process_object_detection(
            outputs,
            threshold=self.options.threshold,
            target_sizes=sizes,
            heatmap_threshold=self.options.heatmap_threshold,
        )
        results = []
        for index, detection in enumerate(detections):
            boxes = [
                {
                    "label": self.labels[int(label)],
                    "score": round(float(score), 6),
                    "box": [round(float(v), 2) for v in box],
                }
                for score, label, box in zip(
                    detection["scores"].tolist(), detection["labels"].tolist(), detection["boxes"].tolist()
                )
            ]
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


def _check_parameters(folder: Path, parameters: dict, overwrite: bool, store: ResultStore) -> None:
    path = folder / "run.json"
    if path.is_file() and not overwrite:
        previous = json.loads(path.read_text())
        different = sorted(k for k in set(previous) | set(parameters) if previous.get(k) != parameters.get(k))
        if different:
            details = ", ".join(f"{k}: {previous.get(k)!r} -> {parameters.get(k)!r}" for k in different)
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


def run_archive(
    paths: Sequence[str | os.PathLike],
    model,
    processor,
    options: ArchiveOptions,
    model_name: str = "",
) -> ArchiveSummary:
    """Predict every image under `paths` into `options.output_dir` (see the module docstring)."""
    start = time.perf_counter()
    options.validate()
    folder = check_output_dir(options.output_dir).resolve()
    with _exclusive(folder):
        predictor = _Predictor(model, processor, options, folder)
        store = ResultStore(
            folder,
            predictor.columns,
            float_columns=predictor.labels,
            int_columns=("height", "width"),
            parquet=options.parquet,
        )
        _check_parameters(folder, _run_parameters(model_name, predictor, options), options.overwrite, store)
        store.load()
        candidates, problems = find_images(paths, exclude=[folder])
        if options.retry_errors:
            store.forget_errors([str(p) for p in candidates] + [str(p) for p, _ in problems])
        done = store.done()
        store.append([], [(str(p), reason) for p, reason in problems if str(p) not in done])
        pending = [str(p) for p in candidates if str(p) not in done]
        summary = ArchiveSummary(
            output_dir=str(folder),
            predictions=str(store.predictions_csv),
            errors=str(store.errors_csv),
            skipped=len(candidates) - len(pending),
        )
        if pending:
            loader = torch.utils.data.DataLoader(
                ArchiveDataset(pending, processor, with_display=options.overlays),
                batch_size=int(options.batch_size),
                shuffle=False,
                num_workers=int(options.num_workers),
                collate_fn=collate_archive,
            )
            from tqdm.auto import tqdm

            with tqdm(
                total=len(pending), unit="image", disable=not options.progress, desc="clarity-predict"
            ) as bar:
                for batch in loader:
                    rows = predictor.rows(batch) if batch["pixel_values"] is not None else []
                    store.append(rows, batch["errors"])
                    summary.new_rows += len(rows)
                    summary.new_errors += len(batch["errors"])
                    bar.update(len(rows) + len(batch["errors"]))
        store.compact()
        summary.images, summary.failed = len(store.rows), len(store.errors)
        summary.seconds = round(time.perf_counter() - start, 3)
        return summary


def summary_json(summary: ArchiveSummary) -> str:
    return json.dumps(asdict(summary), indent=2)
