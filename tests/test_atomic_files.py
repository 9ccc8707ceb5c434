# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""The one atomic writer (`clarity_hf.files.atomic_output` / `atomic_write_bytes`): a full disk, an exception or an
interrupt at any point leaves the earlier file whole at the target and no temporary file; a lock that is a folder
is a clear error."""

import errno
import os
import stat

import pytest

from clarity_hf.files import UnusableFileError, atomic_output, atomic_write_bytes, exclusive_lock


def _full(*args):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_at_fsync_keeps_the_earlier_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "table.csv"
    target.write_bytes(b"earlier, complete\n")
    monkeypatch.setattr(os, "fsync", _full)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_bytes(target, b"new" * 1000)
    assert target.read_bytes() == b"earlier, complete\n"
    assert os.listdir(tmp_path) == ["table.csv"]


@pytest.mark.parametrize(
    "interruption", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()]
)
def test_failure_mid_write_leaves_no_partial_file(tmp_path, interruption):
    """A writer that raises after half its bytes (a full disk, Ctrl-C): nothing at the target, nothing beside."""
    target = tmp_path / "model.onnx"
    with pytest.raises(type(interruption)), atomic_output(target) as temporary:
        with open(temporary, "wb") as handle:
            handle.write(b"half of the bytes")
            handle.flush()
            raise interruption
    assert os.listdir(tmp_path) == []


def test_written_file_replaces_the_target_with_the_usual_permissions(tmp_path):
    target = tmp_path / "predictions.csv"
    target.write_bytes(b"old")
    previous = os.umask(0o022)
    try:
        atomic_write_bytes(target, b"new")
    finally:
        os.umask(previous)
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["predictions.csv"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # as open() makes it, readable by the team


def test_lock_that_is_a_folder_is_a_clear_error(tmp_path):
    (tmp_path / ".lock").mkdir()
    with pytest.raises(UnusableFileError, match="not a regular file .*; remove it"):
        with exclusive_lock(tmp_path / ".lock", "output folder"):
            pass


def test_cache_build_on_a_full_disk_leaves_no_shard_and_no_temporary(tmp_path, monkeypatch):
    """The preprocessing cache writes its shards through the same writer: ENOSPC at a shard's fsync fails the
    build with the error, leaves no shard (complete-looking or partial) and no temporary; a rerun with space builds
    the cache."""
    from test_data_cache import SHARD_SIZE, make_source

    from clarity_hf.data.cache import build_cache

    output = tmp_path / "cache"
    real_fsync = os.fsync

    def full_for_shards(fd):
        if os.readlink(f"/proc/self/fd/{fd}").split("/")[-1].startswith(".shard-"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_for_shards)
    with pytest.raises(OSError, match="No space left"):
        build_cache(
            make_source(), output, image_size=32, shard_size=SHARD_SIZE, skip_missing=True, progress=False
        )
    monkeypatch.undo()
    assert not list(output.rglob("shard-*.parquet")) and not [
        p for p in output.rglob("*") if ".tmp-" in p.name
    ]
    rebuilt = build_cache(
        make_source(), output, image_size=32, shard_size=SHARD_SIZE, skip_missing=True, progress=False
    )
    assert len(rebuilt["train"]) > 0
