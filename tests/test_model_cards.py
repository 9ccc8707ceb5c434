"""`model_cards/` at the repository's top level holds the card of every preset, exactly as the package's template
renders it today (regenerate with `python -m clarity_hf.hub.preset_cards model_cards`)."""

import pytest
from helpers import REPO_ROOT
from huggingface_hub import ModelCard

from clarity_hf.configuration_clarity import CLARITY_PRESETS, ClarityConfig
from clarity_hf.hub.preset_cards import render_preset_card, write_preset_cards

MODEL_CARDS = REPO_ROOT / "model_cards"


def test_one_card_per_preset_and_nothing_else():
    assert sorted(p.name for p in MODEL_CARDS.iterdir()) == sorted(
        f"{preset}.md" for preset in CLARITY_PRESETS
    )


@pytest.mark.parametrize("preset", sorted(CLARITY_PRESETS))
def test_committed_card_is_the_rendered_template(preset):
    committed = (MODEL_CARDS / f"{preset}.md").read_text(encoding="utf-8")
    assert committed == render_preset_card(preset), (
        f"model_cards/{preset}.md is out of date: run `python -m clarity_hf.hub.preset_cards model_cards`"
    )
    card = ModelCard(committed)
    config = ClarityConfig.from_preset(preset)
    assert card.data.model_name == preset and f"{config.image_size}x{config.image_size}" in card.text


def test_write_preset_cards_writes_every_preset(tmp_path):
    written = write_preset_cards(tmp_path / "cards")
    assert [p.stem for p in written] == list(CLARITY_PRESETS)
    assert all(p.read_text(encoding="utf-8") == render_preset_card(p.stem) for p in written)
