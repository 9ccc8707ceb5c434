# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Hostile and careless archive trees and output folders for `clarity-predict --output-dir`: every case builds its
input here. A file name that is not UTF-8, a link that leads nowhere or to itself, a FIFO, a folder that cannot be
listed: each gets a row, none ends or hangs the run. A setup error (environment, processor, model) stops the run
before the first image and leaves no row. A damaged run.json, part file or lock names the file and the remedy. A
full disk leaves the tables as they were and no temporary file."""

import copy
import csv
import errno
import json
import os

import numpy as np
import pytest
from PIL import Image

from clarity_hf.commands.predict import main as predict_main
from clarity_hf.files import UnusableFileError
from clarity_hf.inference import ArchiveOptions, find_images, run_archive
from clarity_hf.inference.archive import ArchiveSetupError
from clarity_hf.inference.table import ResultStore


def options(out, **extra):
    return ArchiveOptions(output_dir=out, batch_size=2, num_workers=0, progress=False, **extra)


def read_table(path):
    """A table as written: the non-UTF-8 bytes of a file name come back as its surrogate escapes."""
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as handle:
        rows = list(csv.reader(handle))
    return rows[0], rows[1:]


def save_png(path, value=100, size=(40, 30)):
    Image.fromarray(np.full(size, value, np.uint8)).save(path, format="PNG")
    return path


def leftovers(folder):
    """Temporary files a write left behind anywhere in `folder`."""
    return sorted(str(p) for p in folder.rglob("*") if ".tmp-" in p.name)


# ------------------------------------------------------------------------------------------------ file names
def test_non_utf8_file_name_round_trips_in_every_table(archive_pipe, tmp_path):
    """`caf\\xe9.png` (Latin-1, as old PACS exports write it) and a broken `bad\\xff.png` end in the tables under
    their own bytes, also through the parts and parquet, and a rerun finds them done."""
    root = tmp_path / "archive"
    root.mkdir()
    good = os.fsdecode(os.fsencode(str(root)) + b"/caf\xe9.png")
    bad = os.fsdecode(os.fsencode(str(root)) + b"/bad\xff.png")
    save_png(good)
    with open(bad, "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\nbroken")
    out = tmp_path / "out"
    summary = run_archive(
        [root], archive_pipe.model, archive_pipe.image_processor, options(out, parquet=True, heatmaps="npz")
    )
    assert (summary.images, summary.failed) == (1, 1)
    header, rows = read_table(out / "predictions.csv")
    assert [row[0] for row in rows] == [good]
    assert os.fsencode(rows[0][0]).endswith(
        b"/caf\xe9.png"
    )  # the file's own bytes, not a replacement character
    with np.load(out / rows[0][header.index("heatmap")]) as stored:  # the heatmap file of that row exists
        assert stored["heatmaps"].shape[1:] == (40, 30)
    _, errors = read_table(out / "errors.csv")
    assert [e[0] for e in errors] == [bad]
    import pyarrow.parquet as pq

    assert pq.read_table(out / "predictions.parquet").column("path").to_pylist() == [os.fsencode(good)]
    assert pq.read_table(out / "errors.parquet").column("path").to_pylist() == [os.fsencode(bad)]
    again = run_archive(
        [root], archive_pipe.model, archive_pipe.image_processor, options(out, parquet=True, heatmaps="npz")
    )
    assert (again.new_rows, again.new_errors, again.skipped) == (0, 0, 2)


def test_non_utf8_file_name_round_trips_through_a_part_file(tmp_path):
    """A run killed before compaction leaves the name in a part file; the rerun reads it back as the same key."""
    name = os.fsdecode(b"/archive/caf\xe9.png")
    store = ResultStore(tmp_path, ["path", "value"])
    store.append([[name, "1"]], [[os.fsdecode(b"/archive/x\xff.dcm"), "reason"]])
    again = ResultStore(tmp_path, ["path", "value"])
    again.load()
    assert again.rows == {name: [name, "1"]}
    assert list(again.errors) == [os.fsdecode(b"/archive/x\xff.dcm")]


# ------------------------------------------------------------------------------------------------ entries
def _dangling_symlink(root):
    (root / "dangling.png").symlink_to(root / "gone.png")
    return root / "dangling.png", "which does not exist"


def _symlink_loop(root):
    (root / "loop.png").symlink_to(root / "loop.png")
    return root / "loop.png", "symbolic link loop"


def _fifo(root):
    os.mkfifo(root / "archive_pipe.png")  # opening it would block the run forever
    return root / "archive_pipe.png", "FIFO"


def _symlink_to_folder(root):
    (root / "elsewhere").mkdir()
    save_png(root / "elsewhere" / "x.png")
    (root / "sub").mkdir()
    (root / "sub" / "link").symlink_to(root / "elsewhere")
    return root / "sub" / "link", "not followed"


ENTRIES = {
    "dangling symlink": _dangling_symlink,
    "symlink loop": _symlink_loop,
    "fifo": _fifo,
    "symlink to a folder": _symlink_to_folder,
}


@pytest.mark.parametrize("kind", list(ENTRIES))
def test_entry_that_is_not_read_gets_an_error_row(archive_pipe, tmp_path, kind):
    root = tmp_path / "archive"
    root.mkdir()
    save_png(root / "good.png")
    path, reason = ENTRIES[kind](root)
    out = tmp_path / "out"
    summary = run_archive([root], archive_pipe.model, archive_pipe.image_processor, options(out))
    _, rows = read_table(out / "predictions.csv")
    assert str(root / "good.png") in [row[0] for row in rows]
    errors = dict(read_table(out / "errors.csv")[1])
    assert str(path) in errors, errors
    assert reason in errors[str(path)] and str(path) in errors[str(path)]
    assert summary.failed == len(errors)
    # given as a PATH itself, the entry gets the same reason
    if kind != "symlink to a folder":  # a folder given by name is read (through the link)
        _, problems = find_images([path])
        assert [(str(p), r) for p, r in problems] == [(str(path), errors[str(path)])]


def test_unreadable_folder_gets_an_error_row(archive_pipe, tmp_path, monkeypatch):
    """A sub-folder that cannot be listed (permission denied) is a row, not a silent gap in the archive. Root
    ignores permissions, so there the denial comes from `os.scandir`, as the kernel would give it."""
    root = tmp_path / "archive"
    (root / "locked").mkdir(parents=True)
    save_png(root / "locked" / "hidden_from_us.png")
    save_png(root / "good.png")
    locked = root / "locked"
    if os.geteuid() == 0:
        real_scandir = os.scandir

        def scandir(path="."):
            if os.fspath(path) == str(locked):
                raise PermissionError(errno.EACCES, "Permission denied", str(locked))
            return real_scandir(path)

        monkeypatch.setattr(os, "scandir", scandir)
    else:
        locked.chmod(0)
        monkeypatch.setattr(locked, "chmod", locked.chmod)  # keep a handle for the clean-up below
    try:
        run_archive([root], archive_pipe.model, archive_pipe.image_processor, options(tmp_path / "out"))
    finally:
        locked.chmod(0o755)
    errors = dict(read_table(tmp_path / "out" / "errors.csv")[1])
    assert "folder cannot be listed (Permission denied)" in errors[str(locked)]
    _, rows = read_table(tmp_path / "out" / "predictions.csv")
    assert [row[0] for row in rows] == [str(root / "good.png")]


# ------------------------------------------------------------------------------------------------ setup errors
def _assert_nothing_recorded(out):
    assert not (out / "predictions.csv").exists() and not (out / "errors.csv").exists()
    assert not (out / ".parts").exists()


@pytest.mark.parametrize("value", ["-5", "abc"])
def test_bad_pixel_limit_environment_stops_before_the_first_image(
    archive_pipe, archive_model_dir, tmp_path, monkeypatch, capsys, value
):
    root = tmp_path / "archive"
    root.mkdir()
    save_png(root / "a.png")
    monkeypatch.setenv("CLARITY_MAX_IMAGE_PIXELS", value)
    out = tmp_path / "out"
    with pytest.raises(ArchiveSetupError, match="CLARITY_MAX_IMAGE_PIXELS"):
        run_archive([root], archive_pipe.model, archive_pipe.image_processor, options(out))
    _assert_nothing_recorded(out)
    code = predict_main(
        [str(root), "--model", str(archive_model_dir), "--output-dir", str(out), "--num-workers", "0"]
    )
    assert code == 2 and "CLARITY_MAX_IMAGE_PIXELS" in capsys.readouterr().err
    _assert_nothing_recorded(out)


def test_hostile_preprocessor_size_stops_before_the_first_image(archive_pipe, tmp_path):
    """A preprocessor_config.json `size` of 100000: 10^10 pixels per image, a MemoryError for each on main."""
    root = tmp_path / "archive"
    root.mkdir()
    save_png(root / "a.png")
    processor = copy.deepcopy(archive_pipe.image_processor)
    processor.size = {"height": 100000, "width": 100000}
    out = tmp_path / "out"
    with pytest.raises(ArchiveSetupError, match="100000 x 100000"):
        run_archive([root], archive_pipe.model, processor, options(out))
    _assert_nothing_recorded(out)


def test_model_that_cannot_run_stops_before_the_first_image(archive_pipe, tmp_path):
    """A model whose forward fails on any input (a kernel missing on this device, a broken custom layer) would
    make every image an error row; it stops the run instead, naming the model's error."""
    root = tmp_path / "archive"
    root.mkdir()
    save_png(root / "a.png")
    model = copy.deepcopy(archive_pipe.model)

    def broken_forward(*args, **kwargs):
        raise RuntimeError("no kernel image is available for execution on the device")

    model.forward = broken_forward
    out = tmp_path / "out"
    with pytest.raises(ArchiveSetupError, match="fails on a valid 32 x 32 test image.*no kernel image"):
        run_archive([root], model, archive_pipe.image_processor, options(out))
    _assert_nothing_recorded(out)


