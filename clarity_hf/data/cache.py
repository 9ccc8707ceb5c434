# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Preprocessing cache: resize every image once and store the data set as Parquet shards.

Training then reads small 8-bit grayscale images (224 or 512 px; raw PGM bytes by default, or PNG) instead of
decoding 1024x1024 originals. A cached image is the stated 8-bit quantisation of the processor's image: the file is
decoded by `clarity_hf.xray_io` exactly as `ClarityImageProcessor` decodes it (float gray in [0, 1]), resized in
float32 with the processor's filter (`resize_unit_gray`, bilinear by default as the model's recipe), and stored as
round(255 * x); training reads it back as x to within 0.5 / 255 (`clarity_cache.json` says so under "pixels"). The
cache keeps every column of the source (same features); only `image` (and `anatomy_mask`) change, and `findings`
(derived from `labels` and the label names) is written back on loading rather than stored. `boxes`,
`original_size` and the box-frame rule are untouched, so boxes stay in their source frame (see
`clarity_hf.data.features.get_box_frame`).

Layout::

    output_dir/
      clarity_cache.json                   build parameters (written before the first shard), then, when complete,
                                           shard counts, metadata (label names, report)
      train/shard-00000-of-00087.parquet   ...
      train/shard-00000-of-00087.skipped.json   the rows this shard skipped (skip_missing)
      validation/...
      test/...

