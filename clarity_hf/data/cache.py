# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Preprocessing cache: resize every image once and store the data set as Parquet shards.

Training then reads small 8-bit grayscale images (224 or 512 px; raw PGM bytes by default, or PNG) instead of
decoding 1024x1024 originals. The cache
keeps every column of the source (same features); only `image` (and `anatomy_mask`) change. `boxes`,
`original_size` and the box-frame rule are untouched, so boxes stay in their source frame (see
`clarity_hf.data.features.get_box_frame`).

Layout::

    output_dir/
      clarity_cache.json                   image size, filter, metadata (label names, report), shard counts
      train/shard-00000-of-00087.parquet   ...
      validation/...
      test/...

Each shard is written to a temporary file and renamed when complete, so an interrupted run leaves no partial shard
and a second run skips the shards that exist (resumable). Shards are processed in `num_proc` worker processes
with a tqdm progress bar. `load_cache(output_dir)` gives the `DatasetDict` back (via `load_dataset("parquet")`)
with its metadata re-attached; `push_to_hub` uploads a built data set as Parquet with a dataset card.

An image that cannot be decoded raises a `ValueError` naming it, unless `skip_missing=True`: then the row is left
out, counted, and listed in the cache report (`clarity_hf.data.features.get_build_report(load_cache(...))`).
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, DatasetDict, Features, Image, load_dataset, load_from_disk
from datasets.utils.tqdm import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
from PIL import Image as PILImage
from tqdm.auto import tqdm

from .features import BuildReport, attach_metadata, get_metadata
from .transforms import decode_image, to_grayscale

logger = logging.getLogger(__name__)

CACHE_INFO = "clarity_cache.json"
RESAMPLE = {"lanczos": PILImage.LANCZOS, "box": PILImage.BOX, "bicubic": PILImage.BICUBIC}


def resize_for_cache(image: Any, image_size: int, resample: str = "lanczos") -> PILImage.Image:
    """Decode `image`, convert it to 8-bit grayscale and resize it to `image_size` x `image_size`.

    This is exactly what the cache stores; it is public so that tests and users can reproduce a cached image.
    """
    gray = to_grayscale(decode_image(image))
    if gray.size == (image_size, image_size):
        return gray
    return gray.resize((image_size, image_size), resample=RESAMPLE[resample])


IMAGE_FORMATS = {"png": ("PNG", {"compress_level": 3}), "pgm": ("PPM", {})}


def _encode(image: PILImage.Image, image_format: str = "png") -> dict[str, Any]:
    """8-bit grayscale image -> `{"bytes", "path"}`: lossless PNG (compact) or raw binary PGM (fastest to decode)."""
    fmt, options = IMAGE_FORMATS[image_format]
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return {"bytes": buffer.getvalue(), "path": None}


def _cache_features(features: Features) -> Features:
    columns = dict(features)
    for name in ("image", "anatomy_mask"):
        if name in columns:
            columns[name] = Image()
    return Features(columns)


def _shard_name(index: int, total: int) -> str:
    return f"shard-{index:05d}-of-{total:05d}.parquet"


def _write_shard(job: tuple[Dataset, str, int, str, bool, str]) -> tuple[int, list[str]]:
    """Resize one shard and write it atomically; returns (rows written, problems)."""
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
                raise ValueError("no image (metadata-only row?)")
            image = _encode(resize_for_cache(row["image"], image_size, resample), image_format)
        except (OSError, ValueError, SyntaxError) as err:
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
    tmp = path + ".tmp"
    bars_were_off = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        Dataset.from_dict(columns, features=features).to_parquet(tmp)
    finally:
        if not bars_were_off:
            enable_progress_bars()
    os.replace(tmp, path)
    return len(columns["image"]), problems


