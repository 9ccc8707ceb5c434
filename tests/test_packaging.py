# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""pyproject.toml lists the packages explicitly (so that `model_cards/` ships as `clarity_hf.model_cards`): every
package of the tree must be in that list, and the card templates must be where the mapping points."""

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_listed_and_templates_are_mapped():
    setuptools = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    in_tree = {
        ".".join(init.parent.relative_to(REPO_ROOT).parts)
        for init in (REPO_ROOT / "clarity_hf").rglob("__init__.py")
    }
    assert in_tree - listed == set(), "add these packages to [tool.setuptools] packages in pyproject.toml"
    mapped = setuptools["package-dir"]["clarity_hf.model_cards"]
    templates = {p.name for p in (REPO_ROOT / mapped).glob("*.md")}
    assert {"model_card_template.md", "dataset_card_template.md"} <= templates
    assert (
        "clarity_hf.model_cards" in listed and "*.md" in setuptools["package-data"]["clarity_hf.model_cards"]
    )

    from clarity_hf import hub

    assert (
        hub.MODEL_CARD_TEMPLATE.is_file()
        and hub.MODEL_CARD_TEMPLATE.parent.resolve() == (REPO_ROOT / mapped).resolve()
    )
