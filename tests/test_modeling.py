"""ClarityForMultiLabelLocalization: shapes, the efficient class maps, losses and gradients."""

import math

import pytest
import torch

from clarity_hf import ClarityConfig, ClarityForMultiLabelLocalization, ClarityModel
from clarity_hf.modeling_clarity import orthogonal_class_token_loss


def tiny_config(**overrides) -> ClarityConfig:
    return ClarityConfig.from_preset("clarity-tiny", **overrides)


def make_model(config: ClarityConfig, seed: int = 0) -> ClarityForMultiLabelLocalization:
    torch.manual_seed(seed)
    return ClarityForMultiLabelLocalization(config).eval()


@pytest.mark.parametrize(
    "preset,grid",
    [("clarity-tiny", 8), ("clarity-s-16-224", 14), ("clarity-s-16-512", 32)],
)
def test_shapes_dtypes_and_finite_values(preset, grid):
    config = ClarityConfig.from_preset(preset)
    model = make_model(config)
    pixel_values = torch.randn(2, 3, config.image_size, config.image_size)
    labels = torch.tensor([[1.0] * 7 + [0.0] * 7, [0.0] * 14])
    with torch.no_grad():
        out = model(pixel_values, labels=labels, teacher_logits=torch.randn(2, 14))
    assert out.logits.shape == (2, 14) and out.logits.dtype == torch.float32
    assert out.heatmaps.shape == (2, 14, grid, grid) and out.heatmaps.dtype == torch.float32
    assert out.class_attentions.shape == (2, 14, grid, grid)
    assert out.foreground.shape == (2, 1, grid, grid)
    assert out.segment_maps.shape == (2, 14, grid, grid)
    assert out.token_logits.shape == out.pooled_logits.shape == (2, 14)
    for name in ("loss", "classification_loss", "distillation_loss", "orthogonal_loss", "foreground_loss"):
        value = getattr(out, name)
        assert value.dim() == 0 and value.dtype == torch.float32 and torch.isfinite(value), name
    assert torch.isfinite(out.heatmaps).all() and torch.isfinite(out.logits).all()
    assert 0.0 <= out.heatmaps.min() and out.heatmaps.max() <= 1.0
    # the class-to-patch attention of each class token is a distribution over the sequence: its patch part < 1
    sums = out.class_attentions.flatten(2).sum(-1)
    assert ((sums > 0) & (sums <= 1.0 + 1e-5)).all()
    # default combination is the mean of the two logit sets
    torch.testing.assert_close(out.logits, (out.token_logits + out.pooled_logits) / 2)


def test_parameter_count_and_sequence_length_of_the_paper_configurations():
    config = ClarityConfig.from_preset("clarity-s-16-512")
    model = ClarityForMultiLabelLocalization(config)
    params = sum(p.numel() for p in model.parameters())
    assert 21e6 < params < 23.5e6  # spec: ~22M
    assert model.clarity.embeddings.position_embeddings.shape == (1, 1024, 384)
    assert model.pathologies[0] == "Atelectasis" and len(model.pathologies) == 14
    hidden = model.clarity(torch.randn(1, 3, 512, 512)).last_hidden_state
    assert hidden.shape == (1, 14 + 1024, 384)  # sequence 1038


def test_gradients_reach_every_parameter_a_loss_uses():
    config = tiny_config()
    model = make_model(config).train()
    pixel_values = torch.randn(3, 3, 64, 64)
    labels = torch.randint(0, 2, (3, 14)).float()
    out = model(pixel_values, labels=labels, teacher_logits=torch.randn(3, 14))
    out.loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


@pytest.mark.parametrize(
    "term,overrides",
    [
        ("foreground_loss", {}),
        ("orthogonal_loss", {}),
        ("distillation_loss", {}),
    ],
)
def test_each_loss_term_alone_reaches_its_parameters(term, overrides):
    model = make_model(tiny_config(**overrides)).train()
    out = model(torch.randn(2, 3, 64, 64), labels=torch.ones(2, 14), teacher_logits=torch.randn(2, 14))
    getattr(out, term).backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    if term == "foreground_loss":
        assert any(n.startswith("segment_cam.foreground_head") for n in grads)
        assert not any(n.startswith("token_classifier") for n in grads)
    elif term == "orthogonal_loss":
        assert "clarity.embeddings.class_tokens" in grads
        assert not any(n.startswith("segment_cam") for n in grads)
    else:
        assert {"token_classifier.weight", "pooled_classifier.weight"} <= grads