def build_cache(
    dataset: DatasetDict | Dataset,
    output_dir: str | os.PathLike,
    image_size: int = 224,
    num_proc: int = 1,
    shard_size: int = 1000,
    resample: str = "lanczos",
    skip_missing: bool = False,
    progress: bool = True,
    image_format: str = "pgm",
) -> DatasetDict:
    """Resize every image of `dataset` once into Parquet shards under `output_dir`; returns `load_cache(...)`.

    Args:
        dataset: a clarity_hf `DatasetDict` (or one `Dataset`, stored as split "train").
        output_dir: cache folder (created; existing complete shards are kept, so a rerun resumes).
        image_size: side of the cached square images (224 or 512 for CLARiTy).
        num_proc: worker processes over shards.
        shard_size: rows per shard.
        resample: "lanczos" (default), "box" (area) or "bicubic".
        skip_missing: skip undecodable images (counted in the report) instead of raising.
        progress: show a tqdm bar over shards.
        image_format: "pgm" (default: raw uint8 behind a PGM header, no inflate: ~50x faster reads than the 1024 px
            originals, ~1.4x the disk of PNG) or "png" (lossless, compact, displayed by the Hub viewer, but only
            ~3x faster than the originals at 512 px). Both decode to the same pixels through the `Image` feature.
    """
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {sorted(IMAGE_FORMATS)}, got {image_format!r}")
    if resample not in RESAMPLE:
        raise ValueError(f"resample must be one of {sorted(RESAMPLE)}, got {resample!r}")
    if isinstance(dataset, Dataset):
        dataset = DatasetDict({"train": dataset})
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    info_path = output / CACHE_INFO
    if info_path.exists():
        previous = json.loads(info_path.read_text())
        wanted = (image_size, resample, image_format)
        found = (previous.get("image_size"), previous.get("resample"), previous.get("image_format", "png"))
        if found != wanted:
            raise ValueError(
                f"{output} holds a cache of {found[0]} px / {found[1]} / {found[2]}; "
                f"use another folder for {image_size} px / {resample} / {image_format}"
            )
    jobs, skipped_shards = [], 0
    shard_counts: dict[str, int] = {}
    for split, part in dataset.items():
        total = max(1, math.ceil(len(part) / shard_size))
        shard_counts[split] = total
        (output / split).mkdir(exist_ok=True)
        for index in range(total):
            path = output / split / _shard_name(index, total)
            if path.exists():
                skipped_shards += 1
                continue
            rows = part.select(range(index * shard_size, min((index + 1) * shard_size, len(part))))
            jobs.append((rows, str(path), image_size, resample, skip_missing, image_format))
    if skipped_shards:
        logger.info("cache %s: %d shard(s) already complete, skipped", output, skipped_shards)
    report = BuildReport.from_dict(get_metadata(dataset).get("report"))
    previous_report = json.loads(info_path.read_text()).get("cache_report") if info_path.exists() else None
    cache_report = BuildReport.from_dict(previous_report)
    bar = tqdm(total=len(jobs), desc=f"caching {image_size}px shards", unit="shard", disable=not progress)
    if num_proc > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=num_proc) as pool:
            for _, problems in pool.map(_write_shard, jobs):
                for message in problems:
                    cache_report.add("undecodable_image", message)
                bar.update(1)
    else:
        for job in jobs:
            _, problems = _write_shard(job)
            for message in problems:
                cache_report.add("undecodable_image", message)
            bar.update(1)
    bar.close()
    cache_report.log(logger)
    metadata = dict(get_metadata(dataset))
    for kind, count in cache_report.counts.items():
        report.counts[kind] = report.counts.get(kind, 0) + count
        report.examples.setdefault(kind, []).extend(cache_report.examples[kind])
    metadata["report"] = report.to_dict()
    metadata["cache"] = {"image_size": image_size, "resample": resample, "image_format": image_format}
    info = {
        "image_size": image_size,
        "resample": resample,
        "image_format": image_format,
        "shards": shard_counts,
        "metadata": metadata,
        "cache_report": cache_report.to_dict(),
    }
    info_path.write_text(json.dumps(info, indent=2))
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
    info = json.loads(info_path.read_text())
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
    for split in loaded:
        attach_metadata(loaded[split], info["metadata"])
    return loaded


