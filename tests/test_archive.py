# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""`clarity-predict PATH... --output-dir OUT`: a tree of good and bad files gives one row per good image and one
error per bad file; reruns (also after a SIGKILL) never duplicate or change a row; arguments are checked first."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from archive_testing import make_tree, write_dicom
from helpers import REPO_ROOT, subprocess_env
from PIL import Image

from clarity_hf.commands.predict import main as predict_main
from clarity_hf.configuration_clarity import NIH_PATHOLOGIES
from clarity_hf.inference import ArchiveOptions, find_images, run_archive

COLUMNS = ["path", "height", "width", *NIH_PATHOLOGIES, "boxes", "heatmap", "overlay", "overlay_class"]


def read_table(path):
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    return rows[0], rows[1:]


def test_tree_gives_each_good_image_once_and_each_bad_file_with_its_reason(archive_pipe, tmp_path):
    root = tmp_path / "archive"
    good, bad = make_tree(root)
    out = tmp_path / "out"
    options = ArchiveOptions(
        output_dir=out,
        batch_size=3,
        num_workers=0,
        threshold=0.0,
        heatmaps="npz",
        overlays=True,
        parquet=True,
        progress=False,
    )
    summary = run_archive(
        [root], archive_pipe.model, archive_pipe.image_processor, options, model_name="tiny"
    )
    header, rows = read_table(out / "predictions.csv")
    assert header == COLUMNS
    assert [row[0] for row in rows] == sorted(good)  # each good image once, in path order
    for row in rows:
        record = dict(zip(header, row))
        height, width = good[record["path"]]
        assert (int(record["height"]), int(record["width"])) == (height, width)
        probabilities = [float(record[name]) for name in NIH_PATHOLOGIES]
        assert all(0.0 < p < 1.0 for p in probabilities)
        boxes = json.loads(record["boxes"])
        assert {b["label"] for b in boxes} == set(NIH_PATHOLOGIES)  # threshold 0: every class has a box
        for b in boxes:
            x0, y0, x1, y1 = b["box"]
            assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
            assert 0 <= b["score"] <= float(record[b["label"]]) + 1e-6
        with np.load(out / record["heatmap"]) as stored:
            maps = stored["heatmaps"]
            assert maps.dtype == np.uint8 and maps.shape == (14, height, width)
            assert list(stored["labels"]) == list(NIH_PATHOLOGIES) and maps.max() == 255
        probabilities_by_name = dict(zip(NIH_PATHOLOGIES, probabilities))
        assert record["overlay_class"] == max(probabilities_by_name, key=probabilities_by_name.get)
        with Image.open(out / record["overlay"]) as overlay:
            # the X-ray at its own size, with the colour bar to its right and the caption band below
            assert overlay.width > width and overlay.height > height and overlay.mode == "RGB"
    header, errors = read_table(out / "errors.csv")
    assert header == ["path", "reason"]
    assert [e[0] for e in errors] == sorted(bad)
    for path, reason in errors:
        assert bad[path] in reason, (path, reason)
    assert (summary.images, summary.failed, summary.new_rows, summary.new_errors) == (6, 4, 6, 4)
    import pyarrow.parquet as pq

    table = pq.read_table(out / "predictions.parquet")
    assert table.column_names == COLUMNS and table.num_rows == 6
    assert (
        str(table.schema.field("Mass").type) == "double" and str(table.schema.field("height").type) == "int64"
    )

    # A rerun finds everything done: no new row, the tables unchanged byte for byte.
    before = {name: (out / name).read_bytes() for name in ("predictions.csv", "errors.csv")}
    again = run_archive([root], archive_pipe.model, archive_pipe.image_processor, options, model_name="tiny")
    assert (again.new_rows, again.new_errors, again.skipped) == (0, 0, 10)
    assert {name: (out / name).read_bytes() for name in before} == before
    # A new image is added to the table once, in its sorted place.
    Image.fromarray(np.full((50, 40), 128, np.uint8)).save(root / "a" / "added.png")
    third = run_archive([root], archive_pipe.model, archive_pipe.image_processor, options, model_name="tiny")
    assert third.new_rows == 1
    _, rows = read_table(out / "predictions.csv")
    assert [row[0] for row in rows] == sorted([*good, str(root / "a" / "added.png")])
    # Other settings in the same folder are refused, naming what changed.
    with pytest.raises(ValueError, match="threshold"):
        run_archive(
            [root],
            archive_pipe.model,
            archive_pipe.image_processor,
            ArchiveOptions(
                output_dir=out, num_workers=0, threshold=0.3, heatmaps="npz", overlays=True, parquet=True
            ),
            model_name="tiny",
        )


def test_rows_match_the_processor_and_model_run_one_by_one(archive_pipe, tmp_path):
    """The batched, collated path gives the numbers of a plain per-image call."""
    import torch

    root = tmp_path / "images"
    good, _ = make_tree(root)
    out = tmp_path / "out"
    run_archive(
        [root],
        archive_pipe.model,
        archive_pipe.image_processor,
        ArchiveOptions(output_dir=out, batch_size=4, num_workers=2, progress=False),
    )
    _, rows = read_table(out / "predictions.csv")
    for row in rows:
        inputs = archive_pipe.image_processor(row[0], return_tensors="pt")
        with torch.no_grad():
            expected = torch.sigmoid(archive_pipe.model(**inputs).logits[0]).numpy()
        np.testing.assert_allclose([float(v) for v in row[3:17]], expected, atol=2e-6)


