# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Hostile export folders: a `.clarity_hf_export.json` planted or edited in the folder must never make the export
delete (or upload) anything it did not write: no file outside the folder, no symbolic link, no folder."""

import json
from pathlib import Path

import pytest
import torch

from clarity_hf import ClarityConfig, ClarityForMultiLabelLocalization
from clarity_hf.hub import MANIFEST_NAME, ExportError, exported_files, save_for_hub
from clarity_hf.image_processing_clarity import ClarityImageProcessor


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ClarityForMultiLabelLocalization(ClarityConfig.from_preset("clarity-tiny")).eval()


def export(model, folder: Path) -> None:
    save_for_hub(model, ClarityImageProcessor(size=64), folder)


def plant_manifest(folder: Path, *entries: str) -> None:
    """An export folder whose manifest also lists `entries` (as a hostile or careless edit would)."""
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    manifest["files"] = manifest["files"] + list(entries)
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))


def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim.txt"
    path.write_text("must survive")
    return path


def assert_refused_and_untouched(model, folder: Path, *survivors: Path) -> None:
    before = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))
    with pytest.raises(ExportError) as info:
        export(model, folder)
    assert str(folder) in str(info.value)
    for path in survivors:
        assert path.read_text() == "must survive"
    # nothing at all was removed from the folder either: the manifest is checked before the first deletion
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == before


def test_manifest_listing_a_parent_path_deletes_nothing_outside(model, tmp_path):
    folder = tmp_path / "export"
    export(model, folder)
    target = victim(tmp_path)
    plant_manifest(folder, "../victim.txt")
    assert_refused_and_untouched(model, folder, target)


def test_manifest_listing_an_absolute_path_deletes_nothing(model, tmp_path):
    folder = tmp_path / "export"
    export(model, folder)
    (tmp_path / "elsewhere").mkdir()
    target = victim(tmp_path / "elsewhere")
    plant_manifest(folder, str(target))
    assert_refused_and_untouched(model, folder, target)


def test_planted_manifest_in_a_foreign_folder_deletes_nothing(model, tmp_path):
    """A folder that no export wrote, with a manifest listing its own files and ones outside: refused whole."""
    folder = tmp_path / "foreign"
    folder.mkdir()
    (folder / "data.txt").write_text("must survive")
    target = victim(tmp_path)
    (folder / MANIFEST_NAME).write_text(json.dumps({"files": ["data.txt", "../victim.txt", str(target)]}))
    assert_refused_and_untouched(model, folder, target, folder / "data.txt")


def test_manifest_entry_that_is_a_symbolic_link_is_not_followed_or_removed(model, tmp_path):
    folder = tmp_path / "export"
    export(model, folder)
    target = victim(tmp_path)
    (folder / "link.txt").symlink_to(target)
    (folder / "linked").symlink_to(tmp_path, target_is_directory=True)
    plant_manifest(folder, "link.txt", "linked", "linked/victim.txt")
    assert_refused_and_untouched(model, folder, target)
    assert (folder / "link.txt").is_symlink()
    with pytest.raises(ExportError, match="link.txt"):
        exported_files(folder)


def test_manifest_entry_that_is_a_folder_is_not_removed(model, tmp_path):
    folder = tmp_path / "export"
    export(model, folder)
    (folder / "kept").mkdir()
    (folder / "kept" / "data.txt").write_text("must survive")
    plant_manifest(folder, "kept", "kept/data.txt")
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    manifest["files"].remove("kept/data.txt")
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(ExportError):
        export(model, folder)
    assert (folder / "kept" / "data.txt").read_text() == "must survive"


def test_a_clean_previous_export_is_still_replaced(model, tmp_path):
    folder = tmp_path / "export"
    export(model, folder)
    first = sorted(exported_files(folder))
    export(model, folder)
    assert sorted(exported_files(folder)) == first


# --------------------------------------------------------------------------------------------------------------------
# The confinement helper every input-derived path goes through
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("relative", "problem"),
    [
        ("../victim.txt", "climbs out"),
        ("a/../../victim.txt", "climbs out"),
        ("/etc/passwd", "absolute"),
        ("", "not a valid relative path"),
        ("a\x00b", "not a valid relative path"),
        ("out/victim.txt", "symbolic link"),
    ],
)
def test_confined_path_refuses_paths_out_of_the_folder(tmp_path, relative, problem):
    from clarity_hf.files import PathOutsideFolderError, confined_path

    base = tmp_path / "base"
    base.mkdir()
    (base / "out").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(PathOutsideFolderError, match=problem) as info:
        confined_path(base, relative, "entry")
    assert str(base) in str(info.value)
    assert confined_path(base, "sub/new.txt") == base / "sub" / "new.txt"  # need not exist


def test_safe_filename_gives_distinct_plain_names():
    from clarity_hf.files import safe_filename

    labels = [
        "Mass",
        "../../../../x",
        "a/b",
        "a_b",
        "line\nbreak",
        "..",
        ".hidden",
        "/abs",
        "Pleural Effusion",
    ]
    names = [safe_filename(label) for label in labels]
    assert names[0] == "Mass" and names[3] == "a_b"
    assert len(set(names)) == len(names)
    assert all(
        "/" not in n and "\n" not in n and not n.startswith(".") and n not in ("", "..") for n in names
    )


def test_export_onnx_check_on_a_decompression_bomb_is_one_line_and_writes_nothing(tmp_path, capsys):
    """`export-onnx --check bomb.png` (a PNG header declaring 100000 x 100000 pixels): one line naming the image,
    exit 2, and no .onnx left at the target (the check images are read before the export)."""
    import struct
    import zlib

    from archive_testing import make_model_dir

    from clarity_hf.commands.cli import run_command

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb = tmp_path / "bomb.png"
    header = struct.pack(">IIBBBBB", 100000, 100000, 8, 0, 0, 0, 0)
    bomb.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
        + chunk(b"IEND", b"")
    )
    folder = make_model_dir(tmp_path / "model")
    target = tmp_path / "onnx" / "model.onnx"
    code = run_command("export-onnx", [str(folder), "--output", str(target), "--check", str(bomb)])
    error = capsys.readouterr().err
    assert (
        code == 2
        and "Traceback" not in error
        and len([x for x in error.splitlines() if "bomb.png" in x]) == 1
    )
    assert "decompression bomb" in error, error
    assert not target.exists()
