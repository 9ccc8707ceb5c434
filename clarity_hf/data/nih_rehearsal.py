# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""An NIH ChestX-ray14-shaped folder with the real metadata and rendered pixels, to rehearse the real data path.

`write_nih_rehearsal(out, num_images, metadata_dir)` picks whole patients of the real release metadata
(`Data_Entry_2017_v2020.csv`, `BBox_List_2017.csv`, plain or gzipped) and writes, in the release's layout::

    out/
      Data_Entry_2017_v2020.csv    the chosen images' real rows, verbatim, under the real header
      BBox_List_2017.csv           the chosen images' real boxes, verbatim, under the real header (trailing ",,,")
      train_val_list.txt           split by patient (generated: the official lists are not available offline)
      test_list.txt
      README.md                    what this folder is and is not
      images_001/images/*.png ...  each image in the folder the release puts it in (by position in name order:
                                   4,999 in images_001, 10,000 in each of images_002..011, the rest in images_012)

Pixels: 1024 x 1024 8-bit grayscale PNGs (and a few RGBA PNGs, as the release has) from the synthetic renderer
(`clarity_hf.data.synthetic.render_synthetic_cxr`), with the row's real labels: every finding is drawn, and every
real box gets a lesion of its class drawn inside it. An image depends only on its id and the seed (byte-identical
reruns, whatever `num_proc`).

Selection: patients with boxes go to `test` (as in the official split, where all 880 boxed images are test images),
fewest images first, until `test` holds max(the official test fraction, up to half) of `num_images`; the remaining
budget goes to other whole patients for `train_val`. All 880 boxed images are included once `num_images` leaves
room for their 726 patients (15,938 images).
"""

from __future__ import annotations

import gzip
import io
import os
import time
import zlib
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..configuration_clarity import NIH_LABEL_ALIASES as LABEL_ALIASES
from ..configuration_clarity import NIH_PATHOLOGIES
from .synthetic import render_synthetic_cxr

RELEASE_SIZE = 1024
METADATA_NAME = "Data_Entry_2017_v2020.csv"
BOXES_NAME = "BBox_List_2017.csv"
# the release's image tarballs, by position of the name in sorted order: 4,999 images, then 10,000 per folder
FIRST_FOLDER_SIZE = 4999
FOLDER_SIZE = 10000
NUM_FOLDERS = 12
OFFICIAL_TEST_FRACTION = 25596 / 112120
ALL_BOXED_PATIENT_IMAGES = 15938  # images of the 726 patients with a box
RGBA_PER_IMAGES = 200  # one RGBA PNG per this many images (at least one)

FOLDER_README = """# NIH ChestX-ray14-shaped rehearsal folder (rendered pixels, real metadata)

Written by `clarity make-nih-rehearsal` (clarity_hf.data.nih_rehearsal), seed {seed}.

- `{metadata}` and `{boxes}` hold the **real** NIH rows and boxes of the {num_images} chosen images, verbatim.
- The images are **synthetic** 1024 x 1024 renders with the rows' labels (lesions inside the real boxes); they are
  not NIH images, and no number measured on them says anything about NIH ChestX-ray14.
- `train_val_list.txt` / `test_list.txt` are **generated** by patient (every patient with a box in test); the
  official split lists are not available here, so these are NOT the official lists.
- Images: {num_gray} grayscale PNGs, {num_rgba} RGBA PNGs; {num_boxed} boxed images with {num_boxes} boxes;
  {num_patients} patients ({num_test} test images).
"""


@dataclass
class ReleaseMetadata:
    """The real metadata, kept as raw lines so that the written files carry them verbatim."""

    header: str
    lines: dict[str, str]  # image id -> raw line (with its newline)
    labels: dict[str, list[str]]
    patients: dict[str, list[str]]  # patient id -> image ids
    box_header: str
    box_lines: dict[str, list[str]] = field(default_factory=dict)  # image id -> raw lines
    boxes: dict[str, list[tuple[str, float, float, float, float]]] = field(default_factory=dict)
    order: dict[str, int] = field(default_factory=dict)  # position of the name among all release names


def _open_lines(directory: Path, name: str) -> list[str]:
    for candidate in (directory / name, directory / (name + ".gz")):
        if candidate.is_file():
            raw = candidate.read_bytes()
            if candidate.suffix == ".gz":
                raw = gzip.decompress(raw)
            return raw.decode("utf-8").splitlines(keepends=True)
    raise FileNotFoundError(f"{directory}: neither {name} nor {name}.gz")


def read_release_metadata(metadata_dir: str | os.PathLike) -> ReleaseMetadata:
    """Read the release's metadata CSV and box CSV (plain or .gz) from `metadata_dir`."""
    directory = Path(metadata_dir)
    rows = _open_lines(directory, METADATA_NAME)
    meta = ReleaseMetadata(header=rows[0], lines={}, labels={}, patients=defaultdict(list), box_header="")
    for number, line in enumerate(rows[1:], start=2):
        cells = line.rstrip("\r\n").split(",")
        if len(cells) < 4:
            raise ValueError(f"{directory / METADATA_NAME}: line {number}: malformed row {line.strip()!r}")
        image_id, findings, patient = cells[0], cells[1], cells[3]
        meta.lines[image_id] = line
        meta.labels[image_id] = [] if findings == "No Finding" else findings.split("|")
        meta.patients[patient].append(image_id)
    meta.order = {image_id: i for i, image_id in enumerate(sorted(meta.lines))}
    box_rows = _open_lines(directory, BOXES_NAME)
    meta.box_header = box_rows[0]
    for number, line in enumerate(box_rows[1:], start=2):
        cells = line.rstrip("\r\n").split(",")
        if len(cells) < 6 or cells[0] not in meta.lines:
            raise ValueError(
                f"{directory / BOXES_NAME}: line {number}: malformed or unknown row {line.strip()!r}"
            )
        meta.box_lines.setdefault(cells[0], []).append(line)
        label = LABEL_ALIASES.get(cells[1], cells[1])
        meta.boxes.setdefault(cells[0], []).append((label, *map(float, cells[2:6])))
    return meta


def release_folder(position: int) -> str:
    """`images_0NN` of the image at `position` in the release's name order."""
    if position < FIRST_FOLDER_SIZE:
        return "images_001"
    return f"images_{min(2 + (position - FIRST_FOLDER_SIZE) // FOLDER_SIZE, NUM_FOLDERS):03d}"


def select_patients(meta: ReleaseMetadata, num_images: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Whole patients, `num_images` images in all (exactly, when single-image patients allow): returns the
    (train_val, test) image ids. Boxed patients fill `test` fewest images first; others fill the rest."""
    if num_images < 2:
        raise ValueError(f"num_images must be at least 2 (a train and a test image), got {num_images}")
    rng = np.random.default_rng(seed)
    boxed = {pid for pid, ids in meta.patients.items() if any(i in meta.boxes for i in ids)}
    patients = sorted(meta.patients)
    ranks = dict(zip(patients, rng.permutation(len(patients))))
    test_budget = max(
        round(num_images * OFFICIAL_TEST_FRACTION), min(num_images // 2, ALL_BOXED_PATIENT_IMAGES)
    )
    test_budget = min(max(test_budget, 1), num_images - 1)
    boxed_order = sorted(
        boxed,
        key=lambda p: (len(meta.patients[p]) / sum(i in meta.boxes for i in meta.patients[p]), ranks[p]),
    )
    others = sorted(set(patients) - boxed, key=lambda p: ranks[p])

    def fill(candidates, budget, taken):
        chosen, used = [], 0
        for pid in candidates:
            size = len(meta.patients[pid])
            if pid not in taken and used + size <= budget:
                chosen.append(pid)
                taken.add(pid)
                used += size
            if used == budget:
                break
        return chosen, used

    taken: set[str] = set()
    test, used = fill(boxed_order, test_budget, taken)
    if used < test_budget:
        more, extra = fill(others, test_budget - used, taken)
        test, used = test + more, used + extra
    train_val, _ = fill(others, num_images - used, taken)
    ids = lambda group: sorted(i for pid in group for i in meta.patients[pid])  # noqa: E731
    return ids(train_val), ids(test)


def render_release_image(
    meta: ReleaseMetadata,
    image_id: str,
    seed: int = 0,
    image_size: int = RELEASE_SIZE,
    rgba: bool = False,
    with_boxed_lesions: bool = True,
    findings=None,
):
    """Render `image_id` with its real labels: each real box gets its class's lesion inside it (boxes scaled from
    the 1024 frame to `image_size`); every other finding is drawn by the renderer. Returns (PIL image, sample)."""
    names = [LABEL_ALIASES.get(name, name) for name in meta.labels[image_id]]
    unknown = set(names) - set(NIH_PATHOLOGIES)
    if unknown:
        raise ValueError(f"{METADATA_NAME}: {image_id}: unknown label(s) {sorted(unknown)}")
    labels = np.array([name in names for name in NIH_PATHOLOGIES], dtype=np.float32)
    boxes = meta.boxes.get(image_id, [])
    boxed_names = {box[0] for box in boxes}
    draw = set(names) - boxed_names if findings is None else set(findings) - boxed_names
    placed = (
        [(label, [c / RELEASE_SIZE for c in xywh]) for label, *xywh in boxes] if with_boxed_lesions else []
    )
    patient, follow_up = image_id[:-4].split("_")
    sample = render_synthetic_cxr(
        seed,
        "train",
        int(patient) * 1000 + int(follow_up),
        image_size,
        findings=draw,
        labels=labels,
        placed=placed,
    )
    image = Image.fromarray(sample.image, mode="L")
    return (image.convert("RGBA") if rgba else image), sample


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


_WORKER_META: ReleaseMetadata | None = None


def _init_worker(meta: ReleaseMetadata) -> None:
    global _WORKER_META
    _WORKER_META = meta


def _write_images(job: tuple[str, list[tuple[str, str, bool]], int]) -> int:
    out, items, seed = job
    for image_id, folder, rgba in items:
        image, _ = render_release_image(_WORKER_META, image_id, seed=seed, rgba=rgba)
        path = Path(out) / folder / "images" / image_id
        tmp = path.with_suffix(".png.tmp")
        tmp.write_bytes(_png_bytes(image))
        tmp.replace(path)
    return len(items)


def rgba_images(image_ids: list[str], seed: int = 0) -> set[str]:
    """A few RGBA images, as the release has: one per RGBA_PER_IMAGES (at least one), by a seeded hash of the id."""
    count = max(1, len(image_ids) // RGBA_PER_IMAGES)
    return set(sorted(image_ids, key=lambda i: zlib.crc32(f"{seed}:{i}".encode()))[:count])


def write_nih_rehearsal(
    output_dir: str | os.PathLike,
    num_images: int,
    metadata_dir: str | os.PathLike,
    seed: int = 0,
    num_proc: int | None = None,
) -> dict:
    """Write the rehearsal folder (see the module docstring); returns a summary (counts, seconds, ms per image).
    Images already written are kept (a rerun resumes)."""
    start = time.perf_counter()
    meta = read_release_metadata(metadata_dir)
    train_val, test = select_patients(meta, num_images, seed)
    chosen = sorted(train_val + test)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / METADATA_NAME, "w", encoding="utf-8", newline="") as handle:
        chosen_set = set(chosen)  # rows in the release file's own order
        handle.write(meta.header + "".join(line for i, line in meta.lines.items() if i in chosen_set))
    with open(out / BOXES_NAME, "w", encoding="utf-8", newline="") as handle:
        handle.write(meta.box_header + "".join(line for i in chosen for line in meta.box_lines.get(i, [])))
    for name, ids in (("train_val_list.txt", train_val), ("test_list.txt", test)):
        (out / name).write_text("".join(i + "\n" for i in ids), encoding="utf-8")
    rgba = rgba_images(chosen, seed)
    todo = []
    for image_id in chosen:
        folder = release_folder(meta.order[image_id])
        (out / folder / "images").mkdir(parents=True, exist_ok=True)
        if not (out / folder / "images" / image_id).is_file():
            todo.append((image_id, folder, image_id in rgba))
    num_proc = max(1, min(os.cpu_count() or 1, 8) if num_proc is None else int(num_proc))
    chunk = max(1, min(32, -(-len(todo) // num_proc)))
    jobs = [(str(out), todo[k : k + chunk], seed) for k in range(0, len(todo), chunk)]
    render_start = time.perf_counter()
    if num_proc > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(num_proc, initializer=_init_worker, initargs=(meta,)) as pool:
            list(pool.map(_write_images, jobs))
    else:
        _init_worker(meta)
        for job in jobs:
            _write_images(job)
    render_seconds = time.perf_counter() - render_start
    boxed = [i for i in chosen if i in meta.boxes]
    summary = {
        "images": len(chosen),
        "train_val_images": len(train_val),
        "test_images": len(test),
        "patients": len({i.split("_")[0] for i in chosen}),
        "boxed_images": len(boxed),
        "boxes": sum(len(meta.boxes[i]) for i in boxed),
        "rgba_images": len(rgba),
        "rendered": len(todo),
        "num_proc": num_proc,
        "seconds": round(time.perf_counter() - start, 2),
        "ms_per_image_wall": round(1000 * render_seconds / max(len(todo), 1), 1),
        "ms_per_image_per_process": round(1000 * render_seconds * num_proc / max(len(todo), 1), 1),
    }
    (out / "README.md").write_text(
        FOLDER_README.format(
            seed=seed,
            metadata=METADATA_NAME,
            boxes=BOXES_NAME,
            num_images=len(chosen),
            num_gray=len(chosen) - len(rgba),
            num_rgba=len(rgba),
            num_boxed=summary["boxed_images"],
            num_boxes=summary["boxes"],
            num_patients=summary["patients"],
            num_test=len(test),
        ),
        encoding="utf-8",
    )
    return summary