def test_efficient_class_maps_equal_eager_reference():
    """The SDPA path (only the C class rows of the softmax) equals a plain eager implementation to 1e-5."""
    config = tiny_config(num_attention_map_layers=3)
    fast = make_model(config)
    eager = ClarityForMultiLabelLocalization(
        tiny_config(num_attention_map_layers=3, attn_implementation="eager")
    )
    eager.load_state_dict(fast.state_dict())
    eager.eval()
    assert fast.config._attn_implementation == "sdpa" and eager.config._attn_implementation == "eager"
    pixel_values = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        fast_out = fast(pixel_values)
        eager_out = eager(pixel_values)
        # Independent reference: the full attention tensors of every layer (all rows, all heads).
        full = eager.clarity(pixel_values, output_attentions=True)
    torch.testing.assert_close(fast_out.class_attentions, eager_out.class_attentions, atol=1e-5, rtol=0)
    torch.testing.assert_close(fast_out.logits, eager_out.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(fast_out.heatmaps, eager_out.heatmaps, atol=1e-5, rtol=0)
    num_classes, grid = 14, 8
    assert full.attentions[-1].shape == (2, 4, 14 + 64, 14 + 64)
    reference = torch.stack(
        [a[:, :, :num_classes, num_classes:] for a in full.attentions[-3:]]
    )  # (K,B,H,C,N)
    reference = reference.mean(dim=2).mean(dim=0).reshape(2, num_classes, grid, grid)
    torch.testing.assert_close(fast_out.class_attentions, reference, atol=1e-5, rtol=0)


def test_efficient_maps_match_eager_for_the_224_preset():
    config = ClarityConfig.from_preset("clarity-s-16-224", num_hidden_layers=4)
    fast = make_model(config)
    eager = make_model(
        ClarityConfig.from_preset("clarity-s-16-224", num_hidden_layers=4, attn_implementation="eager")
    )
    with torch.no_grad():
        pixel_values = torch.randn(1, 3, 224, 224)
        maps = fast(pixel_values).class_attentions
        full = eager.clarity(pixel_values, output_attentions=True).attentions
    reference = (
        torch.stack([a[:, :, :14, 14:] for a in full[-3:]]).mean(dim=2).mean(dim=0).reshape(1, 14, 14, 14)
    )
    torch.testing.assert_close(maps, reference, atol=1e-5, rtol=0)


def test_get_last_selfattention_is_the_last_layer_attention():
    model = make_model(tiny_config())  # sdpa: the last block still returns its full attention
    eager = make_model(tiny_config(attn_implementation="eager"))
    pixel_values = torch.randn(1, 3, 64, 64)
    attention = model.get_last_selfattention(pixel_values)
    with torch.no_grad():
        full = eager.clarity(pixel_values, output_attentions=True).attentions[-1]
    assert attention.shape == (1, 4, 78, 78)
    torch.testing.assert_close(attention, full)
    torch.testing.assert_close(attention.sum(-1), torch.ones(1, 4, 78))


def test_position_embeddings_interpolate_for_other_input_sizes():
    model = make_model(tiny_config())
    # Another size than the model was built for is refused, as transformers' ViT does, unless asked for.
    with pytest.raises(ValueError, match=r"Input image size \(96\*128\) doesn't match model \(64\*64\)"):
        model(torch.randn(1, 3, 96, 128))
    with pytest.raises(ValueError, match="interpolate_pos_encoding=True"):
        model.clarity(torch.randn(1, 3, 128, 128))
    with torch.no_grad():
        out = model(torch.randn(1, 3, 96, 128), interpolate_pos_encoding=True)
        same = torch.randn(1, 3, 64, 64)
        # At the model's own size, interpolation is the identity.
        torch.testing.assert_close(model(same).logits, model(same, interpolate_pos_encoding=True).logits)
    assert out.heatmaps.shape == (1, 14, 12, 16) and torch.isfinite(out.logits).all()
    with pytest.raises(ValueError, match="multiple of the patch size"):
        model(torch.randn(1, 3, 65, 64), interpolate_pos_encoding=True)
    with pytest.raises(ValueError, match="pixel_values must have shape"):
        model(torch.randn(1, 1, 64, 64))


def test_orthogonal_loss_values():
    identical = torch.ones(1, 3, 4)
    assert orthogonal_class_token_loss(identical).item() == pytest.approx(1.0)
    orthogonal = torch.eye(3, 4)[None]
    assert orthogonal_class_token_loss(orthogonal).item() == pytest.approx(0.0, abs=1e-7)
    # cos(60 deg) = 0.5 between every pair -> mean squared off-diagonal 0.25
    angle = torch.tensor([[1.0, 0.0], [0.5, math.sqrt(3) / 2]])
    assert orthogonal_class_token_loss(angle[None]).item() == pytest.approx(0.25, abs=1e-6)


def test_distillation_and_loss_switches():
    labels = torch.randint(0, 2, (2, 14)).float()
    pixel_values = torch.randn(2, 3, 64, 64)
    model = make_model(tiny_config(distillation_loss_weight=0.0, orthogonal_loss_weight=0.0))
    out = model(pixel_values, labels=labels, teacher_logits=torch.randn(2, 14))
    assert out.distillation_loss is None and out.orthogonal_loss is None
    expected = out.classification_loss + 0.5 * out.foreground_loss
    torch.testing.assert_close(out.loss, expected)
    # with the teacher's own logits as targets the soft distillation term is their BCE entropy floor
    model = make_model(tiny_config())
    with torch.no_grad():
        student = model(pixel_values).logits
    out = model(pixel_values, labels=labels, teacher_logits=student)
    p = torch.sigmoid(student)
    entropy = -(p * p.log() + (1 - p) * (1 - p).log()).mean()
    torch.testing.assert_close(out.distillation_loss, entropy, atol=1e-5, rtol=1e-5)
    hard = make_model(tiny_config(distillation_type="hard"))
    out = hard(pixel_values, teacher_logits=torch.full((2, 14), -5.0))
    assert out.loss is not None and out.classification_loss is None and out.distillation_loss > 0


def test_foreground_target_uses_per_image_masks_when_given():
    model = make_model(tiny_config())
    pixel_values = torch.randn(2, 3, 64, 64)
    labels = torch.zeros(2, 14)
    atlas_loss = model(pixel_values, labels=labels).foreground_loss
    masks = torch.zeros(2, 1, 64, 64)
    masks[:, :, 16:48, 8:56] = 1
    mask_loss = model(pixel_values, labels=labels, anatomy_masks=masks).foreground_loss
    assert not torch.isclose(atlas_loss, mask_loss)
    target = model._foreground_target(masks, 2, (8, 8))
    assert target.shape == (2, 1, 8, 8) and target[0, 0, 4, 4] == 1 and target[0, 0, 0, 0] == 0


@pytest.mark.parametrize(
    "overrides",
    [
        {"use_segment_cam": False},
        {"use_anatomical_prior": False},
        {"use_attention_pooling": False},
        {"heatmap_source": "attention"},
        {"logit_combination": "pooled"},
        {"use_patch_affinity_refinement": True},
        {"attention_map_head_fusion": "max"},
    ],
)
def test_ablation_switches(overrides):
    config = tiny_config(**overrides)
    model = make_model(config).train()
    out = model(torch.randn(2, 3, 64, 64), labels=torch.ones(2, 14))
    out.loss.backward()
    assert out.heatmaps.shape == (2, 14, 8, 8) and torch.isfinite(out.loss)
    if overrides.get("use_segment_cam") is False:
        assert out.segment_maps is None and out.foreground is None and model.anatomical_prior is None
    if overrides.get("use_anatomical_prior") is False:
        assert out.foreground is None and out.foreground_loss is None and out.segment_maps is not None
    if overrides.get("use_attention_pooling") is False:
        assert out.pooled_logits is None and torch.equal(out.logits, out.token_logits)
    if overrides.get("logit_combination") == "pooled":
        assert torch.equal(out.logits, out.pooled_logits)


def test_config_validation_errors():
    with pytest.raises(ValueError, match="logit_combination"):
        ClarityConfig(logit_combination="sum")
    with pytest.raises(ValueError, match="num_attention_map_layers"):
        ClarityConfig(num_attention_map_layers=13)
    with pytest.raises(ValueError, match="not a multiple of patch_size"):
        ClarityConfig(image_size=100)
    with pytest.raises(ValueError, match="unknown preset"):
        ClarityConfig.from_preset("clarity-b-16")


def test_custom_label_set_and_anatomical_prior():
    config = tiny_config(
        id2label={0: "Tuberculosis", 1: "Healthy"}, label2id={"Tuberculosis": 0, "Healthy": 1}
    )
    model = make_model(config)
    assert model.pathologies == ["Tuberculosis", "Healthy"]
    assert model(torch.randn(1, 3, 64, 64)).heatmaps.shape == (1, 2, 8, 8)
    prior = torch.zeros(10, 10)
    prior[2:8, 2:8] = 1
    model.set_anatomical_prior(prior)
    assert model.anatomical_prior.shape == (1, 1, 32, 32) and model.anatomical_prior[0, 0, 16, 16] == 1
    with pytest.raises(ValueError, match="2-D map in"):
        model.set_anatomical_prior(torch.full((4, 4), 2.0))
    assert isinstance(model.clarity, ClarityModel)


def test_heatmaps_are_suppressed_outside_the_foreground():
    model = make_model(tiny_config())
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert torch.all(out.heatmaps <= out.foreground + 1e-6)