def test_error_rows_are_retried_when_the_reading_settings_change(archive_pipe, tmp_path, monkeypatch):
    """A pixel limit set too low makes every image an error row; the corrected rerun reads them instead of
    skipping them as done. So does a folder whose run.json predates the recorded reading settings."""
    root = tmp_path / "archive"
    root.mkdir()
    for index in range(3):
        save_png(root / f"{index}.png", value=50 * index, size=(100, 80))
    out = tmp_path / "out"
    monkeypatch.setenv("CLARITY_MAX_IMAGE_PIXELS", "5000")  # above the 64 x 64 model input, below the images
    first = run_archive([root], archive_pipe.model, archive_pipe.image_processor, options(out))
    assert (first.images, first.failed) == (0, 3)
    monkeypatch.delenv("CLARITY_MAX_IMAGE_PIXELS")
    second = run_archive([root], archive_pipe.model, archive_pipe.image_processor, options(out))
    assert (second.images, second.failed, second.new_rows, second.skipped) == (3, 0, 3, 0)
    assert read_table(out / "errors.csv")[1] == []
    # the same settings again: the rows are kept, nothing is recomputed
    third = run_archive([root], archive_pipe.model, archive_pipe.image_processor, options(out))
    assert (third.new_rows, third.skipped) == (0, 3)

    # A folder written before the reading settings were recorded: its error rows are retried once.
    (root / "3.png").write_bytes(b"not yet a PNG")
    run_archive([root], archive_pipe.model, archive_pipe.image_processor, options(out))
    save_png(root / "3.png")
    run_file = out / "run.json"
    recorded = json.loads(run_file.read_text())
    del recorded["reading"]
    run_file.write_text(json.dumps(recorded))
    fourth = run_archive([root], archive_pipe.model, archive_pipe.image_processor, options(out))
    assert (fourth.new_rows, fourth.images, fourth.failed) == (1, 4, 0)