def load_dataset_folder(folder: str | os.PathLike) -> DatasetDict | Dataset:
    """A data set folder as the scripts take it: a `build_cache` cache (prepare_chestxray14.py's output) or a
    `save_to_disk` folder."""
    if (Path(folder) / CACHE_INFO).is_file():
        return load_cache(folder)
    return load_from_disk(str(folder))


def make_dataset_card(
    dataset: DatasetDict, pretty_name: str = "clarity_hf chest X-ray data", license: str = "other"
) -> str:
    """Markdown body of a dataset card for a clarity_hf `DatasetDict` (label names, splits, columns, caveats)."""
    metadata = get_metadata(dataset)
    splits = "\n".join(f"| {name} | {len(part):,} |" for name, part in dataset.items())
    labels = ", ".join(metadata.get("label_names", []))
    frame = metadata.get("box_frame", "original_size")
    frame_text = (
        f"a fixed {frame[0]}x{frame[1]} frame"
        if isinstance(frame, list)
        else "the frame given by `original_size`"
    )
    size = metadata.get("cache", {}).get("image_size")
    fmt = metadata.get("cache", {}).get("image_format", "png").upper()
    return f"""---
license: {license}
pretty_name: {pretty_name}
task_categories:
- image-classification
- object-detection
tags:
- medical
- chest-x-ray
- clarity_hf
---

# {pretty_name}

Built with [clarity_hf](https://github.com/) from: {metadata.get("source", "unknown source")}.
{"Images are resized to " + str(size) + "x" + str(size) + " 8-bit grayscale (" + fmt + ")." if size else ""}

| split | rows |
|---|---|
{splits}

**Labels** (`labels` is a multi-hot float vector in this order): {labels}

**Boxes** (`boxes`: label, x, y, w, h, top-left corner) are in {frame_text}; `box_split` ("tune" / "eval") marks
the two halves of the localization benchmark.

Columns: `image`, `labels`, `image_id`, `patient_id`, `age`, `sex`, `view_position`, `follow_up`, `original_size`
(width, height), `pixel_spacing` (mm), `boxes`, `box_split`.

clarity_hf metadata:

```json
{json.dumps(metadata, indent=1)[:4000]}
```

Use of the source data is subject to its own terms; cite its authors (for NIH ChestX-ray14: Wang et al., CVPR 2017).
"""


def push_to_hub(
    dataset: DatasetDict | str | os.PathLike,
    repo_id: str,
    private: bool = True,
    token: str | None = None,
    card_text: str | None = None,
    max_shard_size: str = "500MB",
) -> None:
    """Upload a clarity_hf `DatasetDict` (or a cache folder) to the Hub as Parquet, with a dataset card.

    The data goes up with `DatasetDict.push_to_hub` (Parquet shards and the `dataset_info` YAML it writes); the
    card body (`make_dataset_card`, or `card_text`) then replaces the README text, keeping that YAML.
    """
    from huggingface_hub import DatasetCard

    if not isinstance(dataset, DatasetDict):
        dataset = load_cache(dataset)
    body = card_text or make_dataset_card(dataset)
    dataset.push_to_hub(repo_id, private=private, token=token, max_shard_size=max_shard_size)
    card = DatasetCard.load(repo_id, repo_type="dataset", token=token)
    generated = DatasetCard(body)
    for key, value in generated.data.to_dict().items():
        if key not in card.data.to_dict():
            setattr(card.data, key, value)
    card.text = generated.text
    card.push_to_hub(repo_id, repo_type="dataset", token=token)


def cached_pixels(dataset: Dataset, index: int) -> np.ndarray:
    """The cached image of row `index` as a uint8 array (for checks)."""
    return np.asarray(dataset[index]["image"])
