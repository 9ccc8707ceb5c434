# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""The wheel holds every package of `clarity_hf/` and the card templates, and nothing of `benchmarks/`,
`scripts/`, `space/` or `tests/`."""

from pathlib import Path

import pytest
from setuptools import find_packages

from clarity_hf.hub.cards import DATASET_CARD_TEMPLATE, MODEL_CARD_TEMPLATE

tomllib = pytest.importorskip("tomllib")

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_in_the_wheel_and_nothing_else():
    setuptools = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    shipped = set(find_packages(str(REPO_ROOT), **setuptools["packages"]["find"]))
    in_tree = {
        ".".join(init.parent.relative_to(REPO_ROOT).parts)
        for init in (REPO_ROOT / "clarity_hf").rglob("__init__.py")
    }
    assert shipped == in_tree
    assert {"clarity_hf.hub", "clarity_hf.commands", "clarity_hf.baselines"} <= shipped
    assert not any(name.split(".")[0] in ("benchmarks", "scripts", "space", "tests") for name in shipped)


def test_card_templates_ship_inside_the_package():
    package_data = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]
    assert "templates/*.md" in package_data["clarity_hf.hub"]
    for template in (MODEL_CARD_TEMPLATE, DATASET_CARD_TEMPLATE):
        assert template.is_file() and template.parent == REPO_ROOT / "clarity_hf" / "hub" / "templates"


def test_version_comes_from_the_installed_distribution():
    import importlib.metadata

    import clarity_hf

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert (
        clarity_hf.__version__ == importlib.metadata.version("clarity_hf") == pyproject["project"]["version"]
    )
