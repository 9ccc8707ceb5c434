# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""The preprocessing cache is parameter-checked and resumable: a build SIGKILLed at several points and resumed gives
the same files, byte for byte, as an uninterrupted build (skip report included); a rerun with other parameters is
refused naming them, or rebuilt with `overwrite`; no worker process outlives a killed or failed build."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers import subprocess_env

from clarity_hf.data.cache import CACHE_INFO, build_cache, load_cache
from clarity_hf.data.features import attach_metadata, get_build_report, get_metadata
from clarity_hf.data.synthetic import build_synthetic_cxr

BAD_ROWS = (2, 9, 15)  # train rows whose image bytes are garbage: skipped and reported
SHARD_SIZE = 4

DRIVER = textwrap.dedent(
    """
    import os, sys, time
    from test_data_cache import make_source
    import clarity_hf.data.cache as cache

    output, seed, num_proc, hang_at, markers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    decode = cache.resize_for_cache
    calls = 0

    def slow_decode(*args, **kwargs):
        # the `hang_at`-th image this process decodes: tell the test (which then SIGKILLs the build) and wait
        global calls
        calls += 1
        if calls == hang_at:
            open(os.path.join(markers, str(os.getpid())), "w").close()
            time.sleep(600)
        return decode(*args, **kwargs)

    cache.resize_for_cache = slow_decode
    cache.build_cache(make_source(seed), output, image_size=32, num_proc=num_proc, shard_size={shard},
                      skip_missing=True, progress=False)
    """
)


def make_source(seed: int = 0):
    """20 train + 6 validation synthetic images, three of them undecodable; the builder's seed in its metadata."""
    dataset = build_synthetic_cxr(num_train=20, num_validation=6, num_test=0, image_size=48, seed=seed)
    dataset.pop("test")
    train = dataset["train"].cast_column("image", dataset["train"].features["image"].__class__(decode=False))
    images = list(train["image"])
    for row in BAD_ROWS:
        images[row] = {"bytes": b"not an image", "path": None}
    metadata = dict(get_metadata(train), build_parameters={"seed": seed})
    train = train.remove_columns("image").add_column("image", images, feature=train.features["image"])
    dataset["train"] = train.cast_column("image", dataset["validation"].features["image"])
    for split in dataset.values():
        attach_metadata(split, metadata)
    return dataset


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as handle:
            return not any(line.startswith("State:") and "Z" in line for line in handle)
    except FileNotFoundError:
        return False


