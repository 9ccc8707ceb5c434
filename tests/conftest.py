# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Shared test setup: offline Hub, the `requires_shared` marker, the small real X-rays of `tests/fixtures/`, the tiny
synthetic training data, and a guard that no test leaves a file in the repository's root.

Tests that read the project's shared data folder (`../shared` beside the repository, or `CLARITY_SHARED`) carry
`@pytest.mark.requires_shared("sub/folder")`; on a clone without that folder they are skipped with the reason, so
that the README's test command passes there. CI, which has the folder, runs them all.
"""

import os
from pathlib import Path

import pytest
from helpers import REPO_ROOT, SHARED_DIR

FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures"

# No test may reach the network: models are built from configs with random weights.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def pytest_runtest_setup(item):
    marker = item.get_closest_marker("requires_shared")
    if marker is None:
        return
    needed = SHARED_DIR.joinpath(*marker.args) if marker.args else SHARED_DIR
    if not needed.exists():
        pytest.skip(f"needs the shared data {needed} (absent here; set CLARITY_SHARED to its folder)")


@pytest.fixture(scope="session")
def real_xrays() -> dict[str, Path]:
    """The real chest X-rays shipped in tests/fixtures (sources and licences in its README): one NIH PNG
    (512 x 512), one DICOM and one TBX11K PNG."""
    return {
        "png": FIXTURES_DIR / "00000001_000.png",
        "dicom": FIXTURES_DIR / "siim_pneumothorax_example.dcm",
        "tbx11k": FIXTURES_DIR / "tbx11k_tb0005.png",
    }


@pytest.fixture(scope="module")
def archive_model_dir(tmp_path_factory):
    """A tiny CLARiTy model folder (random weights, 64-pixel processor) for archive inference tests."""
    from archive_testing import make_model_dir

    return make_model_dir(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def archive_pipe(archive_model_dir):
    from clarity_hf.hub import load_for_inference

    return load_for_inference(archive_model_dir)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """The synthetic DatasetDict of `training_helpers.tiny_config` (32 px, a few dozen images)."""
    from training_helpers import tiny_config

    from clarity_hf.training.data import build_synthetic

    return build_synthetic(tiny_config(tmp_path_factory.mktemp("unused")))


@pytest.fixture(scope="session", autouse=True)
def repository_root_stays_clean():
    """A test that writes into the working directory (a default output name) must not litter the repository: the
    root's entries after the session are the ones before it."""
    before = set(os.listdir(REPO_ROOT))
    yield
    added = sorted(set(os.listdir(REPO_ROOT)) - before - {".pytest_cache"})
    assert not added, (
        f"tests wrote {added} into the repository root {REPO_ROOT}; write under tmp_path instead"
    )