Resumable and parameter-checked: the build parameters (image size, resample, format, shard size, split sizes, the
source builder's options such as its seed, a fingerprint of the source rows, the package version) go into the
manifest before any shard. A rerun with the same parameters keeps the complete shards and writes the rest; a rerun
with other parameters is refused with the differing parameters named (or, with `overwrite=True`, the old shards are
deleted and the cache rebuilt). Each shard's rows depend only on those parameters, each shard is written to a
temporary name and renamed, so a build killed at any point and resumed gives the same bytes as an uninterrupted one.
Shards are processed in `num_proc` worker processes with a tqdm progress bar; a lock file keeps a second build out
of the folder while one runs. `load_cache(output_dir)` gives the `DatasetDict` back (via `load_dataset("parquet")`)
with its metadata re-attached. (Uploading with a dataset card is `clarity_hf.hub.push_dataset_to_hub`: data
never imports the hub.)

An image that cannot be decoded raises a `ValueError` naming it, unless `skip_missing=True`: then the row is left
out, counted, and listed in the cache report (`clarity_hf.data.features.get_build_report(load_cache(...))`).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, DatasetDict, Features, Image, load_dataset, load_from_disk
from datasets.utils.tqdm import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
from PIL import Image as PILImage
from tqdm.auto import tqdm

from .. import __version__
from ..checks import check_positive_integers
from ..files import atomic_output, atomic_write_json, exclusive_lock, fsync_directory
from ..image_processing_clarity import resize_unit_gray
from ..xray_io import ImageDecodeError, MissingImageError, load_unit_gray
from .features import FINDINGS, BuildReport, attach_metadata, get_metadata
from .transforms import DEFAULT_RESAMPLE, decode_image

logger = logging.getLogger(__name__)

CACHE_INFO = "clarity_cache.json"
LOCK_FILE = ".clarity_cache.lock"
RESAMPLE = {
    "bilinear": PILImage.BILINEAR,
    "lanczos": PILImage.LANCZOS,
    "box": PILImage.BOX,
    "bicubic": PILImage.BICUBIC,
}
PIXELS_NOTE = (
    "uint8 = round(255 * x), x = the float [0, 1] gray image decoded by clarity_hf.xray_io (as ClarityImageProcessor "
    "decodes it) and resized in float32 with `resample`"
)


def resize_for_cache(image: Any, image_size: int, resample: str = DEFAULT_RESAMPLE) -> PILImage.Image:
    """Decode `image` as the processor does, resize it to `image_size` x `image_size` in float32 and quantise it to
    8 bits (round(255 * x)); raises `ImageDecodeError` for an undecodable image.

    This is exactly what the cache stores; it is public so that tests and users can reproduce a cached image.
    """
    gray = load_unit_gray(image).astype(np.float32)
    if gray.shape != (image_size, image_size):
        gray = resize_unit_gray(gray, (image_size, image_size), RESAMPLE[resample])
    return PILImage.fromarray(np.rint(gray * 255.0).astype(np.uint8), mode="L")


IMAGE_FORMATS = {"png": ("PNG", {"compress_level": 3}), "pgm": ("PPM", {})}


def _encode(image: PILImage.Image, image_format: str = "png") -> dict[str, Any]:
    """8-bit grayscale image -> `{"bytes", "path"}`: lossless PNG (compact) or raw binary PGM (fastest to decode)."""
    fmt, options = IMAGE_FORMATS[image_format]
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return {"bytes": buffer.getvalue(), "path": None}


def _cache_features(features: Features) -> Features:
    # `findings` is derived from `labels` and the label names, which the manifest keeps: `load_cache` writes it
    # back. Left out of the shards (and of the source fingerprint), so that a cache built before the names were
    # features has the same shards and still resumes.
    columns = {name: feature for name, feature in features.items() if name != FINDINGS}
    for name in ("image", "anatomy_mask"):
        if name in columns:
            columns[name] = Image()
    return Features(columns)


def _shard_name(index: int, total: int) -> str:
    return f"shard-{index:05d}-of-{total:05d}.parquet"


def _report_name(shard: str) -> str:
    return shard.replace(".parquet", ".skipped.json")


def _write_shard(job: tuple[Dataset, str, int, str, bool, str]) -> tuple[int, list[str]]:
    """Resize one shard and write it atomically; returns (rows written, problems).

    The shard's skip report (`shard-....skipped.json`) is written first, then the shard itself is written to a
    temporary name and renamed: a shard file that exists is complete and always has its report."""
    part, path, image_size, resample, skip_missing, image_format = job
    undecoded = part
    for name in ("image", "anatomy_mask"):
        if name in part.features and isinstance(part.features[name], Image):
            undecoded = undecoded.cast_column(name, Image(decode=False))
    features = _cache_features(part.features)
    columns: dict[str, list[Any]] = {key: [] for key in features}
    problems: list[str] = []
    for row in undecoded:
        name = row.get("image_id", "")
        try:
            if row["image"] is None:
                raise MissingImageError("no image (metadata-only row?)")
            image = _encode(resize_for_cache(row["image"], image_size, resample), image_format)
        except ImageDecodeError as err:
            message = f"image {name} cannot be decoded: {err}"
            if not skip_missing:
                raise ValueError(message + " (pass skip_missing=True to skip it and get a report)") from err
            problems.append(message)
            continue
        for key in features:
            columns[key].append(row[key])
        columns["image"][-1] = image
        if "anatomy_mask" in features and row["anatomy_mask"] is not None:
            mask = (
                decode_image(row["anatomy_mask"])
                .convert("L")
                .resize((image_size, image_size), PILImage.NEAREST)
            )
            columns["anatomy_mask"][-1] = _encode(mask, image_format)
    # "<... object at 0x7f...>" in a decoder's message would make the report differ between runs
    atomic_write_json(
        _report_name(path), [re.sub(r" at 0x[0-9a-fA-F]+", "", message) for message in problems]
    )
    bars_were_off = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        with atomic_output(path) as temporary:
            Dataset.from_dict(columns, features=features).to_parquet(str(temporary))
    finally:
        if not bars_were_off:
            enable_progress_bars()
    return len(columns["image"]), problems


def _digest_bytes(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return "sha256:" + hashlib.sha256(value).hexdigest()
    return repr(value)


def source_fingerprint(dataset: DatasetDict) -> str:
    """SHA-256 of every row of every split (image paths, or the digest of embedded image bytes, and all other
    columns), in order: equal exactly when the cache would hold the same rows in the same shards."""
    hasher = hashlib.sha256()
    for split, part in dataset.items():
        hasher.update(json.dumps([split, len(part)]).encode())
        if FINDINGS in part.column_names:  # derived, not stored (`_cache_features`)
            part = part.remove_columns(FINDINGS)
        for name, feature in part.features.items():
            if isinstance(feature, Image):
                part = part.cast_column(name, Image(decode=False))
        for batch in part.iter(batch_size=1000):
            hasher.update(json.dumps(batch, sort_keys=True, default=_digest_bytes).encode())
    return hasher.hexdigest()


def build_parameters(
    dataset: DatasetDict, image_size: int, resample: str, image_format: str, shard_size: int
) -> dict[str, Any]:
    """What determines a cache's bytes: written to the manifest before the first shard and compared on a rerun."""
    metadata = get_metadata(dataset)
    return {
        "image_size": image_size,
        "resample": resample,
        "image_format": image_format,
        "shard_size": shard_size,
        "splits": {split: len(part) for split, part in dataset.items()},
        "source": metadata.get("source"),
        # the builder's own options (NIH: seed, validation_fraction, ...), so a refusal can name them
        "source_parameters": metadata.get("build_parameters", {}),
        "source_fingerprint": source_fingerprint(dataset),
        "clarity_hf_version": __version__,
    }


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict) and key != "splits":
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def parameter_differences(found: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """`name: cached value != this build's value` for every parameter that differs."""
    found, wanted = _flatten(found), _flatten(wanted)
    return [
        f"{key}: {found.get(key)!r} in the cache != {wanted.get(key)!r} now"
        for key in sorted(set(found) | set(wanted))
        if found.get(key) != wanted.get(key)
    ]


def _cache_files(output: Path, splits: Sequence[str]) -> list[Path]:
    """The files a build writes (shards, their skip reports, temporaries), for `overwrite`."""
    files = []
    for split in splits:
        folder = output / split
        if folder.is_dir():
            files += [p for p in folder.iterdir() if p.name.startswith(("shard-", ".shard-"))]
    return files


def _check_manifest(output: Path, parameters: dict[str, Any], overwrite: bool) -> None:
    """Write the manifest of a new build, accept one with equal parameters (resume), refuse (or, with `overwrite`,
    clear) one with other parameters."""
    info_path = output / CACHE_INFO
    if info_path.exists():
        try:
            previous = json.loads(info_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            previous = {}
        found = previous.get("parameters")
        if found == parameters:
            return
        if not overwrite:
            if found is None:
                problem = f"{info_path} has no build parameters (written by an older clarity_hf, or damaged)"
            else:
                problem = "it was built with other parameters: " + "; ".join(
                    parameter_differences(found, parameters)
                )
            raise ValueError(
                f"{output} holds a cache that this build cannot resume: {problem}. Use another folder, or pass "
                "overwrite=True (--overwrite) to delete its shards and rebuild it"
            )
        splits = (
            set(parameters["splits"]) | set((found or {}).get("splits", {})) | set(previous.get("shards", {}))
        )
        logger.warning("cache %s: overwrite=True, deleting the shards of the previous build", output)
        info_path.unlink()
        fsync_directory(output)
        for path in _cache_files(output, sorted(splits)):
            path.unlink()
    atomic_write_json(info_path, {"complete": False, "parameters": parameters})


def _run_jobs(jobs: list[tuple], num_proc: int, bar: tqdm) -> None:
    """Run the shard jobs in this process or in `num_proc` workers. On an error (or Ctrl-C) the pending shards are
    cancelled and the pool is shut down before the error propagates; a worker whose parent is killed exits by
    itself (`_exit_with_parent`), so no worker outlives the build."""
    if num_proc <= 1 or len(jobs) <= 1:
        for job in jobs:
            _write_shard(job)
            bar.update(1)
        return
    with ProcessPoolExecutor(
        max_workers=min(num_proc, len(jobs)), initializer=_exit_with_parent, initargs=(os.getpid(),)
    ) as pool:
        futures = [pool.submit(_write_shard, job) for job in jobs]
        try:
            for future in as_completed(futures):
                future.result()
                bar.update(1)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _exit_with_parent(build_pid: int, interval: float = 0.5) -> None:
    """Worker initializer: exit when the build process is gone (SIGKILL gives it no chance to stop the pool, and a
    worker blocked on the task queue would otherwise wait forever). The worker's own parent is the build process
    (fork) or a fork server, which ends with it; either one disappearing means the build is over."""
    parent = os.getppid()

    def build_is_gone() -> bool:
        if os.getppid() != parent:
            return True
        try:
            os.kill(build_pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
        return False

    def watch() -> None:
        while not build_is_gone():
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="clarity-cache-parent-watch", daemon=True).start()


def build_cache(
    dataset: DatasetDict | Dataset,
    output_dir: str | os.PathLike,
    image_size: int = 224,
    num_proc: int = 1,
    shard_size: int = 1000,
    resample: str = DEFAULT_RESAMPLE,
    skip_missing: bool = False,
    progress: bool = True,
    image_format: str = "pgm",
    overwrite: bool = False,
) -> DatasetDict:
    """Resize every image of `dataset` once into Parquet shards under `output_dir`; returns `load_cache(...)`.

    Args:
        dataset: a clarity_hf `DatasetDict` (or one `Dataset`, stored as split "train").
        output_dir: cache folder (created). A rerun with the same parameters resumes: complete shards are kept.
            A folder holding a cache of other parameters (image size, format, shard size, splits, source rows or
            the source builder's seed, package version) is refused with the differing parameters named.
        image_size: side of the cached square images (224 or 512 for CLARiTy).
        num_proc: worker processes over shards.
        shard_size: rows per shard.
        resample: "bilinear" (default: the model's processor recipe, so cached pixels match the processor's),
            "lanczos", "box" (area) or "bicubic".
        skip_missing: skip undecodable images (counted in the report) instead of raising.
        progress: show a tqdm bar over shards.
        image_format: "pgm" (default: raw uint8 behind a PGM header, no inflate: ~50x faster reads than the 1024 px
            originals, ~1.4x the disk of PNG) or "png" (lossless, compact, displayed by the Hub viewer, but only
            ~3x faster than the originals at 512 px). Both decode to the same pixels through the `Image` feature.
        overwrite: delete a cache of other parameters in `output_dir` and rebuild it.

    A build killed at any point and rerun with the same parameters gives the same files, byte for byte, as an
    uninterrupted build: the manifest is written before the first shard, each shard is a function of the
    parameters alone and appears atomically with its skip report, and the final report is assembled from the
    per-shard reports in shard order.
    """
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {sorted(IMAGE_FORMATS)}, got {image_format!r}")
    if resample not in RESAMPLE:
        raise ValueError(f"resample must be one of {sorted(RESAMPLE)}, got {resample!r}")
    check_positive_integers({"image_size": image_size, "shard_size": shard_size, "num_proc": num_proc})
    if isinstance(dataset, Dataset):
        dataset = DatasetDict({"train": dataset})
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(output / LOCK_FILE, "cache folder"):
        for stale in output.glob(f".{CACHE_INFO}.tmp-*"):
            stale.unlink()
        parameters = build_parameters(dataset, image_size, resample, image_format, shard_size)
        _check_manifest(output, parameters, overwrite)
        jobs, done, shard_files = [], 0, {}
        for split, part in dataset.items():
            total = max(1, math.ceil(len(part) / shard_size))
            (output / split).mkdir(exist_ok=True)
            for stale in (output / split).glob(".shard-*.tmp-*"):
                stale.unlink()  # left by a killed build (the lock says no build is running)
            for stale in (output / split).glob("shard-*.tmp-*"):
                stale.unlink()
            shard_files[split] = [output / split / _shard_name(index, total) for index in range(total)]
            for index, path in enumerate(shard_files[split]):
                if path.exists() and Path(_report_name(str(path))).exists():
                    done += 1
                    continue
                rows = part.select(range(index * shard_size, min((index + 1) * shard_size, len(part))))
                jobs.append((rows, str(path), image_size, resample, skip_missing, image_format))
        if done:
            logger.info("cache %s: %d shard(s) already complete, resuming", output, done)
        bar = tqdm(total=len(jobs), desc=f"caching {image_size}px shards", unit="shard", disable=not progress)
        try:
            _run_jobs(jobs, num_proc, bar)
        finally:
            bar.close()
        cache_report = BuildReport()
        for split in dataset:
            for path in shard_files[split]:
                for message in json.loads(Path(_report_name(str(path))).read_text(encoding="utf-8")):
                    cache_report.add("undecodable_image", message)
        cache_report.log(logger)
        report = BuildReport.from_dict(get_metadata(dataset).get("report"))
        metadata = dict(get_metadata(dataset))
        for kind, count in cache_report.counts.items():
            report.counts[kind] = report.counts.get(kind, 0) + count
            report.examples.setdefault(kind, []).extend(cache_report.examples[kind])
        metadata["report"] = report.to_dict()
        metadata["cache"] = {"image_size": image_size, "resample": resample, "image_format": image_format}
        info = {
            "complete": True,
            "parameters": parameters,
            "image_size": image_size,
            "resample": resample,
            "image_format": image_format,
            "pixels": PIXELS_NOTE,
            "shards": {split: len(files) for split, files in shard_files.items()},
            "metadata": metadata,
            "cache_report": cache_report.to_dict(),
        }
        atomic_write_json(output / CACHE_INFO, info)
    return load_cache(output)


def cache_shards(output_dir: str | os.PathLike, split: str) -> list[str]:
    """Sorted shard files of one split of a cache."""
    return sorted(str(p) for p in (Path(output_dir) / split).glob("shard-*.parquet"))


def load_cache(output_dir: str | os.PathLike, splits: Sequence[str] | None = None) -> DatasetDict:
    """Load a cache written by `build_cache` with `load_dataset("parquet", ...)`, metadata re-attached."""
    output = Path(output_dir)
    info_path = output / CACHE_INFO
    if not info_path.exists():
        raise FileNotFoundError(
            f"{output} is not a clarity_hf cache (no {CACHE_INFO}); run build_cache first"
        )
    info = json.loads(info_path.read_text(encoding="utf-8"))
    if not info.get("complete", True):
        raise ValueError(
            f"the cache build into {output} did not finish; rerun build_cache with the same parameters to resume it"
        )
    splits = list(splits or info["shards"])
    data_files = {}
    for split in splits:
        files = cache_shards(output, split)
        if len(files) != info["shards"][split]:
            raise ValueError(
                f"cache {output} split {split!r} has {len(files)} of {info['shards'][split]} shards; rerun build_cache"
            )
        data_files[split] = files
    loaded = load_dataset("parquet", data_files=data_files)
    # `findings` (the label names as features) is not in the shards: written here from the manifest's names.
    return DatasetDict({split: attach_metadata(part, info["metadata"]) for split, part in loaded.items()})


def load_dataset_folder(folder: str | os.PathLike) -> DatasetDict | Dataset:
    """A data set folder as the scripts take it: a `build_cache` cache (prepare_chestxray14.py's output) or a
    `save_to_disk` folder."""
    if (Path(folder) / CACHE_INFO).is_file():
        return load_cache(folder)
    loaded = load_from_disk(str(folder))
    # A folder saved before the label names were features gets its `findings` now, while adding a column is cheap
    # (on a selection of rows, such as a patient split, `add_column` first copies the whole table).
    if get_metadata(loaded).get("label_names") is None:
        return loaded
    if isinstance(loaded, DatasetDict):
        return DatasetDict(
            {name: attach_metadata(split, get_metadata(split)) for name, split in loaded.items()}
        )
    return attach_metadata(loaded, get_metadata(loaded))


def cached_pixels(dataset: Dataset, index: int) -> np.ndarray:
    """The cached image of row `index` as a uint8 array (for checks)."""
    return np.asarray(dataset[index]["image"])