def test_compressed_dicom_without_decoders_names_syntax_and_extra(archive_pipe, tmp_path, monkeypatch):
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEG2000Lossless, JPEGLSLossless

    for syntax in (JPEGLSLossless, JPEG2000Lossless):  # hide every plugin (pylibjpeg, pyjpegls, pillow)
        monkeypatch.setattr(get_decoder(syntax), "_available", {})
    root = tmp_path / "archive"
    good, bad = make_tree(root)
    out = tmp_path / "out"
    run_archive(
        [root],
        archive_pipe.model,
        archive_pipe.image_processor,
        ArchiveOptions(output_dir=out, num_workers=0, progress=False),
    )
    _, errors = read_table(out / "errors.csv")
    reasons = dict(errors)
    assert "JPEG-LS Lossless" in reasons[str(root / "b" / "jpegls.dcm")]
    assert "JPEG 2000" in reasons[str(root / "b" / "j2k.dcm")]
    for name in ("jpegls.dcm", "j2k.dcm"):
        assert 'pip install "clarity_hf[dicom]"' in reasons[str(root / "b" / name)]
    _, rows = read_table(out / "predictions.csv")
    assert str(root / "b" / "rle.dcm") in {row[0] for row in rows}  # RLE needs no plugin


def test_compressed_dicoms_decode_to_the_uncompressed_pixels(tmp_path):
    from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

    from clarity_hf import ClarityImageProcessor

    processor = ClarityImageProcessor(size=32)
    array = (np.random.default_rng(0).random((48, 40)) * 4095).astype(np.uint16)
    reference = processor(write_dicom(tmp_path / "raw.dcm", array), do_resize=False, return_tensors="np")
    for syntax in (RLELossless, JPEGLSLossless, JPEG2000Lossless):
        path = write_dicom(tmp_path / f"{syntax.keyword}.dcm", array, syntax)
        decoded = processor(path, do_resize=False, return_tensors="np")
        np.testing.assert_array_equal(decoded["pixel_values"], reference["pixel_values"])


def test_dicomdir_lists_its_files(tmp_path):
    from pydicom import dcmread
    from pydicom.fileset import FileSet

    sources = [
        write_dicom(tmp_path / "src" / f"{i}.dcm", np.full((8, 8), i * 100, np.uint16)) for i in range(3)
    ]
    fileset = FileSet()
    for source in sources:
        fileset.add(dcmread(source))
    fileset.write(tmp_path / "media")
    found, problems = find_images([tmp_path / "media" / "DICOMDIR"])
    assert len(found) == 3 and problems == [] and all(p.is_file() and p.name != "DICOMDIR" for p in found)


def test_arguments_are_checked_before_any_inference(archive_model_dir, tmp_path, capsys):
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)
    for bad in ("5", "-1", "nan", "inf"):
        with pytest.raises(SystemExit) as exit_info:
            predict_main([str(image), "--model", str(archive_model_dir), "--threshold", bad])
        assert exit_info.value.code == 2
        assert "--threshold" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        predict_main([str(tmp_path), "--model", str(archive_model_dir)])  # a folder needs --output-dir
    assert "--output-dir" in capsys.readouterr().err
    blocked = tmp_path / "file_not_folder"
    blocked.write_text("")
    # An unwritable output folder is reported before the model is even loaded (the model does not exist here).
    assert (
        predict_main([str(image), "--model", str(tmp_path / "no_model"), "--output-dir", str(blocked / "o")])
        == 2
    )
    assert "not a writable folder" in capsys.readouterr().err
    assert (
        predict_main([str(image), "--model", str(tmp_path / "no_model"), "--output", str(blocked / "o.png")])
        == 2
    )
    assert "not a writable folder" in capsys.readouterr().err


def _cli(root, model_dir, out, *extra):
    return [
        sys.executable,
        "-m",
        "clarity_hf",
        "predict",
        str(root),
        "--model",
        str(model_dir),
        "--output-dir",
        str(out),
        "--batch-size",
        "2",
        "--num-workers",
        "1",
        "--threshold",
        "0.2",
        "--no-progress",
        *extra,
    ]


@pytest.mark.slow
def test_sigkill_and_rerun_equal_one_uninterrupted_run(archive_model_dir, archive_pipe, tmp_path):
    root = tmp_path / "archive"
    rng = np.random.default_rng(0)
    root.mkdir()
    for index in range(30):  # enough batches that the run can be killed between two of them
        Image.fromarray((rng.random((300, 260)) * 255).astype(np.uint8)).save(root / f"{index:02d}.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    env = subprocess_env()
    reference = tmp_path / "reference"  # one uninterrupted run, in this process, with the same settings
    run_archive(
        [root],
        archive_pipe.model,
        archive_pipe.image_processor,
        ArchiveOptions(output_dir=reference, batch_size=2, num_workers=0, threshold=0.2, progress=False),
    )

    out = tmp_path / "killed"
    process = subprocess.Popen(
        _cli(root, archive_model_dir, out),
        env=env,
        cwd=REPO_ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list((out / ".parts").glob("part-*.jsonl"))) < 2:
        assert process.poll() is None, "the run ended before it could be killed"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)  # the CLI and its DataLoader worker
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert not (out / "predictions.csv").exists()  # it really died mid-run
    parts = len(list((out / ".parts").glob("part-*.jsonl")))
    assert 2 <= parts < 16

    rerun = subprocess.run(
        _cli(root, archive_model_dir, out),
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    summary = json.loads(rerun.stdout)
    assert summary["skipped"] >= 2 * parts - 1 and summary["images"] == 30 and summary["failed"] == 1
    for name in ("predictions.csv", "errors.csv"):
        assert (out / name).read_bytes() == (reference / name).read_bytes()
    assert not (out / ".parts").exists()