def _start_and_kill(
    tmp_path: Path, output: Path, hang_at: int, num_proc: int = 1, seed: int = 0
) -> list[int]:
    """Run the build in a subprocess, SIGKILL it once a process reaches its `hang_at`-th image; returns the pids
    that reached it."""
    markers = tmp_path / f"markers-{hang_at}-{time.monotonic_ns()}"
    markers.mkdir()
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(shard=SHARD_SIZE))
    env = subprocess_env()  # the driver imports this module: the tests folder goes on its PYTHONPATH
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env["PYTHONPATH"]])
    process = subprocess.Popen(
        [sys.executable, str(script), str(output), str(seed), str(num_proc), str(hang_at), str(markers)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while len(list(markers.iterdir())) < num_proc:
        if process.poll() is not None:
            raise AssertionError(f"the build ended before the kill: {process.stderr.read().decode()[-2000:]}")
        assert time.monotonic() < deadline, "the build never reached the kill point"
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    process.stderr.close()
    return [int(p.name) for p in markers.iterdir()]


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killed_builds_resume_to_the_same_bytes(tmp_path):
    reference = tmp_path / "reference"
    build_cache(
        make_source(), reference, image_size=32, shard_size=SHARD_SIZE, skip_missing=True, progress=False
    )
    expected = tree_digest(reference)
    assert len([name for name in expected if name.endswith(".parquet")]) == 7  # 5 train + 2 validation shards

    output = tmp_path / "killed"
    # 1: after the manifest, before any shard
    _start_and_kill(tmp_path, output, hang_at=1)
    manifest = json.loads((output / CACHE_INFO).read_text())
    assert manifest["complete"] is False and manifest["parameters"]["image_size"] == 32
    assert not list(output.rglob("*.parquet"))
    with pytest.raises(ValueError, match="did not finish"):
        load_cache(output)
    # 2: the resumed build killed in its second shard (the first, with a bad row, is complete)
    _start_and_kill(tmp_path, output, hang_at=6)
    assert sorted(p.name for p in (output / "train").glob("*.parquet")) == ["shard-00000-of-00005.parquet"]
    # 3: resumed again, killed in the validation split
    _start_and_kill(tmp_path, output, hang_at=18)
    assert len(list((output / "train").glob("*.parquet"))) == 5
    # a rerun with another image size or seed is refused, naming the parameter, and touches nothing
    before = tree_digest(output)
    with pytest.raises(ValueError, match=r"image_size: 32 in the cache != 48 now"):
        build_cache(
            make_source(), output, image_size=48, shard_size=SHARD_SIZE, skip_missing=True, progress=False
        )
    with pytest.raises(ValueError, match=r"source_parameters\.seed: 0 in the cache != 1 now"):
        build_cache(
            make_source(1), output, image_size=32, shard_size=SHARD_SIZE, skip_missing=True, progress=False
        )
    assert tree_digest(output) == before
    # finished with the same parameters: every file equals the uninterrupted build's, the report counts every skip
    resumed = build_cache(
        make_source(), output, image_size=32, shard_size=SHARD_SIZE, skip_missing=True, progress=False
    )
    assert tree_digest(output) == expected
    assert get_build_report(resumed).counts == {"undecodable_image": len(BAD_ROWS)}
    assert len(resumed["train"]) == 20 - len(BAD_ROWS) and len(resumed["validation"]) == 6


def test_overwrite_rebuilds_with_new_parameters(tmp_path):
    output, fresh = tmp_path / "cache", tmp_path / "fresh"
    build_cache(
        make_source(), output, image_size=32, shard_size=SHARD_SIZE, skip_missing=True, progress=False
    )
    build_cache(make_source(1), fresh, image_size=32, shard_size=10, skip_missing=True, progress=False)
    rebuilt = build_cache(
        make_source(1),
        output,
        image_size=32,
        shard_size=10,
        skip_missing=True,
        progress=False,
        overwrite=True,
    )
    assert tree_digest(output) == tree_digest(fresh)  # no shard of the old build left behind
    assert json.loads((output / CACHE_INFO).read_text())["parameters"]["source_parameters"] == {"seed": 1}
    assert len(rebuilt["train"]) == 17


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_no_worker_outlives_a_killed_build(tmp_path):
    workers = _start_and_kill(tmp_path, tmp_path / "cache", hang_at=1, num_proc=2)
    assert len(workers) == 2
    deadline = time.monotonic() + 20
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in workers if _alive(pid)], "cache workers survived their killed parent"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def _children() -> set[int]:
    return {
        int(entry)
        for entry in os.listdir("/proc")
        if entry.isdigit() and _alive(int(entry)) and _parent(int(entry)) == os.getpid()
    }


def test_a_failing_worker_stops_the_pool(tmp_path):
    # Children from earlier tests of the same session (e.g. multiprocessing's resource tracker) are not this build's.
    before = _children()
    with pytest.raises(ValueError, match="image 00002|cannot be decoded"):
        build_cache(
            make_source(), tmp_path / "cache", image_size=32, num_proc=2, shard_size=2, progress=False
        )
    assert _children() - before == set()


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("PPid:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        return None
    return None


def test_a_second_build_into_a_busy_folder_fails_at_once(tmp_path):
    from clarity_hf.data.cache import LOCK_FILE
    from clarity_hf.files import FolderInUseError, exclusive_lock

    with exclusive_lock(tmp_path / LOCK_FILE, "test"), pytest.raises(FolderInUseError, match="in use"):
        build_cache(
            make_source(), tmp_path, image_size=32, shard_size=SHARD_SIZE, skip_missing=True, progress=False
        )
    assert not (tmp_path / CACHE_INFO).exists()