# ------------------------------------------------------------------------------------------------ output folder
DAMAGED_FILES = {
    "corrupt run.json": ("run.json", [b"{not json", b"[1, 2]", b"\xff\xfe"]),
    "corrupt part file": (
        ".parts/part-00000001.jsonl",
        [b'{"kind": "row", "cells": [', b'{"kind": "row", "cells": ["x"]}', b"\x00\x01"],
    ),
    "corrupt table": ("predictions.csv", [b"path,height\x00,width\n", b"path,height,width\n"]),
}


@pytest.mark.parametrize("kind", list(DAMAGED_FILES))
def test_damaged_output_file_names_the_file_and_overwrite(archive_pipe, tmp_path, kind):
    name, damages = DAMAGED_FILES[kind]
    root = tmp_path / "archive"
    root.mkdir()
    save_png(root / "a.png")
    out = tmp_path / "out"
    run_archive([root], archive_pipe.model, archive_pipe.image_processor, options(out))
    target = out / name
    target.parent.mkdir(exist_ok=True)
    for damage in damages:
        target.write_bytes(damage)
        with pytest.raises(UnusableFileError, match="--overwrite") as raised:
            run_archive([root], archive_pipe.model, archive_pipe.image_processor, options(out))
        assert str(target) in str(raised.value)
    assert (
        run_archive(
            [root], archive_pipe.model, archive_pipe.image_processor, options(out, overwrite=True)
        ).images
        == 1
    )


