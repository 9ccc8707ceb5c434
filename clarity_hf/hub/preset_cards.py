# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""The model card of every preset the project publishes (`model_cards/<preset>.md` at the repository's top level),
rendered from the package's card template with no measured results: what the card says before a trained model's
evaluation report fills in its tables. `clarity push --dry-run` renders the same template for a trained model.

    python -m clarity_hf.hub.preset_cards model_cards      # (re)writes model_cards/*.md
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from ..configuration_clarity import CLARITY_PRESETS, ClarityConfig
from .cards import DEFAULT_REPO_ID, render_model_card

__all__ = ["PRESET_CARD_ORG", "render_preset_card", "write_preset_cards"]

logger = logging.getLogger(__name__)

PRESET_CARD_ORG = DEFAULT_REPO_ID.split("/")[0]


def render_preset_card(preset: str) -> str:
    """The card text of `preset` (its config, no results), as `save_for_hub` would write it without a report."""
    config = ClarityConfig.from_preset(preset)
    return str(render_model_card(config, repo_id=f"{PRESET_CARD_ORG}/{preset}"))


def write_preset_cards(folder: str | Path) -> list[Path]:
    """Write `folder/<preset>.md` for every preset; returns the paths, in preset order."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for preset in CLARITY_PRESETS:
        path = folder / f"{preset}.md"
        path.write_text(render_preset_card(preset), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for path in write_preset_cards(sys.argv[1] if len(sys.argv) > 1 else "model_cards"):
        logger.info("wrote %s", path)