def test_lock_that_is_a_folder_is_a_clear_error(archive_pipe, archive_model_dir, tmp_path, capsys):
    root = tmp_path / "archive"
    root.mkdir()
    save_png(root / "a.png")
    out = tmp_path / "out"
    (out / ".lock").mkdir(parents=True)
    with pytest.raises(UnusableFileError, match="not a regular file") as raised:
        run_archive([root], archive_pipe.model, archive_pipe.image_processor, options(out))
    assert str(out / ".lock") in str(raised.value)
    code = predict_main(
        [str(root), "--model", str(archive_model_dir), "--output-dir", str(out), "--num-workers", "0"]
    )
    assert code == 2 and ".lock" in capsys.readouterr().err


def test_disk_full_leaves_the_tables_whole_and_no_temporary_file(archive_pipe, tmp_path, monkeypatch):
    """ENOSPC at the fsync of any write (a part, a table): the run fails with the error, the tables of the earlier
    run are unchanged byte for byte, and no `.tmp-` file is left; the rerun with space completes."""
    root = tmp_path / "archive"
    root.mkdir()
    save_png(root / "a.png")
    out = tmp_path / "out"
    run_archive([root], archive_pipe.model, archive_pipe.image_processor, options(out, parquet=True))
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".lock"}
    save_png(root / "b.png")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        run_archive([root], archive_pipe.model, archive_pipe.image_processor, options(out, parquet=True))
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".lock"} == before
    assert leftovers(out) == []
    summary = run_archive(
        [root], archive_pipe.model, archive_pipe.image_processor, options(out, parquet=True)
    )
    assert (summary.images, summary.new_rows) == (2, 1)


@pytest.mark.parametrize("names", [("path", "boxes"), ("height",), ("heatmap", "overlay")])
def test_labels_named_like_the_table_columns_stop_before_the_first_image(
    archive_pipe, tmp_path, capsys, names
):
    """A config whose id2label holds "path", "boxes", "height", ...: predictions.csv would have two columns of that
    name (pandas reads the score as "boxes" and the boxes as "boxes.1"; --parquet keeps one of them)."""
    root = tmp_path / "archive"
    root.mkdir()
    save_png(root / "a.png")
    model = copy.deepcopy(archive_pipe.model)
    labels = dict(model.config.id2label)
    labels.update({index: name for index, name in enumerate(names)})
    model.config.id2label = labels
    model.config.label2id = {name: index for index, name in labels.items()}
    out = tmp_path / "out"
    with pytest.raises(ArchiveSetupError, match="id2label") as info:
        run_archive([root], model, archive_pipe.image_processor, options(out, parquet=True))
    for name in names:
        assert repr(name) in str(info.value)
    _assert_nothing_recorded(out)
